// MPI transport: batches of Isend/Irecv, polled with back-off so oversubscribed ranks
// (8 ranks on 2 cores) yield the CPU to the peers they wait for.
#include "comm/mpi/mpi_comm.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <thread>

namespace sw::comm {
namespace {

std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  return std::string(buf, len);
}

#define SW_MPI(call)                                                            \
  do {                                                                          \
    int sw_mpi_rc_ = (call);                                                    \
    if (sw_mpi_rc_ != MPI_SUCCESS)                                              \
      return unavailable("{} failed: {}", #call, mpi_error_string(sw_mpi_rc_)); \
  } while (0)

class MpiBatch final : public P2pBatch {
 public:
  explicit MpiBatch(std::vector<PeerOp> ops)
      : ops_(std::move(ops)), reqs_(ops_.size(), MPI_REQUEST_NULL), done_(ops_.size(), false) {}

  std::vector<PeerOp> ops_;
  std::vector<MPI_Request> reqs_;
  std::vector<bool> done_;
  size_t num_done_ = 0;
  int idle_polls_ = 0;

  Result<bool> test() override {
    if (num_done_ == reqs_.size()) return true;
    std::vector<int> idx(reqs_.size());
    std::vector<MPI_Status> st(reqs_.size());
    int outcount = 0;
    int rc = MPI_Testsome(static_cast<int>(reqs_.size()), reqs_.data(), &outcount, idx.data(),
                          st.data());
    if (rc != MPI_SUCCESS && rc != MPI_ERR_IN_STATUS)
      return unavailable("MPI_Testsome failed: {}", mpi_error_string(rc));
    if (outcount == MPI_UNDEFINED) outcount = 0;
    for (int k = 0; k < outcount; ++k) {
      const PeerOp& op = ops_[idx[k]];
      if (rc == MPI_ERR_IN_STATUS && st[k].MPI_ERROR != MPI_SUCCESS)
        return unavailable("{} peer {}: {}", op.is_send ? "send to" : "recv from", op.peer,
                           mpi_error_string(st[k].MPI_ERROR));
      if (!op.is_send) {
        int got = 0;
        MPI_Get_count(&st[k], MPI_BYTE, &got);
        if (static_cast<size_t>(got) != op.bytes)
          return internal_error("recv from peer {}: got {} bytes, expected {}", op.peer, got,
                                op.bytes);
      }
      done_[idx[k]] = true;
      ++num_done_;
    }
    if (outcount > 0) idle_polls_ = 0;
    return num_done_ == reqs_.size();
  }

  void wait_progress(Clock::time_point until) override {
    // Spin briefly for latency, then sleep longer and longer (up to 1 ms) to free the core.
    ++idle_polls_;
    if (idle_polls_ < 64) {
      std::this_thread::yield();
      return;
    }
    auto nap = std::chrono::microseconds(std::min(1000, 10 * (idle_polls_ - 63)));
    auto wake = std::min(until, Clock::now() + nap);
    std::this_thread::sleep_until(wake);
  }

  std::vector<int> pending_peers(bool sends) override {
    std::vector<int> out;
    for (size_t i = 0; i < ops_.size(); ++i)
      if (!done_[i] && ops_[i].is_send == sends) out.push_back(ops_[i].peer);
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
    return out;
  }

  void cancel() override {
    for (size_t i = 0; i < reqs_.size(); ++i) {
      if (done_[i] || reqs_[i] == MPI_REQUEST_NULL) continue;
      // Receives are cancelled so MPI never writes into the caller's buffer later; sends are
      // released and finish (or not) inside MPI.
      if (!ops_[i].is_send) MPI_Cancel(&reqs_[i]);
      MPI_Request_free(&reqs_[i]);
      done_[i] = true;
    }
  }

  ~MpiBatch() override { cancel(); }
};

}  // namespace

MpiComm::MpiComm(MPI_Comm coll, MPI_Comm user, int rank,
                 std::shared_ptr<const std::vector<int>> world_ranks,
                 std::shared_ptr<const std::vector<int>> node_of_world, std::string name,
                 CommOptions opts)
    : P2pCommunicator(rank, std::move(world_ranks), std::move(node_of_world), std::move(name),
                      std::move(opts)),
      coll_(coll),
      user_(user) {}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  // MPI_Comm_free is a local operation for the caller (MPI defers the rest).
  if (coll_ != MPI_COMM_NULL) MPI_Comm_free(&coll_);
  if (user_ != MPI_COMM_NULL) MPI_Comm_free(&user_);
}

