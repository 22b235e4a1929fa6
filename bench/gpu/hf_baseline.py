#!/usr/bin/env python3
"""Hugging Face transformers baseline for bench/gpu/device_check.sh.

Builds the model of `--model-dir/config.json` with random weights on the GPU (same config and
dtype as Shardwise's dummy-weight run) and times `generate` (greedy, exactly `--new-tokens`
new tokens) at each batch size: eagerly, then with cache_implementation="static" and
torch.compile if asked. Decode tokens/s = batch * (new_tokens - 1) / (time of the whole
generate - time of a 1-token generate, i.e. the prefill). Writes `--out` (JSON) after every
measurement. Without torch or a CUDA device it writes why it skipped and exits 0.
Extend: another mode is one more entry in MODES.
"""
import argparse
import json
import os
import sys
import time


def save(report, path):
    with open(path + ".tmp", "w") as f:
        json.dump(report, f, indent=1)
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True, help="folder with config.json")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--modes", default="eager,compile",
                    help="comma-separated: eager, compile (static cache + torch.compile)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    report = {"model_dir": args.model_dir, "dtype": args.dtype, "runs": []}

    try:
        import torch
        import transformers
    except ImportError as e:
        report["skipped"] = f"torch/transformers not installed ({e.name})"
        print(f"[hf_baseline] skipped: {report['skipped']}")
        save(report, args.out)
        return 0
    if not torch.cuda.is_available():
        report["skipped"] = "no CUDA device visible to torch"
        print(f"[hf_baseline] skipped: {report['skipped']}")
        save(report, args.out)
        return 0

    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16,
             "float32": torch.float32}[args.dtype]
    report.update({"torch": torch.__version__, "transformers": transformers.__version__,
                   "device": torch.cuda.get_device_name(0)})
    config = transformers.AutoConfig.from_pretrained(args.model_dir)
    report["model_type"] = config.model_type
    t0 = time.monotonic()
    torch.manual_seed(0)
    # transformers 5 calls the argument `dtype`, 4.x `torch_dtype`.
    major = int(transformers.__version__.split(".")[0])
    dtype_kw = {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}
    with torch.device("cuda"):  # random init straight on the GPU
        model = transformers.AutoModelForCausalLM.from_config(config, **dtype_kw)
    model = model.to(device="cuda", dtype=dtype).eval()
    torch.cuda.synchronize()
    report["init_s"] = round(time.monotonic() - t0, 2)
    report["parameters"] = sum(p.numel() for p in model.parameters())
    print(f"[hf_baseline] {config.model_type}, {report['parameters'] / 1e9:.2f}B parameters, "
          f"random init in {report['init_s']} s on {report['device']}", flush=True)
    model.generation_config.eos_token_id = None  # exactly new_tokens, as --ignore-eos
    model.generation_config.pad_token_id = 0
    save(report, args.out)

    def timed_generate(ids, new_tokens, **kw):
        torch.cuda.synchronize()
        t = time.monotonic()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kw)
        torch.cuda.synchronize()
        assert out.shape[1] == ids.shape[1] + new_tokens, out.shape
        return time.monotonic() - t

    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        kw = {}
        compiled_by = None
        if mode == "compile":
            kw["cache_implementation"] = "static"
            if hasattr(model.generation_config, "compile_config"):
                compiled_by = "transformers (static cache auto-compiles the decode forward)"
            else:
                model.forward = torch.compile(model.forward, mode="reduce-overhead")
                compiled_by = "torch.compile(model.forward, mode='reduce-overhead')"
        elif mode != "eager":
            raise SystemExit(f"unknown mode {mode}")
        for batch in args.batches:
            gen = torch.Generator(device="cpu").manual_seed(batch)
            ids = torch.randint(1, config.vocab_size, (batch, args.prompt_len),
                                generator=gen).cuda()
            run = {"mode": mode, "batch": batch, "prompt_len": args.prompt_len,
                   "new_tokens": args.new_tokens}
            if compiled_by:
                run["compiled_by"] = compiled_by
            try:
                torch.cuda.reset_peak_memory_stats()
                t_warm = time.monotonic()
                timed_generate(ids, 4, **kw)  # warm-up (compiles in compile mode)
                run["warmup_s"] = round(time.monotonic() - t_warm, 2)
                prefill = min(timed_generate(ids, 1, **kw) for _ in range(2))
                total = timed_generate(ids, args.new_tokens, **kw)
                run["prefill_ms"] = round(prefill * 1e3, 2)
                run["total_s"] = round(total, 3)
                run["decode_tokens_per_s"] = round(
                    batch * (args.new_tokens - 1) / max(total - prefill, 1e-9), 2)
                run["gpu_mem_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
            except Exception as e:  # a mode that fails must not lose the others
                run["error"] = f"{type(e).__name__}: {e}"[:2000]
            report["runs"].append(run)
            save(report, args.out)
            print(f"[hf_baseline] {mode:<8} batch {batch:>3}: "
                  + (f"decode {run['decode_tokens_per_s']:.1f} tok/s, prefill "
                     f"{run['prefill_ms']:.1f} ms, warm-up {run['warmup_s']} s"
                     if "error" not in run else run["error"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
