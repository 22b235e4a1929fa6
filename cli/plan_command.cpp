// `shardwise plan`: read a cluster YAML and the model's config.json, run the partitioner and
// print the plan (text table or JSON) without MPI or devices. Add a flag: a field in PlanArgs,
// its add_option below, and a line in README.md.
#include <cstdio>
#include <iostream>
#include <memory>

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
};

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
  sub->add_flag("--json", args->json, "print the plan as JSON instead of a table");
  sub->add_option("--world-size", args->world_size,
                  "check against this many ranks (mpirun -np); 0 = no check")
      ->check(CLI::NonNegativeNumber);
  return [args] { return run_plan(*args); };
}

}  // namespace sw::cli
