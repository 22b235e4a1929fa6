// Counter-based random numbers (Philox4x32-10): a value is a pure function of
// (seed, stream, counter), so dummy weights can be generated for any slice of a tensor and
// sampling is reproducible and identical on the CPU and CUDA backends.
#pragma once

#include <cmath>
#include <cstdint>
#include <string_view>

#include "common/dtype_convert.h"  // SW_HOST_DEVICE (fmt-free: .cu files include this header)

namespace sw {

struct Philox4 {
  uint32_t v[4];
};

SW_HOST_DEVICE inline Philox4 philox4x32(uint64_t seed, uint64_t stream, uint64_t counter) {
  uint32_t c0 = static_cast<uint32_t>(counter), c1 = static_cast<uint32_t>(counter >> 32);
  uint32_t c2 = static_cast<uint32_t>(stream), c3 = static_cast<uint32_t>(stream >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in (0, 1]: never 0, so log() is safe.
SW_HOST_DEVICE inline float uint_to_unit_float(uint32_t x) {
  return (static_cast<float>(x >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

SW_HOST_DEVICE inline float philox_uniform(uint64_t seed, uint64_t stream, uint64_t counter) {
  return uint_to_unit_float(philox4x32(seed, stream, counter).v[0]);
}

// Standard normal by Box-Muller from one Philox draw.
SW_HOST_DEVICE inline float philox_normal(uint64_t seed, uint64_t stream, uint64_t counter) {
  Philox4 r = philox4x32(seed, stream, counter);
  float u1 = uint_to_unit_float(r.v[0]);
  float u2 = uint_to_unit_float(r.v[1]);
  return sqrtf(-2.0f * logf(u1)) * cosf(6.283185307179586f * u2);
}

// FNV-1a: stable across runs and platforms, used to turn tensor names into RNG streams.
inline uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace sw
