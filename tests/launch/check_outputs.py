#!/usr/bin/env python3
"""Checks what a launched job printed, for the launch and Slurm tests (tests/launch/,
tests/slurm/). Add a check: a subcommand below and a line in the calling script.

  check_outputs.py generate REFERENCE GOT [--lengths 4,4,8,4]
      GOT (a job's stdout or Slurm log, other lines ignored) has exactly the JSON lines of
      REFERENCE (a single-process `shardwise generate --json`): same count, same index order,
      same prompt_ids and output_ids, finish_reason "length"; --lengths: output tokens each.
  check_outputs.py bench RESULT.json [--exact-lengths] [--layout TEXT]
      a `shardwise bench --save-result` file: "completed" equals "num_prompts" (> 0), "failed"
      is 0 and every entry of "errors" is empty; --exact-lengths: every request generated
      exactly its expected_output_len (runs with --ignore-eos); --layout: the engine's layout
      line contains TEXT.
  check_outputs.py launch-env PLAN_ENV WORLD_SIZE
      PLAN_ENV (the output of `plan --launch-env`) is well formed and its SW_WORLD_SIZE equals
      WORLD_SIZE (the output of `plan --print-world-size`).
Exit status 0 when the check holds; 1 with the reason on stderr otherwise.
"""
import argparse
import json
import re
import sys


def fail(msg):
    print(f"check_outputs: {msg}", file=sys.stderr)
    sys.exit(1)


def json_lines(path):
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                fail(f"{path} line {n}: not JSON ({e}): {line[:200]}")
            if "output_ids" in obj:
                out.append(obj)
    return out


def check_generate(args):
    want, got = json_lines(args.reference), json_lines(args.got)
    if not want:
        fail(f"{args.reference}: no JSON lines with output_ids (the reference run failed?)")
    if len(got) != len(want):
        fail(f"{args.got}: {len(got)} JSON line(s) with output_ids, expected {len(want)}")
    lengths = [int(x) for x in args.lengths.split(",")] if args.lengths else None
    if lengths and len(lengths) != len(want):
        fail(f"--lengths has {len(lengths)} values for {len(want)} prompts")
    for i, (w, g) in enumerate(zip(want, got)):
        for key in ("index", "prompt_ids", "output_ids"):
            if g.get(key) != w.get(key):
                fail(f"{args.got}: line {i}: {key} {g.get(key)} != reference {w.get(key)}")
        if g.get("finish_reason") != "length":
            fail(f"{args.got}: line {i}: finish_reason {g.get('finish_reason')!r}")
        if lengths and len(g["output_ids"]) != lengths[i]:
            fail(f"{args.got}: line {i}: {len(g['output_ids'])} tokens, expected {lengths[i]}")
    print(f"check_outputs: {len(got)} JSON lines equal the reference")


def check_bench(args):
    try:
        with open(args.result, encoding="utf-8") as f:
            r = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        fail(f"{args.result}: {e}")
    for key in ("completed", "num_prompts"):
        if not isinstance(r.get(key), int):
            fail(f"{args.result}: no integer '{key}' (keys: {sorted(r)})")
    if r["num_prompts"] <= 0 or r["completed"] != r["num_prompts"]:
        fail(f"{args.result}: completed {r['completed']} of num_prompts {r['num_prompts']}")
    if r.get("failed", 0) != 0:
        fail(f"{args.result}: failed = {r['failed']}")
    errors = [e for e in r.get("errors", []) if e]
    if errors:
        fail(f"{args.result}: {len(errors)} error(s), the first: {errors[0]}")
    if args.exact_lengths:
        for q in r.get("requests", []):
            if q["output_len"] != q["expected_output_len"]:
                fail(f"{args.result}: request {q['index']}: {q['output_len']} tokens, expected "
                     f"{q['expected_output_len']}")
        if len(r.get("requests", [])) != r["num_prompts"]:
            fail(f"{args.result}: {len(r.get('requests', []))} request records")
    if args.layout:
        layout = r.get("shardwise", {}).get("info", {}).get("layout", "")
        if args.layout not in layout:
            fail(f"{args.result}: layout {layout!r} lacks {args.layout!r}")
    print(f"check_outputs: bench completed {r['completed']} of {r['num_prompts']} prompts")


def check_launch_env(args):
    values = {}
    with open(args.plan_env, encoding="utf-8") as f:
        for line in f:
            m = re.fullmatch(r"(SW_[A-Z_]+)=([a-z0-9]+)", line.rstrip("\n"))
            if not m:
                fail(f"{args.plan_env}: not a SW_KEY=value line: {line!r}")
            values[m.group(1)] = m.group(2)
    need = ["SW_WORLD_SIZE", "SW_NODES", "SW_RANKS_PER_NODE", "SW_GPUS_PER_RANK",
            "SW_GPUS_PER_NODE", "SW_DEVICE"]
    missing = [k for k in need if k not in values]
    if missing:
        fail(f"{args.plan_env}: missing {missing}")
    world, nodes, per_node = (int(values[k]) for k in need[:3])
    if str(world) != args.world_size.strip():
        fail(f"SW_WORLD_SIZE={world} but --print-world-size printed {args.world_size!r}")
    if not 1 <= per_node <= world or nodes != -(-world // per_node):
        fail(f"SW_NODES={nodes} is not ceil({world} / SW_RANKS_PER_NODE={per_node})")
    if values["SW_DEVICE"] not in ("cpu", "cuda"):
        fail(f"SW_DEVICE={values['SW_DEVICE']}")
    gpus = int(values["SW_GPUS_PER_RANK"])
    if gpus != (1 if values["SW_DEVICE"] == "cuda" else 0):
        fail(f"SW_GPUS_PER_RANK={gpus} on {values['SW_DEVICE']}")
    if gpus and not 1 <= int(values["SW_GPUS_PER_NODE"]) <= per_node:
        fail(f"SW_GPUS_PER_NODE={values['SW_GPUS_PER_NODE']} outside [1, {per_node}]")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    g = sub.add_parser("generate")
    g.add_argument("reference")
    g.add_argument("got")
    g.add_argument("--lengths")
    g.set_defaults(run=check_generate)
    b = sub.add_parser("bench")
    b.add_argument("result")
    b.add_argument("--exact-lengths", action="store_true")
    b.add_argument("--layout")
    b.set_defaults(run=check_bench)
    e = sub.add_parser("launch-env")
    e.add_argument("plan_env")
    e.add_argument("world_size")
    e.set_defaults(run=check_launch_env)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
