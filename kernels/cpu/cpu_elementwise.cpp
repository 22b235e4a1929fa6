// CPU row-wise ops: RMSNorm (optionally fused with the residual add), RoPE, SiLU-and-mul,
// vocab-parallel embedding, add, dtype conversion and the paged KV-cache write. Each row is
// widened to float32, computed, and rounded once on store.
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_ops.h"

namespace sw::kernels::cpu {

Status rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out, Tensor* residual) {
  SW_RETURN_IF_ERROR(validate_rms_norm(Device::kCpu, x, weight, out, residual));
  const int64_t h = x.dim(-1);
  const int64_t rows = h == 0 ? 0 : x.numel() / h;
  std::vector<float> wv = to_f32(weight);
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(h)), tmp(static_cast<size_t>(h));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      load_row(x.data(), x.dtype(), r * h, h, row.data());
      if (residual) {
        // vLLM's fused_add_rms_norm: the residual is stored in its dtype, and the norm is
        // taken of that rounded value so the next layer's residual and this norm agree.
        load_row(residual->data(), residual->dtype(), r * h, h, tmp.data());
        for (int64_t i = 0; i < h; ++i) tmp[i] += row[i];
        store_row(residual->data(), residual->dtype(), r * h, h, tmp.data());
        load_row(residual->data(), residual->dtype(), r * h, h, row.data());
      }
      float ss = 0.f;
      for (int64_t i = 0; i < h; ++i) ss += row[i] * row[i];
      const float inv = 1.0f / std::sqrt(ss / static_cast<float>(h) + eps);
      for (int64_t i = 0; i < h; ++i) row[i] = row[i] * inv * wv[i];
      store_row(out.data(), out.dtype(), r * h, h, row.data());
    }
  }
  return Status::ok_status();
}

namespace {

// Rotates the first `rot` dims of every head of one token of t: [T, heads, D] in place.
void rope_token(Tensor& t, int64_t token, int64_t pos, const float* inv_freq, int64_t half,
                RopeLayout layout, float* row) {
  const int64_t heads = t.dim(1), d = t.dim(2);
  std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * inv_freq[i];
    cs[i] = std::cos(angle);
    sn[i] = std::sin(angle);
  }
  for (int64_t h = 0; h < heads; ++h) {
    const int64_t off = (token * heads + h) * d;
    load_row(t.data(), t.dtype(), off, d, row);
    for (int64_t i = 0; i < half; ++i) {
      const int64_t a = layout == RopeLayout::kNeox ? i : 2 * i;
      const int64_t b = layout == RopeLayout::kNeox ? i + half : 2 * i + 1;
      const float x0 = row[a], x1 = row[b];
      row[a] = x0 * cs[i] - x1 * sn[i];
      row[b] = x1 * cs[i] + x0 * sn[i];
    }
    store_row(t.data(), t.dtype(), off, 2 * half, row);
  }
}

}  // namespace

Status rope(Tensor& q, Tensor& k, const Tensor& positions, const Tensor& inv_freq,
            RopeLayout layout) {
  SW_RETURN_IF_ERROR(validate_rope(Device::kCpu, q, k, positions, inv_freq));
  const int64_t t = q.dim(0), d = q.dim(2), half = inv_freq.dim(0);
  const int32_t* pos = positions.data_as<int32_t>();
  const float* freq = inv_freq.data_as<float>();
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(d));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < t; ++i) {
      rope_token(q, i, pos[i], freq, half, layout, row.data());
      rope_token(k, i, pos[i], freq, half, layout, row.data());
    }
  }
  return Status::ok_status();
}

Status silu_and_mul(const Tensor& x, Tensor& out) {
  SW_RETURN_IF_ERROR(validate_silu_and_mul(Device::kCpu, x, out));
  const int64_t t = x.dim(0), i2 = x.dim(1), inter = i2 / 2;
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(i2));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < t; ++r) {
      load_row(x.data(), x.dtype(), r * i2, i2, row.data());
      for (int64_t i = 0; i < inter; ++i) {
        const float g = row[i];
        row[i] = g / (1.0f + std::exp(-g)) * row[inter + i];
      }
      store_row(out.data(), out.dtype(), r * inter, inter, row.data());
    }
  }
  return Status::ok_status();
}

