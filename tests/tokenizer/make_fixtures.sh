#!/usr/bin/env bash
# The Hugging Face reference fixtures for the C++ tokenizer's differential tests (format:
# tests/tokenizer/README.md). Made at test time, never committed.
#
#   tests/tokenizer/make_fixtures.sh BUILD_DIR
#
# Runs tests/pyref/setup.sh (the cached virtualenv and llama-cpp-python sdist), then
# make_fixtures.py into BUILD_DIR/tokenizer-fixtures unless that folder is already complete for
# the same make_fixtures.py (a stamp holds its hash and the tokenizers version). Prints the folder
# on stdout; progress and errors go to stderr. Exits non-zero, with a message, when anything
# cannot be made.
# Env: SHARDWISE_FIXTURE_CASES (default 10000) lines of cases.jsonl per vocabulary.
set -euo pipefail
if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
mkdir -p "$1"
out="$(cd "$1" && pwd)/tokenizer-fixtures"
cases="${SHARDWISE_FIXTURE_CASES:-10000}"

if ! pyref="$("$repo/tests/pyref/setup.sh")" || [ ! -x "$pyref/venv/bin/python" ]; then
  echo "make_fixtures.sh: FAILED: tests/pyref/setup.sh did not make the Python references" >&2
  exit 1
fi
py="$pyref/venv/bin/python"
if ! tok_version="$("$py" -c 'import tokenizers; print(tokenizers.__version__)')"; then
  echo "make_fixtures.sh: FAILED: $py cannot import tokenizers" >&2
  exit 1
fi
want="make_fixtures.py $(sha256sum "$here/make_fixtures.py" | cut -d' ' -f1) tokenizers $tok_version cases $cases"

# one maker at a time (tests may start in parallel); the others wait and reuse its result
exec 9>"$out.lock"
if command -v flock >/dev/null; then
  flock 9
fi
stamp="$out/.complete"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$out/vocabs.json" ]; then
  echo "$out"
  exit 0
fi
rm -rf "$out"
mkdir -p "$out"
if ! "$py" "$here/make_fixtures.py" --pyref "$pyref" --out "$out" --cases "$cases" >&2; then
  echo "make_fixtures.sh: FAILED: make_fixtures.py could not make every fixture (see above); $out is incomplete" >&2
  exit 1
fi
if [ ! -f "$out/vocabs.json" ]; then
  echo "make_fixtures.sh: FAILED: make_fixtures.py wrote no $out/vocabs.json" >&2
  exit 1
fi
printf '%s\n' "$want" >"$stamp"
echo "$out"
