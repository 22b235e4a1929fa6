// Upper bounds on every size, count and duration read from config.json, the cluster YAML or
// the environment: parsers refuse larger values with an error naming the key, before anything
// is allocated, multiplied or converted to std::chrono. One place, so every parser, the CLI
// and docs/input-limits.md agree. Raise a bound here (and there) when a real model
// needs it; every product of bounded values must still fit in int64_t (see kMaxParameters).
#pragma once

#include <cstdint>

namespace sw::limits {

// --- Model (config.json). Generous next to the largest published models (vocabularies of
// ~256k, hidden 16k-25k, FFN 53k, 126 layers, 128 heads, 384 experts).
inline constexpr int64_t kMaxVocabSize = int64_t{1} << 22;           // 4,194,304 tokens
inline constexpr int64_t kMaxHiddenSize = int64_t{1} << 16;          // 65,536
inline constexpr int64_t kMaxIntermediateSize = int64_t{1} << 18;    // 262,144 (dense and expert)
inline constexpr int kMaxLayers = 512;                               // num_hidden_layers
inline constexpr int kMaxAttentionHeads = 1024;                      // q and KV heads
inline constexpr int64_t kMaxHeadDim = 1024;                         // CUDA attention: <= 256
inline constexpr int kMaxExperts = 1024;                             // CUDA moe_assign's limit
inline constexpr int64_t kMaxPositionEmbeddings = int64_t{1} << 24;  // 16,777,216 tokens
// All weights together (num_parameters()), checked in floating point after the sizes above:
// their product alone allows 2.7e16 parameters, beyond any machine. With this bound every
// derived int64 count (bytes per dtype, per rank, activations) stays far from overflow.
inline constexpr int64_t kMaxParameters = int64_t{1} << 44;  // 1.76e13 parameters

// --- Runtime (cluster YAML runtime.*).
inline constexpr int kMaxKvBlockSize = 1024;                       // tokens per KV block
inline constexpr int kMaxNumSeqs = 1 << 16;                        // 65,536 sequences per step
inline constexpr int64_t kMaxNumBatchedTokens = int64_t{1} << 20;  // 1,048,576 tokens per step
inline constexpr double kMaxDeviceMemoryGib = 65536;               // 64 TiB for one device
inline constexpr int64_t kMaxKvBlocks = int64_t{1} << 32;          // runtime.num_kv_blocks

// --- Layout (cluster YAML pools.*, cluster.ranks_per_node).
inline constexpr int kMaxWorldSize = 1 << 20;  // ranks of one job, coordinator included

// --- Durations (cluster.*, SHARDWISE_*), checked before any std::chrono conversion: the
// steady clock counts int64 nanoseconds, so about 292 years would wrap around.
inline constexpr double kMaxTimeoutS = 1e6;             // about 11.6 days
inline constexpr double kMinHeartbeatIntervalS = 1e-3;  // faster would only flood the channel
inline constexpr double kMaxHeartbeatIntervalS = 3600;  // and interval x miss_count <= kMaxTimeoutS

// --- Text inputs read whole before parsing.
inline constexpr int64_t kMaxConfigFileBytes = int64_t{16} << 20;  // config.json, cluster YAML
inline constexpr int kMaxYamlNodes = 100000;  // nodes walked in a cluster file, aliases expanded

}  // namespace sw::limits
