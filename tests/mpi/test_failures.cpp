// Failure detection that acts, and a control plane that hears only its job, under mpirun of
// `shardwise generate --config` (tiny-moe, tp 2: rank 0 coordinates ranks 1 and 2). Each fault
// is a signal to one rank's process, found by its OMPI_COMM_WORLD_RANK among mpirun's children;
// the time from the signal to mpirun's exit is asserted against heartbeat_interval_s x
// heartbeat_miss_count + kSlackS (a bound, not a performance check), and from below by the
// grace minus one interval, which shows that the heartbeat rule, not the launcher, ended the
// job. A rogue process that claims a worker's routing id before the job starts is refused.
// Add a fault: a TEST that launches, waits for the job to run, signals and checks the message.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "comm/control/message.h"
#include "worker/step_protocol.h"

namespace sw {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// What the job may take beyond the grace to notice, report and end: the detecting thread's
// wake-up, the engine's reaction, the abort message, MPI_Abort and mpirun's teardown (about
// 1 s measured here with mpirun --enable-recovery), with room for a loaded 2-core machine.
constexpr double kSlackS = 3.0;
constexpr int kNumPrompts = 48;
constexpr int kNewTokens = 200;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

fs::path work_dir(const std::string& name) {
  fs::path d = fs::path(::testing::TempDir()) / "shardwise_failures" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Prompts of 4..39 tokens, the same in every test.
fs::path write_prompts(const fs::path& dir) {
  std::ofstream out(dir / "prompts.jsonl");
  uint32_t x = 12345;
  for (int i = 0; i < kNumPrompts; ++i) {
    nlohmann::json ids = nlohmann::json::array();
    x = x * 1103515245u + 12345u;
    const int len = 4 + static_cast<int>((x >> 16) % 36);
    for (int t = 0; t < len; ++t) {
      x = x * 1103515245u + 12345u;
      ids.push_back(1 + static_cast<int>((x >> 16) % 1000));
    }
    out << nlohmann::json{{"prompt_ids", ids}}.dump() << "\n";
  }
  return dir / "prompts.jsonl";
}

fs::path write_config(const fs::path& dir, double interval_s, int misses,
                      const std::string& endpoint = "") {
  std::ofstream out(dir / "cluster.yaml");
  out << "model: {path: tiny-moe, load_format: dummy, dtype: float32}\n"
      << "runtime: {device: cpu, kv_block_size: 16, max_num_seqs: 64, "
         "max_num_batched_tokens: 512}\n"
      << "cluster: {timeout_s: 60, heartbeat_interval_s: " << interval_s
      << ", heartbeat_miss_count: " << misses
      << (endpoint.empty() ? std::string() : ", control_endpoint: \"" + endpoint + "\"") << "}\n"
      << "pools: {mixed: {tp: 2}}\n";
  return dir / "cluster.yaml";
}

// A process started by this test, its output in files.
struct Launched {
  pid_t pid = -1;
  fs::path out, err;
};

Launched launch(const std::vector<std::string>& argv, const fs::path& dir) {
  Launched l;
  l.out = dir / "stdout.txt";
  l.err = dir / "stderr.txt";
  l.pid = ::fork();
  if (l.pid == 0) {
    FILE* o = std::freopen(l.out.c_str(), "w", stdout);
    FILE* e = std::freopen(l.err.c_str(), "w", stderr);
    if (!o || !e) ::_exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return l;
}

std::vector<std::string> mpirun(const fs::path& config, const fs::path& prompts,
                                bool launcher_abort = true) {
  std::vector<std::string> a = {SHARDWISE_MPIEXEC, "--allow-run-as-root", "--oversubscribe"};
  // --enable-recovery: mpirun does not end the job when a process dies, so that what ends it
  // is Shardwise's own detection.
  if (!launcher_abort) a.push_back("--enable-recovery");
  for (const char* s : {"-np", "3", SHARDWISE_CLI, "--log-level", "info", "generate", "--config"})
    a.push_back(s);
  a.push_back(config.string());
  for (const std::string& s :
       {std::string("--prompts"), prompts.string(), std::string("--max-new-tokens"),
        std::to_string(kNewTokens), std::string("--ignore-eos"), std::string("--json")})
    a.push_back(s);
  return a;
}

// Exit status (128 + signal when killed), or nullopt when still running after timeout_s.
std::optional<int> wait_exit(pid_t pid, double timeout_s) {
  const auto until = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0 || Clock::now() > until) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string stat = read_file(e.path() / "stat");
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

// The process of world rank `rank` among mpirun's children.
pid_t rank_pid(pid_t mpirun_pid, int rank) {
  const std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  for (pid_t child : children_of(mpirun_pid)) {
    std::ifstream in("/proc/" + std::to_string(child) + "/environ", std::ios::binary);
    std::string var;
    while (std::getline(in, var, '\0'))
      if (var == want) return child;
  }
  return -1;
}

// Waits until the job's workers have connected (its stderr says so), then a little more so
// that the engine is stepping.
bool wait_until_running(const Launched& job, double timeout_s = 60) {
  const auto until = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (Clock::now() < until) {
    const std::string err = read_file(job.err);
    if (err.find("worker 'rank1' connected") != std::string::npos &&
        err.find("worker 'rank2' connected") != std::string::npos) {
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      return true;
    }
    if (wait_exit(job.pid, 0)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Ends what is left of a job this test started: its ranks (by pid, resumed first), then mpirun.
void reap(pid_t mpirun_pid) {
  if (wait_exit(mpirun_pid, 0)) return;
  for (pid_t child : children_of(mpirun_pid)) {
    ::kill(child, SIGCONT);
    ::kill(child, SIGKILL);
  }
  ::kill(mpirun_pid, SIGKILL);
  (void)wait_exit(mpirun_pid, 10);
}

std::vector<std::vector<int>> output_ids(const std::string& text) {
  std::vector<std::vector<int>> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') {
      const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      const bool ids = j.is_object() && j.contains("output_ids") && j["output_ids"].is_array();
      out.push_back(ids ? j["output_ids"].get<std::vector<int>>() : std::vector<int>{});
    }
  return out;
}

// The single-process tokens of the prompts, computed once.
const std::vector<std::vector<int>>& reference(const fs::path& prompts) {
  static std::optional<std::vector<std::vector<int>>> ids;
  if (!ids) {
    const fs::path dir = work_dir("reference");
    Launched ref = launch({SHARDWISE_CLI, "generate", "--model", "tiny-moe", "--load-format",
                           "dummy", "--prompts", prompts.string(), "--max-new-tokens",
                           std::to_string(kNewTokens), "--ignore-eos", "--json"},
                          dir);
    EXPECT_EQ(wait_exit(ref.pid, 300), 0) << read_file(ref.err);
    ids = output_ids(read_file(ref.out));
  }
  return *ids;
}

struct Fault {
  double exit_s = 0;  // from the signal to mpirun's exit
  int exit_code = -1;
  std::string err, out;
};

// Runs the job, sends `sig` to `rank` once it is running, and (stop_for_s > 0) SIGCONT after
// that long; returns when mpirun has exited.
Fault run_fault(const std::string& name, int rank, int sig, double interval_s, int misses,
                bool launcher_abort = true, double stop_for_s = 0) {
  const fs::path dir = work_dir(name);
  Launched job = launch(
      mpirun(write_config(dir, interval_s, misses), write_prompts(dir), launcher_abort), dir);
  Fault f;
  if (!wait_until_running(job)) {
    reap(job.pid);
    ADD_FAILURE() << "the job did not start:\n" << read_file(job.err);
    return f;
  }
  const pid_t victim = rank_pid(job.pid, rank);
  if (victim <= 0) {
    reap(job.pid);
    ADD_FAILURE() << "no process of rank " << rank << " under mpirun " << job.pid;
    return f;
  }
  const auto t0 = Clock::now();
  ::kill(victim, sig);
  if (stop_for_s > 0) {
    std::this_thread::sleep_for(std::chrono::duration<double>(stop_for_s));
    ::kill(victim, SIGCONT);
  }
  auto code = wait_exit(job.pid, 120);
  f.exit_s = seconds_since(t0);
  if (!code) {
    reap(job.pid);
    ADD_FAILURE() << "the job did not end within 120 s of the fault:\n" << read_file(job.err);
    return f;
  }
  f.exit_code = *code;
  f.err = read_file(job.err);
  f.out = read_file(job.out);
  std::printf("[ measured ] %s: fault -> exit %.2f s (grace %.2f s), exit status %d\n",
              name.c_str(), f.exit_s, interval_s * misses, f.exit_code);
  return f;
}

// Issue 12 §2: a stopped worker ends its instance's step at once, naming only that rank (its
// tp peer, blocked in a collective with it, is named alive), and the job within the bound.
TEST(Failures, StoppedWorkerEndsTheJobWithinTheGrace) {
  const double interval = 0.2;
  const int misses = 3;
  Fault f = run_fault("stop_worker", 2, SIGSTOP, interval, misses);
  EXPECT_NE(f.exit_code, 0);
  EXPECT_NE(f.err.find("worker rank(s) [2] lost: no heartbeat for 0.6 s"), std::string::npos)
      << f.err;
  EXPECT_NE(f.err.find("rank(s) [1] of the instance are alive"), std::string::npos) << f.err;
  EXPECT_EQ(f.err.find("rank(s) [1, 2] lost"), std::string::npos) << f.err;
  EXPECT_LE(f.exit_s, interval * misses + kSlackS);
  EXPECT_GE(f.exit_s, interval * misses / 2);
}

// With mpirun's own reaction to a dead process turned off (--enable-recovery), Shardwise's
// detection is what ends the job: not before the grace, and within the bound after it.
TEST(Failures, KilledWorkerEndsTheJobWithoutTheLaunchersHelp) {
  const double interval = 0.2;
  const int misses = 3;
  Fault f = run_fault("kill_worker", 2, SIGKILL, interval, misses, /*launcher_abort=*/false);
  EXPECT_NE(f.err.find("worker rank(s) [2] lost: no heartbeat for 0.6 s"), std::string::npos)
      << f.err;
  // The surviving worker was told to stop (mpirun would not have stopped it).
  EXPECT_NE(f.err.find("rank 1 (stage 0, dp 0, tp 0): the coordinator ended the job"),
            std::string::npos)
      << f.err;
  EXPECT_LE(f.exit_s, interval * misses + kSlackS);
  EXPECT_GE(f.exit_s, interval * misses / 2);
}

// A coordinator stopped for less than the grace is not given up: the job finishes with exactly
// the single-process tokens.
TEST(Failures, CoordinatorStoppedForLessThanTheGraceSurvives) {
  const double interval = 0.2;
  const int misses = 5;  // 1 s of grace against a 0.4 s stop: room for a loaded machine
  const fs::path dir = work_dir("stop_coordinator_short");
  const auto& want = reference(write_prompts(dir));
  ASSERT_EQ(want.size(), static_cast<size_t>(kNumPrompts));
  Fault f = run_fault("stop_coordinator_short", 0, SIGSTOP, interval, misses, true, 0.4);
  EXPECT_EQ(f.exit_code, 0) << f.err;
  EXPECT_EQ(f.err.find("lost"), std::string::npos) << f.err;
  EXPECT_EQ(output_ids(f.out), want);
}

// A coordinator stopped for longer than the grace is given up by its workers, with the message
// that says so, within the bound.
TEST(Failures, CoordinatorStoppedForLongerThanTheGraceEndsTheJob) {
  const double interval = 0.2;
  const int misses = 5;
  Fault f = run_fault("stop_coordinator_long", 0, SIGSTOP, interval, misses);
  EXPECT_NE(f.exit_code, 0);
  EXPECT_NE(f.err.find("lost the coordinator at tcp://127.0.0.1:"), std::string::npos) << f.err;
  EXPECT_NE(f.err.find("(no heartbeat for 1.0 s = heartbeat_interval_s x heartbeat_miss_count)"),
            std::string::npos)
      << f.err;
  EXPECT_LE(f.exit_s, interval * misses + kSlackS);
  EXPECT_GE(f.exit_s, interval * misses / 2);
}

int free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    return -1;
  ::close(fd);
  return ntohs(a.sin_port);
}

// Issue 12, why 1: a local process connected to the coordinator's endpoint before the job,
// claimed rank 1's routing id, answered every step with forged tokens and sent an error of its
// own making. Now its handshake is refused (no key of the job): the output is exact, nothing
// it sent shows, and the refusals are counted in the log.
TEST(ControlPlane, ARogueProcessClaimingAWorkerIsNotHeard) {
  const int port = free_tcp_port();
  ASSERT_GT(port, 0);
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(port);
  const fs::path dir = work_dir("rogue");
  const fs::path prompts = write_prompts(dir);
  const auto& want = reference(prompts);
  std::atomic<bool> stop{false};
  std::atomic<int> forged{0};
  zmq::context_t ctx;
  zmq::socket_t rogue(ctx, zmq::socket_type::dealer);
  rogue.set(zmq::sockopt::linger, 0);
  rogue.set(zmq::sockopt::routing_id, "rank1");  // rank 1 replies for the instance
  rogue.connect(endpoint);                       // retries until the coordinator binds
  std::thread attacker([&] {
    const std::string hello = comm::encode_message(comm::MessageType::kHello, 0, "rank1");
    const std::string info = comm::encode_message(comm::MessageType::kInfo, 0, "");
    rogue.send(zmq::buffer(hello), zmq::send_flags::dontwait);
    rogue.send(zmq::buffer(info), zmq::send_flags::dontwait);
    while (!stop) {
      zmq::pollitem_t items[] = {{rogue.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, std::chrono::milliseconds(20));
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      zmq::message_t m;
      if (!rogue.recv(m, zmq::recv_flags::dontwait)) continue;
      auto msg = comm::decode_message(m.to_string_view(), 1 << 24);
      if (!msg.ok() || msg->type != comm::MessageType::kCommand) continue;
      auto cmd = worker::decode_step_command(msg->payload);
      if (!cmd.ok()) continue;
      worker::StepReply rep;  // token 7 for every sequence
      rep.sampled.assign(cmd->groups[0].seqs.size(), 7);
      rep.logits_row.assign(cmd->groups[0].seqs.size(), -1);
      const std::string r = comm::encode_message(comm::MessageType::kResult, msg->request_id,
                                                 worker::encode_step_reply(rep));
      rogue.send(zmq::buffer(r), zmq::send_flags::dontwait);
      if (++forged == 3) {
        const std::string e = comm::encode_message(comm::MessageType::kError, msg->request_id,
                                                   "forged abort\n[error] (rank 0): all is well");
        rogue.send(zmq::buffer(e), zmq::send_flags::dontwait);
      }
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the rogue is there first
  Launched job = launch(mpirun(write_config(dir, 0.2, 5, endpoint), prompts), dir);
  auto code = wait_exit(job.pid, 120);
  stop = true;
  attacker.join();
  if (!code) reap(job.pid);
  const std::string err = read_file(job.err);
  ASSERT_TRUE(code.has_value()) << "the job did not end:\n" << err;
  EXPECT_EQ(*code, 0) << err;
  EXPECT_EQ(forged.load(), 0) << "the rogue received step commands";
  EXPECT_EQ(output_ids(read_file(job.out)), want);
  EXPECT_EQ(err.find("forged"), std::string::npos) << err;
  EXPECT_NE(err.find("control channel (coordinator): refused a connection"), std::string::npos)
      << err;
}

}  // namespace
}  // namespace sw
