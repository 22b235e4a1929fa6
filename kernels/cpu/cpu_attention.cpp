// CPU paged attention: causal prefill over a variable-length batch and single-token decode,
// both reading K/V through block tables. One (query token, head) at a time, scores and a
// max-subtracted softmax in float32; parallel over tokens x heads.
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_ops.h"

namespace sw::kernels::cpu {
namespace {

struct PagedKv {
  const Tensor* k_cache;
  const Tensor* v_cache;
  const int32_t* block_table;  // this sequence's row of block_tables
  int64_t block_size, num_kv_heads, head_dim;

  // Element offset of (position, kv_head) in the caches.
  int64_t offset(int64_t pos, int64_t kv_head) const {
    const int64_t block = block_table[pos / block_size];
    return ((block * block_size + pos % block_size) * num_kv_heads + kv_head) * head_dim;
  }
};

// out_row[D] = softmax(scale * q . K[0..n)) @ V[0..n) for one query head; zeros when n == 0.
void attend(const float* q, const PagedKv& kv, int64_t kv_head, int64_t n, float scale,
            std::vector<float>& scores, std::vector<float>& row, float* out) {
  const int64_t d = kv.head_dim;
  std::fill(out, out + d, 0.f);
  if (n == 0) return;
  scores.resize(static_cast<size_t>(n));
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t p = 0; p < n; ++p) {
    load_row(kv.k_cache->data(), kv.k_cache->dtype(), kv.offset(p, kv_head), d, row.data());
    float s = 0.f;
    for (int64_t i = 0; i < d; ++i) s += q[i] * row[i];
    scores[p] = s * scale;
    m = std::max(m, scores[p]);
  }
  float denom = 0.f;
  for (int64_t p = 0; p < n; ++p) {
    const float e = std::exp(scores[p] - m);
    denom += e;
    load_row(kv.v_cache->data(), kv.v_cache->dtype(), kv.offset(p, kv_head), d, row.data());
    for (int64_t i = 0; i < d; ++i) out[i] += e * row[i];
  }
  const float inv = 1.0f / denom;
  for (int64_t i = 0; i < d; ++i) out[i] *= inv;
}

// Every block a sequence of `len` positions reads must be a real block of the cache.
Status check_block_table(const char* op, const Tensor& block_tables, int64_t b, int64_t len,
                         const Tensor& k_cache) {
  const int64_t max_blocks = block_tables.dim(1), bs = k_cache.dim(1), nb = k_cache.dim(0);
  const int64_t needed = (len + bs - 1) / bs;
  if (needed > max_blocks)
    return invalid_argument(
        "{}: sequence {} has {} positions, more than block_tables {} holds "
        "at block_size {}",
        op, b, len, desc(block_tables), bs);
  const int32_t* row = block_tables.data_as<int32_t>() + b * max_blocks;
  for (int64_t i = 0; i < needed; ++i)
    if (row[i] < 0 || row[i] >= nb)
      return invalid_argument("{}: block_tables[{}, {}]={} outside k_cache {}", op, b, i, row[i],
                              desc(k_cache));
  return Status::ok_status();
}

}  // namespace

