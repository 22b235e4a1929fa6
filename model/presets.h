// Presets: config.json files shipped in model/presets/ and embedded in the binary at build
// time, so `--model tiny-moe` works from any directory. Add one: drop <name>.json there.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace sw::model {

std::vector<std::string> preset_names();
// The preset's config.json text, or NotFound listing the known presets.
Result<std::string> preset_config_json(const std::string& name);

}  // namespace sw::model
