// `shardwise plan`: read a cluster YAML and the model's config.json, run the partitioner and
// print the plan (text table or JSON) without MPI or devices; --print-world-size and
// --launch-env print what launch scripts need (launch/mpirun/, launch/slurm/). Add a flag: a
// field in PlanArgs, its add_option below, and a line in docs/cli.md.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "model/model_config.h"
#include "parallel/cluster_config.h"
#include "parallel/kv_transfer_plan.h"
#include "parallel/partitioner.h"

namespace sw::cli {

namespace {

struct PlanArgs {
  std::string config;
  bool json = false;
  int world_size = 0;
  std::vector<int> world_size_arg;  // --world-size [N]
  bool print_world_size = false;
  bool launch_env = false;
};

// What a launcher needs to size a job, as shell assignments (launch/lib.sh reads them):
//   SW_WORLD_SIZE      ranks of mpirun -np / srun -n (coordinator + every pool's ranks)
//   SW_NODES           nodes the ranks fill, ceil(SW_WORLD_SIZE / SW_RANKS_PER_NODE)
//   SW_RANKS_PER_NODE  cluster.ranks_per_node capped at the world size; 0 (real hosts, which
//                      plan cannot see) means one node holding every rank
//   SW_GPUS_PER_RANK   1 on runtime.device cuda (each worker owns one GPU), else 0
//   SW_GPUS_PER_NODE   GPUs the busiest node's workers need (the coordinator, on node 0, needs
//                      none), so 9 ranks on an 8-GPU node ask for 8 GPUs, not 9
//   SW_DEVICE          cpu | cuda
std::string launch_env(const parallel::Plan& plan) {
  const int world = plan.world_size;
  const int per_node = plan.ranks_per_node > 0 ? std::min(plan.ranks_per_node, world) : world;
  const int nodes = (world + per_node - 1) / per_node;
  const int gpus_per_rank = plan.device == "cuda" ? 1 : 0;
  // Each rank's node as the plan placed it (all on node 0 when ranks_per_node is 0).
  std::vector<int> workers_on_node(static_cast<size_t>(nodes), 0);
  for (const parallel::RankPlan& r : plan.ranks)
    if (!r.coord.coordinator && r.node >= 0 && r.node < nodes)
      ++workers_on_node[static_cast<size_t>(r.node)];
  const int busiest = *std::max_element(workers_on_node.begin(), workers_on_node.end());
  return fmt::format(
      "SW_WORLD_SIZE={}\nSW_NODES={}\nSW_RANKS_PER_NODE={}\nSW_GPUS_PER_RANK={}\n"
      "SW_GPUS_PER_NODE={}\nSW_DEVICE={}\n",
      world, nodes, per_node, gpus_per_rank, gpus_per_rank * busiest, plan.device);
}

int run_plan(const PlanArgs& a) {
  auto fail = [](const Status& st) {
    std::fprintf(stderr, "shardwise plan: %s\n", st.message().c_str());
    return 1;
  };
  Result<parallel::ClusterConfig> cluster = parallel::load_cluster_config(a.config);
  if (!cluster.ok()) return fail(cluster.status());
  Result<model::ModelConfig> model = model::load_model_config(cluster->model.path);
  if (!model.ok())
    return fail(model.status().with_context(
        fmt::format("{}: key 'model.path' ({})", a.config, cluster->model.path)));
  Result<parallel::Plan> plan = parallel::make_plan(*cluster, *model, a.world_size);
  if (!plan.ok()) return fail(plan.status());
  if (a.print_world_size) {
    std::cout << plan->world_size << "\n";
    return 0;
  }
  if (a.launch_env) {
    std::cout << launch_env(*plan);
    return 0;
  }
  if (a.json) {
    std::cout << plan->to_json().dump(2) << "\n";
    return 0;
  }
  std::cout << plan->to_text();
  // Prefill and decode pools: who sends which layers and KV heads to whom.
  if (cluster->disaggregated()) {
    Result<parallel::KvTransferPlan> kv = parallel::make_kv_transfer_plan(*plan, 0, 1);
    if (!kv.ok()) return fail(kv.status());
    Result<DType> dtype = parse_dtype(cluster->model.dtype);
    if (!dtype.ok()) return fail(dtype.status());
    const int64_t per_token =
        kv->bytes_per_token(model->head_dim, static_cast<int64_t>(dtype_size(*dtype)));
    std::cout << fmt::format(
        "\nKV transfer prefill -> decode (per dp group, {} bytes per token on the wire):\n{}",
        per_token, kv->to_text());
  }
  return 0;
}

}  // namespace

std::function<int()> add_plan_command(CLI::App& app) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* sub = app.add_subcommand(
      "plan", "Print how a cluster config lays the model out over ranks (no MPI needed)");
  sub->add_option("--config", args->config, "cluster YAML file (launch/configs/*.yaml)")
      ->required();
  CLI::Option* json =
      sub->add_flag("--json", args->json, "print the plan as JSON instead of a table");
  // --world-size N checks; a bare --world-size prints the count, as --print-world-size does.
  CLI::Option* world_size =
      sub->add_option("--world-size", args->world_size_arg,
                      "with N: check against N ranks (mpirun -np; 0 = no check); alone: print "
                      "the number of ranks the config needs (as --print-world-size)")
          ->expected(0, 1)
          ->check(CLI::NonNegativeNumber);
  CLI::Option* world =
      sub->add_flag("--print-world-size", args->print_world_size,
                    "print only the number of ranks the config needs, for mpirun -np / srun -n");
  CLI::Option* env = sub->add_flag("--launch-env", args->launch_env,
                                   "print SW_WORLD_SIZE, SW_NODES, SW_RANKS_PER_NODE, "
                                   "SW_GPUS_PER_RANK, SW_GPUS_PER_NODE, SW_DEVICE as shell "
                                   "assignments, one a line (launch/ scripts read them)");
  json->excludes(world)->excludes(env);
  world->excludes(env);
  return [args, world_size] {
    const auto& given = world_size->results();
    const bool bare =
        world_size->count() > 0 && (given.empty() || (given.size() == 1 && given.front().empty()));
    if (bare) {
      if (args->json || args->launch_env) {
        std::fprintf(stderr,
                     "shardwise plan: --world-size without a value prints the world "
                     "size; it cannot be combined with --json or --launch-env\n");
        return 2;
      }
      args->print_world_size = true;
    }
    if (!bare && !args->world_size_arg.empty()) args->world_size = args->world_size_arg.front();
    return run_plan(*args);
  };
}

}  // namespace sw::cli
