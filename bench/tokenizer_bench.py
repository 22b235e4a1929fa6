#!/usr/bin/env python3
"""HF `tokenizers` side of bench/tokenizer_bench.sh: makes the benchmark texts, or times
single-threaded Tokenizer.encode over them (one text per call, no encode_batch).

  tokenizer_bench.py make-texts OUT.jsonl [--mb 4]     # mixed prose, code, CJK, emoji, numbers
  tokenizer_bench.py run TEXTS.jsonl name=tokenizer.json ... [--seconds 3]  # JSON on stdout
Add a text source in make_texts.
"""
import os

os.environ["RAYON_NUM_THREADS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_texts(out, mb):
    rng = random.Random(1234)
    sources = []
    for pattern in ("**/*.md", "**/*.cpp", "**/*.h", "**/*.py", "**/*.sh", "**/*.yaml"):
        for path in sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True)):
            if "/build" in path or "/.git/" in path:
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    sources.append(f.read())
            except (UnicodeDecodeError, OSError):
                pass
    chunks = []
    for s in sources:  # paragraphs of prose and code
        chunks += [p for p in s.split("\n\n") if p.strip()]
    words = ["数据", "模型", "推理", "分布式", "東京", "こんにちは", "世界", "안녕하세요", "Привет",
             "мир", "Grüße", "naïve", "café", "😀", "👍🏽", "🚀", "é", "ß", "αβγ", "١٢٣"]
    texts, total = [], 0
    while total < mb * 1_000_000:
        kind = rng.random()
        if kind < 0.75:
            t = "\n\n".join(rng.choice(chunks) for _ in range(rng.randint(1, 4)))
        elif kind < 0.9:
            t = " ".join(rng.choice(words) for _ in range(rng.randint(20, 200)))
        else:
            t = " ".join(str(rng.randint(0, 10 ** rng.randint(1, 12))) for _ in range(100))
        texts.append(t)
        total += len(t.encode("utf-8"))
    with open(out, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    print(f"{out}: {len(texts)} texts, {total / 1e6:.2f} MB", file=sys.stderr)


def run(texts_path, specs, seconds, add_special):
    from tokenizers import Tokenizer
    with open(texts_path, encoding="utf-8") as f:
        texts = [json.loads(line) for line in f if line.strip()]
    total_bytes = sum(len(t.encode("utf-8")) for t in texts)
    results = []
    for spec in specs:
        name, _, path = spec.partition("=")
        tok = Tokenizer.from_file(path or name)
        tokens = sum(len(tok.encode(t, add_special_tokens=add_special).ids) for t in texts)
        passes, start = 0, time.perf_counter()
        while True:
            for t in texts:
                tok.encode(t, add_special_tokens=add_special)
            passes += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                break
        r = {"vocab": name, "texts": len(texts), "bytes": total_bytes, "tokens": tokens,
             "passes": passes, "seconds": elapsed, "mb_per_s": total_bytes * passes / elapsed / 1e6,
             "tokens_per_s": tokens * passes / elapsed}
        print(f"{name:20s} {r['mb_per_s']:8.2f} MB/s {r['tokens_per_s']:12.0f} tokens/s "
              f"({passes} passes, HF)", file=sys.stderr)
        results.append(r)
    print(json.dumps(results, indent=2))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make-texts")
    m.add_argument("out")
    m.add_argument("--mb", type=float, default=4)
    r = sub.add_parser("run")
    r.add_argument("texts")
    r.add_argument("tokenizers", nargs="+")
    r.add_argument("--seconds", type=float, default=3)
    r.add_argument("--add-special-tokens", action="store_true")
    a = ap.parse_args()
    if a.cmd == "make-texts":
        make_texts(a.out, a.mb)
    else:
        run(a.texts, a.tokenizers, a.seconds, a.add_special_tokens)


if __name__ == "__main__":
    main()
