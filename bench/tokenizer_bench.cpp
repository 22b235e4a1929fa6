// tokenizer_bench: single-threaded encode throughput (MB/s, tokens/s) of tokenizer/ on a
// JSONL file of texts, one text per encode call; bench/tokenizer_bench.sh runs HF `tokenizers`
// on the same texts and joins the two. Add a measurement: a field in the JSON it prints.
//   tokenizer_bench --texts texts.jsonl --tokenizer name=path/tokenizer.json ... [--seconds 3]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  CLI::App app("tokenizer encode throughput, single thread");
  std::string texts_path;
  std::vector<std::string> tokenizers;
  double seconds = 3.0;
  bool add_special = false;
  app.add_option("--texts", texts_path, "JSONL file: one JSON string (a text) per line")
      ->required();
  app.add_option("--tokenizer", tokenizers, "name=path/to/tokenizer.json (repeatable)")->required();
  app.add_option("--seconds", seconds, "minimum timed seconds per tokenizer");
  app.add_flag("--add-special-tokens", add_special, "encode with add_special_tokens=True");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::string> texts;
  size_t total_bytes = 0;
  {
    std::ifstream in(texts_path);
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      texts.push_back(nlohmann::json::parse(line).get<std::string>());
      total_bytes += texts.back().size();
    }
  }
  if (texts.empty()) {
    std::fprintf(stderr, "tokenizer_bench: no texts in %s\n", texts_path.c_str());
    return 1;
  }
  nlohmann::json results = nlohmann::json::array();
  for (const std::string& spec : tokenizers) {
    const size_t eq = spec.find('=');
    const std::string name = eq == std::string::npos ? spec : spec.substr(0, eq);
    const std::string path = eq == std::string::npos ? spec : spec.substr(eq + 1);
    auto tok = sw::tokenizer::Tokenizer::from_file(path);
    if (!tok.ok()) {
      std::fprintf(stderr, "tokenizer_bench: %s\n", tok.status().to_string().c_str());
      return 1;
    }
    using Clock = std::chrono::steady_clock;
    // One untimed pass (also counts the tokens), then whole passes until `seconds` passed.
    size_t tokens_per_pass = 0;
    for (const auto& t : texts) tokens_per_pass += (*tok)->encode(t, add_special).size();
    size_t passes = 0;
    const auto start = Clock::now();
    double elapsed = 0;
    do {
      size_t n = 0;
      for (const auto& t : texts) n += (*tok)->encode(t, add_special).size();
      if (n != tokens_per_pass) {
        std::fprintf(stderr, "tokenizer_bench: %s: encode is not deterministic\n", name.c_str());
        return 1;
      }
      ++passes;
      elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    } while (elapsed < seconds);
    const double mb_s = static_cast<double>(total_bytes) * passes / elapsed / 1e6;
    const double tok_s = static_cast<double>(tokens_per_pass) * passes / elapsed;
    results.push_back({{"vocab", name},
                       {"texts", texts.size()},
                       {"bytes", total_bytes},
                       {"tokens", tokens_per_pass},
                       {"passes", passes},
                       {"seconds", elapsed},
                       {"mb_per_s", mb_s},
                       {"tokens_per_s", tok_s}});
    std::fprintf(stderr, "%-20s %8.2f MB/s %12.0f tokens/s (%zu passes)\n", name.c_str(), mb_s,
                 tok_s, passes);
  }
  std::cout << results.dump(2) << "\n";
  return 0;
}