Status embedding(const Tensor& ids, const Tensor& table, int64_t vocab_offset, Tensor& out) {
  SW_RETURN_IF_ERROR(validate_embedding(Device::kCpu, ids, table, out));
  const int64_t t = ids.dim(0), v = table.dim(0), h = table.dim(1);
  const int32_t* id = ids.data_as<int32_t>();
#pragma omp parallel
  {
    std::vector<float> row(static_cast<size_t>(h));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < t; ++i) {
      const int64_t local = static_cast<int64_t>(id[i]) - vocab_offset;
      if (local >= 0 && local < v) {
        load_row(table.data(), table.dtype(), local * h, h, row.data());
      } else {
        std::fill(row.begin(), row.end(), 0.f);
      }
      store_row(out.data(), out.dtype(), i * h, h, row.data());
    }
  }
  return Status::ok_status();
}

Status add(Tensor& x, const Tensor& y) {
  SW_RETURN_IF_ERROR(validate_add(Device::kCpu, x, y));
  constexpr int64_t kChunk = 4096;
  const int64_t n = x.numel();
#pragma omp parallel
  {
    float a[kChunk], b[kChunk];
#pragma omp for schedule(static)
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
      const int64_t len = std::min(kChunk, n - c0);
      load_row(x.data(), x.dtype(), c0, len, a);
      load_row(y.data(), y.dtype(), c0, len, b);
      for (int64_t i = 0; i < len; ++i) a[i] += b[i];
      store_row(x.data(), x.dtype(), c0, len, a);
    }
  }
  return Status::ok_status();
}

Status convert(const Tensor& src, Tensor& dst) {
  SW_RETURN_IF_ERROR(validate_convert(Device::kCpu, src, dst));
  if (src.dtype() == dst.dtype()) {
    if (src.nbytes() > 0 && src.data() != dst.data())
      std::memmove(dst.data(), src.data(), src.nbytes());
    return Status::ok_status();
  }
  SW_RETURN_IF_ERROR(validate_convert_dtypes(src, dst));
  constexpr int64_t kChunk = 4096;
  const int64_t n = src.numel();
#pragma omp parallel
  {
    float a[kChunk];
#pragma omp for schedule(static)
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
      const int64_t len = std::min(kChunk, n - c0);
      load_row(src.data(), src.dtype(), c0, len, a);
      store_row(dst.data(), dst.dtype(), c0, len, a);
    }
  }
  return Status::ok_status();
}

Status kv_cache_write(const Tensor& k, const Tensor& v, const Tensor& slot_mapping, Tensor& k_cache,
                      Tensor& v_cache) {
  SW_RETURN_IF_ERROR(validate_kv_cache_write(Device::kCpu, k, v, slot_mapping, k_cache, v_cache));
  const int64_t t = k.dim(0), hk = k.dim(1), d = k.dim(2);
  const int64_t nb = k_cache.dim(0), bs = k_cache.dim(1);
  const int32_t* slots = slot_mapping.data_as<int32_t>();
  for (int64_t i = 0; i < t; ++i)
    if (slots[i] < -1 || slots[i] >= nb * bs)
      return invalid_argument("kv_cache_write: slot_mapping[{}]={} outside [-1, {}) for k_cache {}",
                              i, slots[i], nb * bs, desc(k_cache));
  const int64_t row = hk * d;
#pragma omp parallel
  {
    std::vector<float> buf(static_cast<size_t>(row));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < t; ++i) {
      if (slots[i] < 0) continue;
      load_row(k.data(), k.dtype(), i * row, row, buf.data());
      store_row(k_cache.data(), k_cache.dtype(), slots[i] * row, row, buf.data());
      load_row(v.data(), v.dtype(), i * row, row, buf.data());
      store_row(v_cache.data(), v_cache.dtype(), slots[i] * row, row, buf.data());
    }
  }
  return Status::ok_status();
}

}  // namespace sw::kernels::cpu
