// Cluster start-up and the worker's command loop.
#include "worker/cluster_runtime.h"

#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <fstream>
#include <sstream>

#include "comm/control/control_channel.h"
#include "comm/mpi/mpi_comm.h"
#if SHARDWISE_COMM_HAVE_NCCL
#include "comm/nccl/nccl_comm.h"
#endif
#include "comm/kv_transport.h"
#include "common/limits.h"
#include "common/logging.h"
#include "common/text_file.h"
#include "model/weight_source.h"
#include "parallel/distributed_forward.h"
#include "parallel/partitioner.h"
#include "parallel/rank_layout.h"
#include "worker/kv_transfer_agent.h"
#include "worker/step_protocol.h"
#include "worker/step_thread.h"

namespace sw::worker {

namespace {

// Rank 0's file contents on every rank, read with the config-file size bound; when rank 0
// cannot read it, it says why and the others that it failed.
Result<std::string> broadcast_file(comm::Communicator& world, const std::string& path) {
  Result<std::string> read = std::string();
  int64_t len = 0;
  if (world.rank() == 0) {
    read = read_text_file(path, limits::kMaxConfigFileBytes, "cluster config");
    len = read.ok() ? static_cast<int64_t>(read->size()) : -1;
  }
  SW_RETURN_IF_ERROR(world.broadcast(&len, 1, DType::kI64, 0));
  if (len < 0) {
    if (world.rank() == 0) return read.status();
    return not_found("cannot read cluster config '{}' (on rank 0)", path);
  }
  std::string text = world.rank() == 0 ? std::move(read).value() : std::string();
  text.resize(static_cast<size_t>(len));
  SW_RETURN_IF_ERROR(world.broadcast(text.data(), len, DType::kU8, 0));
  return text;
}

}  // namespace

// Picks the transport of the data-plane groups from cluster.comm_backend and this host's
// GPUs (comm::choose_backend), and the GPU of this rank. Ranks on one host (real hosts,
// not emulated nodes) take GPUs round robin; NCCL needs one GPU per rank.
Status choose_transport(ClusterRuntime& rt, bool* rank_specific) {
  // Real hosts (not emulated nodes): GPUs belong to machines.
  SW_ASSIGN_OR_RETURN(std::vector<int> host_of, comm::detect_world_nodes());
  rt.hosts.num_hosts = 1 + *std::max_element(host_of.begin(), host_of.end());
  rt.hosts.num_nodes = rt.world->topology().num_nodes();
  // Workers on this host and this rank's index among them (the coordinator uses no GPU).
  const int me = rt.rank();
  int workers_here = 0, worker_index = 0;
  for (int r = 1; r < static_cast<int>(host_of.size()); ++r) {
    if (host_of[static_cast<size_t>(r)] != host_of[static_cast<size_t>(me)]) continue;
    ++workers_here;
    if (r < me) ++worker_index;
  }
  comm::BackendFacts facts;
  facts.nccl_compiled = SHARDWISE_COMM_HAVE_NCCL;
  facts.device_buffers = rt.cluster.runtime.device == "cuda";
  facts.num_gpus = facts.device_buffers ? kernels::cuda_device_count() : 0;
  facts.max_ranks_per_gpu = facts.num_gpus > 0
                                ? (std::max(workers_here, 1) + facts.num_gpus - 1) / facts.num_gpus
                                : workers_here;
  rt.device_ordinal = facts.num_gpus > 0 ? worker_index % facts.num_gpus : 0;
  auto choice = comm::choose_backend(rt.cluster.comm.backend, facts);
  // Every rank must use the same transport: agree on the weakest (error < MPI < NCCL).
  const int32_t mine = !choice.ok() ? 0 : choice->backend == comm::CommBackend::kNccl ? 2 : 1;
  std::vector<int32_t> all(static_cast<size_t>(rt.world->size()));
  SW_RETURN_IF_ERROR(rt.world->all_gather(&mine, all.data(), 1, DType::kI32));
  const int32_t agreed = *std::min_element(all.begin(), all.end());
  const int32_t best = *std::max_element(all.begin(), all.end());
  if (rank_specific && best == 0) *rank_specific = false;  // every rank refused alike
  if (!choice.ok()) return choice.status().with_context(rt.cluster.source);
  if (agreed == 0)
    return unavailable("{}: cluster.comm_backend: another rank cannot use '{}' (see its error)",
                       rt.cluster.source, comm::comm_backend_name(rt.cluster.comm.backend));
  if (agreed == 1 && mine == 2) {
    choice->backend = comm::CommBackend::kMpi;
    choice->stage_through_host = facts.device_buffers;
    choice->reason = "another host cannot use NCCL, so every rank uses MPI";
  }
  rt.transport = *choice;
  if (rt.rank() == 0)
    spdlog::info("data-plane transport: {} ({})", comm::comm_backend_name(rt.transport.backend),
                 rt.transport.reason);
  if (rt.transport.backend != comm::CommBackend::kNccl || rt.rank_plan().coord.coordinator)
    return Status();
#if SHARDWISE_COMM_HAVE_NCCL
  SW_ASSIGN_OR_RETURN(
      auto stage, comm::NcclComm::create(std::move(rt.stage_group), rt.device_ordinal, nullptr));
  rt.stage_group = std::move(stage);
  SW_ASSIGN_OR_RETURN(auto tp,
                      comm::NcclComm::create(std::move(rt.tp_group), rt.device_ordinal, nullptr));
  rt.tp_group = std::move(tp);
  return Status();
#else
  return internal_error("NCCL chosen in a build without NCCL");
#endif
}

// Every rank makes its CURVE key pairs and all-gathers the public halves over MPI: the
// coordinator learns the workers' keys (the only clients its ZAP handler admits), the workers
// the coordinator's (the only server they complete a handshake with) and each other's KV keys.
// A rank that cannot make keys sends blanks, so that every rank fails alike and cleanly.
Status exchange_keys(ClusterRuntime& rt, bool* rank_specific) {
  constexpr size_t k = comm::kCurveKeyChars;
  const bool worker = rt.rank() != 0;
  Status made;
  auto control = comm::make_curve_keypair();
  if (control.ok())
    rt.keys.control = *control;
  else
    made = control.status();
  if (worker && made.ok()) {
    auto kv = comm::make_curve_keypair();
    if (kv.ok())
      rt.keys.kv = *kv;
    else
      made = kv.status();
  }
  std::string mine(2 * k, ' ');
  if (made.ok()) {
    mine.replace(0, k, rt.keys.control.public_key);
    if (worker) mine.replace(k, k, rt.keys.kv.public_key);
  }
  const size_t n = static_cast<size_t>(rt.world->size());
  std::string all(mine.size() * n, '\0');
  SW_RETURN_IF_ERROR(
      rt.world->all_gather(mine.data(), all.data(), static_cast<int64_t>(mine.size()), DType::kU8));
  // From here every rank knows what every other found.
  if (rank_specific) *rank_specific = false;
  rt.keys.control_public.assign(n, "");
  rt.keys.kv_public.assign(n, "");
  std::vector<size_t> failed;
  for (size_t r = 0; r < n; ++r) {
    rt.keys.control_public[r] = all.substr(r * 2 * k, k);
    if (r > 0) rt.keys.kv_public[r] = all.substr(r * 2 * k + k, k);
    if (!comm::is_curve_key(rt.keys.control_public[r]) ||
        (r > 0 && !comm::is_curve_key(rt.keys.kv_public[r])))
      failed.push_back(r);
  }
  if (!made.ok()) return made.with_context(fmt::format("rank {}", rt.rank()));
  if (!failed.empty())
    return unavailable("ranks [{}] could not make CURVE key pairs for the control channel",
                       fmt::join(failed, ", "));
  if (rank_specific) *rank_specific = true;
  return Status();
}

Result<ClusterRuntime> start_cluster(const std::string& config_path, bool* rank_specific) {
  if (rank_specific) *rank_specific = false;
  ClusterRuntime rt;
  comm::CommOptions boot;
  SW_RETURN_IF_ERROR(comm::apply_env_overrides(&boot));
  std::string text;
  {
    SW_ASSIGN_OR_RETURN(auto bootstrap, comm::MpiComm::create_world(boot));
    SW_ASSIGN_OR_RETURN(text, broadcast_file(*bootstrap, config_path));
  }
  SW_ASSIGN_OR_RETURN(rt.cluster, parallel::parse_cluster_config(text, config_path));
  SW_ASSIGN_OR_RETURN(auto world, comm::MpiComm::create_world(rt.cluster.comm));
  rt.world = std::move(world);
  SW_ASSIGN_OR_RETURN(rt.model, model::load_model_config(rt.cluster.model.path));
  SW_ASSIGN_OR_RETURN(rt.plan, parallel::make_plan(rt.cluster, rt.model, rt.world->size()));
  if (rank_specific) *rank_specific = true;
  // Every rank takes part in both splits; the coordinator joins no group (color -1).
  const parallel::RankCoord& me = rt.rank_plan().coord;
  const int stage_color = parallel::stage_group_color(rt.plan.pools, me);
  const int tp_color = parallel::tp_group_color(rt.plan.pools, me);
  const int key =
      me.coordinator ? 0 : me.dp * rt.plan.pools[static_cast<size_t>(me.pool)].tp + me.tp;
  SW_ASSIGN_OR_RETURN(rt.stage_group, rt.world->split(stage_color, key));
  SW_ASSIGN_OR_RETURN(rt.tp_group, rt.world->split(tp_color, me.tp));
  SW_RETURN_IF_ERROR(choose_transport(rt, rank_specific));
  SW_RETURN_IF_ERROR(exchange_keys(rt, rank_specific));
  return rt;
}

Result<WorkerEngine> build_worker_engine(ClusterRuntime& rt, int64_t num_kv_blocks) {
  WorkerEngine e;
  const parallel::RankPlan& rp = rt.rank_plan();
  const parallel::PoolSpec& pool = rt.plan.pools[rp.coord.pool];
  const auto& cfg = rt.cluster;
  kernels::BackendOptions bo;
  bo.device_ordinal = rt.device_ordinal;
  SW_ASSIGN_OR_RETURN(e.backend, kernels::make_backend(cfg.runtime.device, bo));
  SW_ASSIGN_OR_RETURN(DType dtype, parse_dtype(cfg.model.dtype));
  SW_ASSIGN_OR_RETURN(model::LoadFormat format, model::parse_load_format(cfg.model.load_format));
  SW_ASSIGN_OR_RETURN(auto source, model::open_weight_source(rt.model, cfg.model.path, format,
                                                             cfg.model.dummy_seed));
  SW_ASSIGN_OR_RETURN(ModelWeights weights,
                      load_model_weights(rt.model, *source, *e.backend, dtype, rp.shard));

  parallel::DistributedForwardOptions o;
  o.world = rt.world.get();
  o.tp_group = rt.tp_group.get();
  o.stage_group = rt.stage_group.get();
  o.dp = pool.dp;
  o.pp = pool.pp;
  o.moe_mode = pool.moe;
  o.num_experts = rt.model.num_experts;
  o.all_to_all = cfg.comm.all_to_all;
  for (int delta : {-1, 1}) {
    parallel::RankCoord c = rp.coord;
    c.stage += delta;
    if (c.stage < 0 || c.stage >= pool.pp) continue;
    SW_ASSIGN_OR_RETURN(int r, parallel::rank_of(rt.plan.pools, c));
    (delta < 0 ? o.prev_stage_rank : o.next_stage_rank) = r;
  }
  SW_ASSIGN_OR_RETURN(auto forward, parallel::DistributedForward::create(*e.backend, o));
  e.forward = std::move(forward);
  e.runner = std::make_unique<ModelRunner>(rt.model, std::move(weights), *e.backend,
                                           KvCacheOptions{num_kv_blocks, cfg.runtime.kv_block_size},
                                           e.forward.get());
  moe::MoeOptions mo;
  mo.capacity_factor = cfg.moe.capacity_factor;
  mo.policy = cfg.moe.drop_policy;
  mo.priority_score = cfg.moe.priority_score;
  e.runner->set_moe_options(mo);
  e.steps = std::make_unique<StepThread>(*e.runner);
  return e;
}

Status run_worker(ClusterRuntime& rt, WorkerEngine& engine, const std::string& endpoint) {
  const parallel::RankPlan& rp = rt.rank_plan();
  const auto& pool = rt.plan.pools[rp.coord.pool];
  const bool replies = rp.shard.has_lm_head && rp.coord.tp == 0;
  const std::string id = fmt::format("rank{}", rt.rank());
  const std::string who = fmt::format("rank {} (stage {}, dp {}, tp {})", rt.rank(), rp.coord.stage,
                                      rp.coord.dp, rp.coord.tp);
  comm::ControlKeys keys;
  keys.own = rt.keys.control;
  keys.server_public_key = rt.keys.control_public[0];
  SW_ASSIGN_OR_RETURN(auto channel,
                      comm::ControlChannel::worker(rt.cluster.comm, endpoint, id, &keys));
  // Disaggregation: this rank's KV transport, whose address the coordinator passes on to the
  // ranks that send here (the info message follows the hello).
  std::unique_ptr<comm::KvTransport> transport;
  std::unique_ptr<KvTransferAgent> kv;
  if (rt.cluster.disaggregated()) {
    const auto& d = rt.cluster.disaggregation;
    comm::KvTransportOptions to;
    SW_ASSIGN_OR_RETURN(to.host, comm::kv_bind_host(d.kv_host, rt.cluster.comm, rt.hosts));
    // Only the job's ranks may send KV here, and parts go only to the job's ranks — unless
    // the cluster file trades that for bandwidth (kv_security: none).
    const bool curve = d.kv_security == "curve";
    if (curve) {
      to.keys = rt.keys.kv;
      for (size_t r = 1; r < rt.keys.kv_public.size(); ++r)
        to.admitted_senders[rt.keys.kv_public[r]] = fmt::format("rank {}", r);
    }
    SW_ASSIGN_OR_RETURN(transport, comm::make_kv_transport(to));
    spdlog::info("rank {}: KV transport at {} ({})", rt.rank(), transport->address(),
                 curve ? "CURVE" : "unauthenticated, in the clear: disaggregation.kv_security");
    KvFault fault;
    fault.mode = d.fault_mode == "drop"    ? KvFault::Mode::kDrop
                 : d.fault_mode == "stall" ? KvFault::Mode::kStall
                                           : KvFault::Mode::kNone;
    fault.decode_rank = d.fault_decode_rank;
    fault.stall_s = d.fault_stall_s;
    fault.count = d.fault_count;
    kv = std::make_unique<KvTransferAgent>(rt.plan, rt.rank(), *engine.runner, *transport, fault,
                                           curve ? rt.keys.kv_public : std::vector<std::string>());
  }
  SW_RETURN_IF_ERROR(
      channel->send("", comm::MessageType::kInfo, 0, transport ? transport->address() : ""));
  // Steps run on their own thread so this one keeps the heartbeats going through a long step
  // (a collective waiting for a slow peer included), and moves KV between steps.
  StepThread& steps = *engine.steps;
  uint64_t request = 0;  // of the step in flight
  bool collect = false;
  struct Queued {
    uint64_t request;
    bool collect;
    StepMetadata meta;
    std::vector<KvSendOrder> kv_sends;
  };
  std::deque<Queued> queued;
  // Anything that stops this rank is reported to the coordinator before the loop ends.
  auto fail = [&](Status err, uint64_t request_id) {
    err = err.with_context(who);
    (void)channel->send("", comm::MessageType::kError, request_id, err.message());
    return err;
  };
  while (true) {
    if (auto done = steps.poll()) {
      if (kv) kv->disarm();
      if (!done->ok()) return fail(done->status(), request);
      StepResult& result = done->value();
      // The last stage's tp-rank-0 of each dp group replies with its tokens; with metrics on,
      // every other stage's tp-rank-0 of each dp group sends its layers' metrics.
      if (replies || (rp.coord.tp == 0 && collect)) {
        StepReply rep;
        rep.dp_group = rp.coord.dp;
        rep.stage = rp.coord.stage;
        if (replies) {
          rep.sampled = result.sampled;
          rep.logits_row = result.logits_row;
          rep.logits = result.logits;
        }
        rep.moe_metrics = std::move(result.moe_metrics);
        const std::string payload = encode_step_reply(rep);
        if (payload.size() + comm::kControlHeaderBytes > rt.cluster.comm.control_max_message_bytes)
          return fail(
              resource_exhausted("the step reply is {} bytes ({} logits rows of {} values for "
                                 "--dump-logits), over the control channel's limit of {} "
                                 "bytes: dump fewer or shorter prompts",
                                 payload.size(), rep.logits.defined() ? rep.logits.dim(0) : 0,
                                 rt.model.vocab_size, rt.cluster.comm.control_max_message_bytes),
              request);
        SW_RETURN_IF_ERROR(channel->send("", comm::MessageType::kResult, request, payload));
      }
    }
    // KV moves between steps (the cache is this thread's only while no step runs).
    if (kv) {
      for (const KvDone& d : kv->progress(!steps.busy(), 0))
        SW_RETURN_IF_ERROR(
            channel->send("", comm::MessageType::kKvDone, d.transfer, encode_kv_done(d)));
    }
    if (!steps.busy() && !queued.empty()) {
      request = queued.front().request;
      collect = queued.front().collect;
      if (kv) kv->arm(queued.front().kv_sends);  // layers leave as the step writes them
      SW_RETURN_IF_ERROR(steps.submit(std::move(queued.front().meta), collect));
      queued.pop_front();
    }
    // Same rule as the coordinator's: silent for interval x misses means gone (the channel's
    // I/O thread judges it, whatever this loop is doing). A step stuck in a collective cannot
    // be interrupted, so the error ends the job.
    const double grace =
        rt.cluster.comm.heartbeat_interval_s * rt.cluster.comm.heartbeat_miss_count;
    if (channel->is_lost("coordinator")) {
      if (!channel->ever_heard("coordinator"))
        return unavailable(
            "{}: could not reach the coordinator at {} within {:.1f} s (heartbeat_interval_s x "
            "heartbeat_miss_count): is that address reachable from this host? (see "
            "cluster.control_endpoint and cluster.control_interface)",
            who, endpoint, grace);
      return unavailable(
          "{}: lost the coordinator at {} (no heartbeat for {:.1f} s = heartbeat_interval_s x "
          "heartbeat_miss_count)",
          who, endpoint, grace);
    }
    const bool active = steps.busy() || (kv && kv->busy());
    // receive() also returns as soon as the channel declares a peer lost.
    SW_ASSIGN_OR_RETURN(auto msg, channel->receive(active ? 0.002 : 0.5));
    if (!msg) continue;
    if (msg->type == comm::MessageType::kAbort)
      return unavailable("{}: the coordinator ended the job: {}", who, printable(msg->payload));
    if (msg->type == comm::MessageType::kShutdown) {
      // Sent once every step has answered; the earlier stages may still be finishing theirs.
      while (steps.busy() && !steps.poll()) steps.wait(rt.cluster.comm.timeout_s);
      return Status();
    }
    if (msg->type == comm::MessageType::kKv) {
      auto c = decode_kv_command(msg->payload);
      if (!c.ok()) return fail(c.status(), msg->request_id);
      if (!kv)
        return fail(invalid_argument("a KV command, but this job has no prefill/decode "
                                     "pools"),
                    msg->request_id);
      switch (c->kind) {
        case KvCommand::Kind::kSend: kv->queue_send(std::move(c->send)); break;
        case KvCommand::Kind::kRecv: kv->expect(c->recv); break;
        case KvCommand::Kind::kCancel: kv->cancel(c->transfer); break;
      }
      continue;
    }
    if (msg->type != comm::MessageType::kCommand) continue;
    auto cmd = decode_step_command(msg->payload);
    if (!cmd.ok()) return fail(cmd.status(), msg->request_id);
    if (static_cast<int>(cmd->groups.size()) != pool.dp)
      return fail(invalid_argument("step command for {} dp groups, this instance has {}",
                                   cmd->groups.size(), pool.dp),
                  msg->request_id);
    // Ranks that do not reply (earlier stages) may still be finishing the previous step when
    // the next arrives: steps queue up and run in order.
    queued.push_back({msg->request_id, cmd->collect_moe_metrics,
                      std::move(cmd->groups[static_cast<size_t>(rp.coord.dp)]),
                      std::move(cmd->kv_sends)});
  }
}

}  // namespace sw::worker
