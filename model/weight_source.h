// WeightSource: where a model's weights come from — a safetensors checkpoint or seeded dummy
// values (vLLM's load_format=dummy). Both read any slice of a named weight without touching
// the rest, so each rank loads only its shard.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "common/tensor.h"
#include "model/model_config.h"
#include "model/tensor_slice.h"

namespace sw::model {

enum class LoadFormat { kAuto, kSafetensors, kDummy };
Result<LoadFormat> parse_load_format(const std::string& s);  // auto | safetensors | dummy

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual std::string describe() const = 0;
  // Full shape of a weight; NotFound names the weight and the source.
  virtual Result<Shape> shape(const std::string& name) const = 0;
  // `slice` of weight `name`, converted to `dtype`, as a new host tensor.
  virtual Result<Tensor> read(const std::string& name, const TensorSlice& slice,
                              DType dtype) const = 0;
};

// Dummy weights: value(name, i) = std(kind, shape) * N(0,1) drawn by Philox from
// (seed, hash(name), i), so every slice of a weight is the same as the corresponding part of
// the whole. Scales keep activations finite over many layers: linear weights 1/sqrt(fan_in),
// norms 1 + 0.05 N(0,1), biases 0.02 N(0,1), embeddings N(0,1).
std::unique_ptr<WeightSource> make_dummy_source(const ModelConfig& config, uint64_t seed);

// Opens the checkpoint in `model_dir` and checks that it holds every weight the config needs
// with the right shape (errors name the tensor, the expected and the found shape).
Result<std::unique_ptr<WeightSource>> open_safetensors_source(const ModelConfig& config,
                                                              const std::string& model_dir);

// `model` as given on the command line (folder or preset name). kAuto: safetensors when the
// folder has them, dummy for a preset.
Result<std::unique_ptr<WeightSource>> open_weight_source(const ModelConfig& config,
                                                         const std::string& model,
                                                         LoadFormat format, uint64_t seed = 0);

}  // namespace sw::model
