// Preset lookup over the config.json texts embedded by CMake (presets_data.inc).
#include "model/presets.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <utility>

namespace sw::model {

namespace {
struct PresetEntry {
  const char* name;
  const char* json;
};
const PresetEntry kPresets[] = {
#include "presets_data.inc"
};
}  // namespace

std::vector<std::string> preset_names() {
  std::vector<std::string> names;
  for (const auto& p : kPresets) names.emplace_back(p.name);
  return names;
}

Result<std::string> preset_config_json(const std::string& name) {
  for (const auto& p : kPresets)
    if (name == p.name) return std::string(p.json);
  return not_found(
      "unknown model '{}': not a folder with config.json and not a preset (presets: {})", name,
      fmt::join(preset_names(), ", "));
}

}  // namespace sw::model