Status attention_prefill(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                         const Tensor& query_start_loc, const Tensor& seq_lens,
                         const Tensor& block_tables, const AttentionParams& params, Tensor& out) {
  const char* op = "attention_prefill";
  SW_RETURN_IF_ERROR(validate_attention_prefill(Device::kCpu, q, k_cache, v_cache, query_start_loc,
                                                seq_lens, block_tables, out));
  const int64_t t = q.dim(0), hq = q.dim(1), d = q.dim(2), b = seq_lens.dim(0);
  const int64_t hk = k_cache.dim(2);
  const int32_t* qsl = query_start_loc.data_as<int32_t>();
  const int32_t* lens = seq_lens.data_as<int32_t>();
  if (b > 0 && (qsl[0] != 0 || qsl[b] > t))
    return invalid_argument(
        "{}: query_start_loc must start at 0 and end <= T={} (q {}), got {} .. {}", op, t, desc(q),
        qsl[0], qsl[b]);
  for (int64_t s = 0; s < b; ++s) {
    const int64_t q_len = qsl[s + 1] - qsl[s];
    if (q_len < 0 || q_len > lens[s])
      return invalid_argument("{}: sequence {} has {} new tokens but seq_lens[{}]={}", op, s, q_len,
                              s, lens[s]);
    SW_RETURN_IF_ERROR(check_block_table(op, block_tables, s, lens[s], k_cache));
  }
  const int64_t group = hq / hk;
  const int64_t total = b > 0 ? qsl[b] : 0;
  // token -> sequence map so the parallel loop is flat over (token, head).
  std::vector<int32_t> seq_of(static_cast<size_t>(total));
  for (int64_t s = 0; s < b; ++s)
    for (int64_t i = qsl[s]; i < qsl[s + 1]; ++i) seq_of[i] = static_cast<int32_t>(s);
#pragma omp parallel
  {
    std::vector<float> qrow(static_cast<size_t>(d)), orow(static_cast<size_t>(d)),
        row(static_cast<size_t>(d)), scores;
#pragma omp for schedule(dynamic, 4)
    for (int64_t work = 0; work < total * hq; ++work) {
      const int64_t i = work / hq, h = work % hq, s = seq_of[i];
      const int64_t q_len = qsl[s + 1] - qsl[s];
      const int64_t pos = lens[s] - q_len + (i - qsl[s]);
      PagedKv kv{
          &k_cache,       &v_cache, block_tables.data_as<int32_t>() + s * block_tables.dim(1),
          k_cache.dim(1), hk,       d};
      load_row(q.data(), q.dtype(), (i * hq + h) * d, d, qrow.data());
      attend(qrow.data(), kv, h / group, pos + 1, params.scale, scores, row, orow.data());
      store_row(out.data(), out.dtype(), (i * hq + h) * d, d, orow.data());
    }
  }
  return Status::ok_status();
}

Status attention_decode(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        const Tensor& seq_lens, const Tensor& block_tables,
                        const AttentionParams& params, Tensor& out) {
  const char* op = "attention_decode";
  SW_RETURN_IF_ERROR(
      validate_attention_decode(Device::kCpu, q, k_cache, v_cache, seq_lens, block_tables, out));
  const int64_t b = q.dim(0), hq = q.dim(1), d = q.dim(2), hk = k_cache.dim(2);
  const int32_t* lens = seq_lens.data_as<int32_t>();
  for (int64_t s = 0; s < b; ++s) {
    if (lens[s] < 0) return invalid_argument("{}: seq_lens[{}]={} is negative", op, s, lens[s]);
    SW_RETURN_IF_ERROR(check_block_table(op, block_tables, s, lens[s], k_cache));
  }
  const int64_t group = hq / hk;
#pragma omp parallel
  {
    std::vector<float> qrow(static_cast<size_t>(d)), orow(static_cast<size_t>(d)),
        row(static_cast<size_t>(d)), scores;
#pragma omp for schedule(dynamic, 1)
    for (int64_t work = 0; work < b * hq; ++work) {
      const int64_t s = work / hq, h = work % hq;
      PagedKv kv{
          &k_cache,       &v_cache, block_tables.data_as<int32_t>() + s * block_tables.dim(1),
          k_cache.dim(1), hk,       d};
      load_row(q.data(), q.dtype(), (s * hq + h) * d, d, qrow.data());
      // seq_lens[b] == 0 (a padding slot) attends to nothing and yields zeros.
      attend(qrow.data(), kv, h / group, lens[s], params.scale, scores, row, orow.data());
      store_row(out.data(), out.dtype(), (s * hq + h) * d, d, orow.data());
    }
  }
  return Status::ok_status();
}

}  // namespace sw::kernels::cpu
