#!/usr/bin/env python3
"""End-to-end figures of `shardwise generate` for bench/gpu/device_check.sh.

Runs one generate process per measurement on a model folder (config.json, dummy weights):
decode tokens/s at each batch size (every prompt of `--prompt-len` tokens, `--new-tokens`
generated, all sequences in one batch), and the TTFT of one long prompt; samples the GPU's
memory.used with nvidia-smi while each process runs. Writes `--out` (JSON) after every run,
so a run cut short by a timeout still leaves the earlier figures. Standard library only.
Extend: another measurement is one more entry in `runs` in main().
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time


class GpuMemorySampler:
    """Peak memory.used (MiB) of GPU 0 while active; None without nvidia-smi."""

    def __init__(self, period_ms=200):
        self.period_ms = period_ms
        self.proc = None
        self.samples = []
        self.thread = None

    def __enter__(self):
        if shutil.which("nvidia-smi") is None:
            return self
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                 "-i", "0", "-lms", str(self.period_ms)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.proc = None
            return self
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line.isdigit():
                self.samples.append(int(line))

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.thread.join(timeout=5)

    def peak_mib(self):
        return max(self.samples) if self.samples else None


def gpu_memory_used_mib():
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True, text=True, timeout=30).stdout.strip()
        return int(out.splitlines()[0]) if out else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None


def prompt_ids(index, length, vocab):
    # Deterministic, spread over the vocabulary, never 0 (some models treat it as padding).
    return [1 + (index * 7919 + j * 104729) % (vocab - 1) for j in range(length)]


def run_generate(args, name, prompts, new_tokens, extra, workdir):
    path = os.path.join(workdir, f"{name}.jsonl")
    with open(path, "w") as f:
        for p in prompts:
            f.write(json.dumps({"prompt_ids": p}) + "\n")
    cmd = [args.shardwise, "--log-level", "info", "generate", "--model", args.model,
           "--load-format", "dummy", "--device", args.device, "--dtype", args.dtype,
           "--prompts", path, "--max-new-tokens", str(new_tokens), "--ignore-eos", "--json",
           "--max-num-seqs", str(max(1, len(prompts)))] + extra
    print(f"[e2e] {name}: {' '.join(cmd)}", flush=True)
    base = gpu_memory_used_mib()
    t0 = time.monotonic()
    with GpuMemorySampler() as mem:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.run_timeout)
            rc, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = "timeout", e.stdout or "", e.stderr or ""
            out = out.decode() if isinstance(out, bytes) else out
            err = err.decode() if isinstance(err, bytes) else err
    wall = time.monotonic() - t0
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    run = {"name": name, "batch": len(prompts), "prompt_len": len(prompts[0]),
           "new_tokens": new_tokens, "exit_code": rc, "wall_s": round(wall, 2),
           "command": " ".join(cmd)}
    m = re.search(r"loaded .* in (\d+) ms", err)
    run["load_ms"] = int(m.group(1)) if m else None
    m = re.search(r"KV cache: (\d+) blocks", err)
    run["kv_blocks"] = int(m.group(1)) if m else None
    ok = [r for r in results if r.get("finish_reason") != "error" and "timing" in r]
    if ok:
        if new_tokens > 2:  # a run of 1-2 new tokens measures the prefill only
            tps = [r["timing"]["decode_tokens_per_s"] for r in ok]
            run["decode_tokens_per_s"] = round(sum(tps), 2)  # the sequences decode together
            run["decode_tokens_per_s_per_seq"] = round(sum(tps) / len(tps), 2)
        run["ttft_ms_mean"] = round(sum(r["timing"]["ttft_ms"] for r in ok) / len(ok), 2)
        run["generated_tokens"] = sum(len(r["output_ids"]) for r in ok)
    peak = mem.peak_mib()
    run["gpu_mem_peak_mib"] = peak
    run["gpu_mem_before_mib"] = base
    if rc != 0:
        run["stderr_tail"] = err[-2000:]
        print(f"[e2e] {name}: exit {rc}\n{err[-2000:]}", flush=True)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shardwise", required=True, help="the shardwise executable")
    ap.add_argument("--model", required=True, help="model folder (config.json) or preset")
    ap.add_argument("--label", default="", help="what the model is, for the report")
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--ttft-prompt-len", type=int, default=2048)
    ap.add_argument("--run-timeout", type=float, default=240)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    report = {"label": args.label, "model": args.model, "device": args.device,
              "dtype": args.dtype, "runs": []}

    def save():
        with open(args.out + ".tmp", "w") as f:
            json.dump(report, f, indent=1)
        os.replace(args.out + ".tmp", args.out)

    with tempfile.TemporaryDirectory() as work:
        runs = [(f"decode_b{b}", [prompt_ids(i, args.prompt_len, args.vocab) for i in range(b)],
                 args.new_tokens, []) for b in args.batches]
        runs.append(("ttft_long_prompt", [prompt_ids(0, args.ttft_prompt_len, args.vocab)], 2,
                     ["--max-num-batched-tokens", str(max(2048, args.ttft_prompt_len))]))
        for name, prompts, new_tokens, extra in runs:
            report["runs"].append(run_generate(args, name, prompts, new_tokens, extra, work))
            save()

    print(f"\n[e2e] {args.label or args.model} on {args.device}, {args.dtype}")
    print(f"{'run':<18} {'batch':>5} {'exit':>5} {'decode tok/s':>13} {'per seq':>9} "
          f"{'ttft ms':>9} {'load ms':>8} {'gpu MiB':>8}")
    for r in report["runs"]:
        def fmt(v, spec):
            return format(v, spec) if isinstance(v, (int, float)) else "-"
        print(f"{r['name']:<18} {r['batch']:>5} {str(r['exit_code']):>5} "
              f"{fmt(r.get('decode_tokens_per_s'), '13.1f')} "
              f"{fmt(r.get('decode_tokens_per_s_per_seq'), '9.1f')} "
              f"{fmt(r.get('ttft_ms_mean'), '9.1f')} {fmt(r.get('load_ms'), '8d')} "
              f"{fmt(r.get('gpu_mem_peak_mib'), '8d')}")
    return 0 if all(r["exit_code"] == 0 for r in report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
