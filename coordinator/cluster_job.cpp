// MPI start and end of a cluster job; the coordinator's engine over remote instances.
#include "coordinator/cluster_job.h"

#include <mpi.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "comm/host_address.h"
#include "common/logging.h"
#include "coordinator/control_hub.h"
#include "coordinator/remote_executor.h"
#include "parallel/rank_layout.h"

namespace sw::coordinator {

Result<std::vector<int64_t>> instance_kv_blocks(const parallel::Plan& plan,
                                                const parallel::RuntimeSection& runtime,
                                                int64_t cap) {
  std::vector<int64_t> blocks(static_cast<size_t>(parallel::num_instances(plan.pools)), INT64_MAX);
  for (const parallel::RankPlan& rp : plan.ranks) {
    if (rp.coord.coordinator) continue;
    if (runtime.num_kv_blocks > rp.kv_blocks)
      return resource_exhausted(
          "runtime.num_kv_blocks {} exceeds the {} blocks that fit rank {} after its weights "
          "and activations (runtime.device_memory_gib x gpu_memory_utilization); lower it or "
          "raise the memory",
          runtime.num_kv_blocks, rp.kv_blocks, rp.rank);
    int64_t& b = blocks[static_cast<size_t>(
        parallel::instance_index(plan.pools, rp.coord.pool, rp.coord.instance))];
    b = std::min(b, runtime.num_kv_blocks > 0 ? runtime.num_kv_blocks : rp.kv_blocks);
  }
  for (int64_t& b : blocks)
    if (cap > 0) b = std::min(b, cap);
  return blocks;
}

Result<EngineOptions> engine_options(const parallel::ClusterConfig& c, const parallel::Plan& plan) {
  EngineOptions o;
  o.scheduler.max_num_seqs = c.runtime.max_num_seqs;
  o.scheduler.max_num_batched_tokens = c.runtime.max_num_batched_tokens;
  o.scheduler.max_model_len = plan.max_model_len;
  o.scheduler.long_prefill_token_threshold = c.scheduler.long_prefill_token_threshold;
  auto policy = parse_scheduler_policy(c.scheduler.policy);
  if (!policy.ok()) return policy.status().with_context(c.source + ": scheduler.policy");
  o.scheduler.policy = *policy;
  o.scheduler.kv_transfer_timeout_s = c.disaggregation.kv_transfer_timeout_s;
  o.scheduler.on_transfer_failure = c.disaggregation.on_transfer_failure == "fail"
                                        ? TransferFailurePolicy::kFail
                                        : TransferFailurePolicy::kRecompute;
  return o;
}

namespace {

void report(const Status& s, int rank) {
  std::fprintf(stderr, "error (rank %d): %s\n", rank, s.message().c_str());
  std::fflush(stderr);
}

// Peers may be blocked in a collective with this rank: take the whole job down.
[[noreturn]] void abort_job(const Status& s, int rank) {
  report(s, rank);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // MPI_Abort does not return; this says so to the compiler
}

Status broadcast_string(comm::Communicator& world, std::string& s) {
  int64_t len = static_cast<int64_t>(s.size());
  SW_RETURN_IF_ERROR(world.broadcast(&len, 1, DType::kI64, 0));
  s.resize(static_cast<size_t>(len));
  return world.broadcast(s.data(), len, DType::kU8, 0);
}

std::string rank_range(const std::vector<std::vector<int>>& ranks) {
  int lo = INT32_MAX, hi = -1;
  for (const auto& stage : ranks)
    for (int r : stage) {
      lo = std::min(lo, r);
      hi = std::max(hi, r);
    }
  return lo == hi ? fmt::format("rank {}", lo) : fmt::format("ranks {}-{}", lo, hi);
}

InstanceRole role_of(parallel::PoolKind k) {
  return k == parallel::PoolKind::kPrefill  ? InstanceRole::kPrefill
         : k == parallel::PoolKind::kDecode ? InstanceRole::kDecode
                                            : InstanceRole::kMixed;
}

// The coordinator's side once every rank is set up: an engine over the instances' workers.
Status serve(worker::ClusterRuntime& rt, ControlHub& hub, const std::vector<int64_t>& blocks,
             const EngineOptions& options, const ClusterDriver& drive, bool* fatal) {
  KvDirectory directory;  // filled once the workers have said where they receive KV
  Engine engine(rt.model, options);
  std::vector<std::string> peers;
  const auto& pools = rt.plan.pools;
  for (size_t p = 0; p < pools.size(); ++p) {
    const parallel::PoolSpec& pool = pools[p];
    for (int i = 0; i < pool.instances; ++i) {
      RemoteInstance ri;
      for (int s = 0; s < pool.pp; ++s)
        ri.ranks.push_back(rt.plan.stage_ranks(static_cast<int>(p), i, s));
      ri.name = fmt::format("{} instance {} ({})", parallel::pool_kind_name(pool.kind), i,
                            rank_range(ri.ranks));
      ri.tp = pool.tp;
      ri.dp = pool.dp;
      ri.moe = pool.moe;
      ri.timeout_s = rt.cluster.comm.timeout_s;
      ri.vocab_size = rt.model.vocab_size;
      auto executor = std::make_unique<RemoteExecutor>(hub, ri, &directory);
      for (const auto& peer : executor->peers()) peers.push_back(peer);
      InstanceSpec spec;
      spec.name = ri.name;
      spec.role = role_of(pool.kind);
      spec.pool = static_cast<int>(p);
      spec.num_kv_groups = pool.dp;
      spec.num_kv_blocks =
          blocks[static_cast<size_t>(parallel::instance_index(pools, static_cast<int>(p), i))];
      spec.kv_block_size = rt.cluster.runtime.kv_block_size;
      engine.add_instance(spec, std::move(executor));
    }
  }
  SW_ASSIGN_OR_RETURN(auto info, hub.wait_for_peers(peers, rt.cluster.comm.timeout_s));
  for (size_t p = 0; p < pools.size(); ++p) {
    const parallel::PoolSpec& pool = pools[p];
    for (int i = 0; i < pool.instances; ++i) {
      auto& groups = directory.ranks.emplace_back(static_cast<size_t>(pool.dp));
      for (int g = 0; g < pool.dp; ++g)
        for (int s = 0; s < pool.pp; ++s)
          for (int r : rt.plan.tp_group(static_cast<int>(p), i, s, g))
            groups[static_cast<size_t>(g)].emplace_back(r, info.at(fmt::format("rank{}", r)));
    }
  }
  Status driven = drive(engine, rt);
  Status stopped = engine.shutdown();
  // A lost instance's ranks may be stuck in a collective: only the job-wide abort ends them.
  if (!engine.health().ok()) return driven.ok() ? engine.health() : driven;
  if (!stopped.ok()) return stopped;
  *fatal = false;  // every worker has been told to exit: nobody is left waiting
  return driven;
}

Status coordinate(worker::ClusterRuntime& rt, std::unique_ptr<comm::ControlChannel> channel,
                  const std::vector<int64_t>& blocks, const EngineOptions& options,
                  const ClusterDriver& drive, bool* fatal) {
  ControlHub hub(std::move(channel));
  Status s = serve(rt, hub, blocks, options, drive, fatal);
  // The job is about to be aborted: tell every worker first, so that each stops at once even
  // where the launcher would not kill the others (mpirun --enable-recovery, some schedulers).
  if (*fatal) hub.abort_workers(s.message(), 1.0);
  return s;
}

// `*fatal` is set once ranks may be stuck waiting for each other; errors found alike on every
// rank (config, plan, the coordinator's inputs) end the job cleanly and are reported by rank 0.
Status run_job(const std::string& config_path, const ClusterJobOptions& opts,
               const ClusterDriver& drive, bool* fatal) {
  *fatal = false;
  bool rank_specific = false;
  auto started = worker::start_cluster(config_path, &rank_specific);
  if (!started.ok()) {
    *fatal = rank_specific;
    return started.status();
  }
  worker::ClusterRuntime rt = std::move(started).value();
  const bool coordinator = rt.rank() == 0;
  const int num_instances = parallel::num_instances(rt.plan.pools);

  Status setup;
  std::unique_ptr<comm::ControlChannel> channel;
  std::vector<int64_t> blocks(static_cast<size_t>(num_instances), 0);
  std::string endpoint;
  EngineOptions engine_opts;
  if (coordinator) {
    setup = [&]() -> Status {
      SW_ASSIGN_OR_RETURN(engine_opts, engine_options(rt.cluster, rt.plan));
      engine_opts.collect_moe_metrics = opts.collect_moe_metrics;
      int64_t cap = 0;
      if (opts.prepare) {
        SW_ASSIGN_OR_RETURN(cap, opts.prepare(rt));
      }
      SW_ASSIGN_OR_RETURN(blocks, instance_kv_blocks(rt.plan, rt.cluster.runtime, cap));
      // One host: loopback; several: an address they can reach (comm/host_address.h).
      comm::CommOptions control = rt.cluster.comm;
      SW_ASSIGN_OR_RETURN(control.control_endpoint,
                          comm::control_bind_endpoint(rt.cluster.comm, rt.hosts));
      // Only the job's workers, each by its own key, are heard (keys exchanged over MPI).
      comm::ControlKeys keys;
      keys.own = rt.keys.control;
      for (size_t r = 1; r < rt.keys.control_public.size(); ++r)
        keys.workers[fmt::format("rank{}", r)] = rt.keys.control_public[r];
      SW_ASSIGN_OR_RETURN(channel, comm::ControlChannel::coordinator(control, &keys));
      SW_ASSIGN_OR_RETURN(
          endpoint, comm::advertised_endpoint(channel->endpoint(), rt.cluster.comm, rt.hosts));
      if (endpoint != channel->endpoint()) spdlog::info("control: workers connect to {}", endpoint);
      return Status();
    }();
  }
  int64_t ok = setup.ok() ? 1 : 0;
  SW_RETURN_IF_ERROR(rt.world->broadcast(&ok, 1, DType::kI64, 0));
  if (!ok) return coordinator ? setup : Status();
  *fatal = true;
  SW_RETURN_IF_ERROR(rt.world->broadcast(blocks.data(), num_instances, DType::kI64, 0));
  SW_RETURN_IF_ERROR(broadcast_string(*rt.world, endpoint));

  if (!coordinator) {
    if (opts.workers_ignore_signals) {
      std::signal(SIGINT, SIG_IGN);
      std::signal(SIGTERM, SIG_IGN);
    }
    const parallel::RankCoord& me = rt.rank_plan().coord;
    const int64_t my_blocks =
        blocks[static_cast<size_t>(parallel::instance_index(rt.plan.pools, me.pool, me.instance))];
    auto engine = worker::build_worker_engine(rt, my_blocks);
    if (!engine.ok()) return engine.status().with_context(fmt::format("rank {}", rt.rank()));
    Status served = worker::run_worker(rt, *engine, endpoint);
    // Its step thread may be stuck in a collective: end the job before the engine is undone.
    if (!served.ok()) abort_job(served, rt.rank());
    *fatal = false;
    return Status();
  }
  return coordinate(rt, std::move(channel), blocks, engine_opts, drive, fatal);
}

}  // namespace

int run_cluster_job(const std::string& config_path, const ClusterJobOptions& options,
                    const ClusterDriver& drive) {
  int provided = 0, rank = 0;
  MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  set_log_rank(rank);
  bool fatal = false;
  Status s = run_job(config_path, options, drive, &fatal);
  if (!s.ok() && fatal) abort_job(s, rank);
  if (!s.ok() && rank == 0) report(s, rank);
  MPI_Finalize();
  return s.ok() ? 0 : 1;
}

}  // namespace sw::coordinator