Result<std::vector<int>> detect_world_nodes() {
  int world_rank = 0, world_size = 0;
  SW_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  SW_MPI(MPI_Comm_size(MPI_COMM_WORLD, &world_size));
  MPI_Comm shared;
  SW_MPI(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL,
                             &shared));
  int leader = world_rank;  // lowest world rank on this host names the node
  SW_MPI(MPI_Allreduce(MPI_IN_PLACE, &leader, 1, MPI_INT, MPI_MIN, shared));
  MPI_Comm_free(&shared);
  std::vector<int> leaders(world_size);
  SW_MPI(MPI_Allgather(&leader, 1, MPI_INT, leaders.data(), 1, MPI_INT, MPI_COMM_WORLD));
  std::map<int, int> index;
  for (int l : leaders) index[l] = 0;
  int next = 0;
  for (auto& [l, i] : index) i = next++;
  std::vector<int> nodes(world_size);
  for (int w = 0; w < world_size; ++w) nodes[w] = index[leaders[w]];
  return nodes;
}

Result<std::unique_ptr<MpiComm>> MpiComm::create_world(const CommOptions& opts) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return invalid_argument("MpiComm::create_world: MPI is not initialised");
  SW_RETURN_IF_ERROR(validate(opts));
  int rank = 0, size = 0;
  SW_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  SW_MPI(MPI_Comm_size(MPI_COMM_WORLD, &size));
  std::vector<int> nodes;
  if (opts.ranks_per_node > 0) {
    nodes = emulated_world_nodes(size, opts.ranks_per_node);
  } else {
    SW_ASSIGN_OR_RETURN(nodes, detect_world_nodes());
  }
  MPI_Comm coll, user;
  SW_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &coll));
  SW_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &user));
  MPI_Comm_set_errhandler(coll, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(user, MPI_ERRORS_RETURN);
  auto world = std::make_shared<std::vector<int>>(size);
  for (int r = 0; r < size; ++r) (*world)[r] = r;
  auto comm = std::make_unique<MpiComm>(
      coll, user, rank, world, std::make_shared<const std::vector<int>>(nodes), "world", opts);
  spdlog::debug("comm: MPI world of {} ranks, {}", size, comm->topology().describe());
  return comm;
}

Result<std::unique_ptr<P2pBatch>> MpiComm::post(Channel channel, int tag,
                                                const std::vector<PeerOp>& ops) {
  MPI_Comm c = channel == Channel::kCollective ? coll_ : user_;
  auto batch = std::make_unique<MpiBatch>(ops);
  for (size_t i = 0; i < ops.size(); ++i) {
    const PeerOp& op = ops[i];
    if (op.bytes > static_cast<size_t>(INT32_MAX))
      return unimplemented("MPI message of {} bytes to/from peer {} exceeds 2 GiB", op.bytes,
                           op.peer);
    int n = static_cast<int>(op.bytes);
    // Posted receives first in the list order; MPI matches by (source, tag, comm) in order.
    int rc = op.is_send ? MPI_Isend(op.send_data, n, MPI_BYTE, op.peer, tag, c, &batch->reqs_[i])
                        : MPI_Irecv(op.recv_data, n, MPI_BYTE, op.peer, tag, c, &batch->reqs_[i]);
    if (rc != MPI_SUCCESS)
      return unavailable("{} peer {}: {}", op.is_send ? "MPI_Isend to" : "MPI_Irecv from", op.peer,
                         mpi_error_string(rc));
  }
  return std::unique_ptr<P2pBatch>(std::move(batch));
}

Result<std::unique_ptr<Communicator>> MpiComm::make_child(int color, int key,
                                                          std::vector<int> members, int my_index) {
  // Every rank has reached split() (the bounded all_gather of colors proved it), so this
  // blocking call cannot wait on an absent peer.
  MPI_Comm coll = MPI_COMM_NULL, user = MPI_COMM_NULL;
  SW_MPI(MPI_Comm_split(coll_, color < 0 ? MPI_UNDEFINED : color, key, &coll));
  if (my_index < 0) return std::unique_ptr<Communicator>();
  SW_MPI(MPI_Comm_dup(coll, &user));
  MPI_Comm_set_errhandler(coll, MPI_ERRORS_RETURN);
  MPI_Comm_set_errhandler(user, MPI_ERRORS_RETURN);
  int child_rank = -1;
  MPI_Comm_rank(coll, &child_rank);
  if (child_rank != my_index)
    return internal_error("{}: MPI_Comm_split gave rank {}, expected {}", where("split"),
                          child_rank, my_index);
  auto world = std::make_shared<std::vector<int>>();
  for (int m : members) world->push_back(world_rank_of(m));
  return std::unique_ptr<Communicator>(
      std::make_unique<MpiComm>(coll, user, my_index, world, node_of_world_,
                                fmt::format("{}/split({})", name_, color), options_));
}

}  // namespace sw::comm
