#!/usr/bin/env python3
"""End to end through the official `openai` client: `shardwise serve` (one process, or a
cluster under mpirun with --config) in front of a tiny checkpoint with a real vocabulary.

The reference chain is independent of Shardwise's front end: HF `tokenizers` encodes the
prompt (transformers renders chat templates), `shardwise generate --prompt-ids` produces the
token ids (no tokenizer involved), and HF `tokenizers` decodes them. The served text must equal
that, streamed and not, with exact usage; stop strings are cut; a client that drops mid-stream
frees its KV blocks; 1000 concurrent streams complete while /health keeps answering.

Usage: openai_e2e.py --shardwise BIN --model-dir DIR [--config CFG --np N] [--streams 1000]
Run with the reference virtualenv's python (tests/pyref/setup.sh).
"""
import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai
import tokenizers
from transformers import PreTrainedTokenizerFast

FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", file=sys.stderr)
    return cond


def launch(args, command):
    """A shardwise command line: one process, or the cluster under mpirun."""
    if args.config:
        return ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(args.np),
                "-x", "OMP_NUM_THREADS=1", "-x", "OPENBLAS_NUM_THREADS=1",
                args.shardwise, command, "--config", args.config]
    return [args.shardwise, command, "--model", args.model_dir, "--load-format", "dummy"]


def write_config(args, tmp):
    """A cluster file for the tiny model: mixed (1 instance, tp 2) or disaggregated (prefill
    and decode, tp 1 each); 3 ranks either way."""
    pools = {"mixed": "  mixed: {instances: 1, tp: 2, pp: 1, dp: 1}\n",
             "disagg": "  prefill: {instances: 1, tp: 1, pp: 1, dp: 1}\n"
                       "  decode: {instances: 1, tp: 1, pp: 1, dp: 1}\n"}[args.layout]
    path = os.path.join(tmp, f"{args.layout}.yaml")
    with open(path, "w") as f:
        f.write(f"""version: 1
model: {{path: "{os.path.abspath(args.model_dir)}", load_format: dummy, dtype: float32}}
runtime: {{device: cpu, kv_block_size: 16, max_num_seqs: 64, max_num_batched_tokens: 1024,
          max_model_len: 2048, device_memory_gib: 1}}
cluster: {{ranks_per_node: 0, comm_backend: mpi, control_endpoint: "tcp://127.0.0.1:*",
          timeout_s: 120}}
pools:
{pools}""")
    args.config = path
    args.np = 3


def reference_ids(args, prompts, max_tokens):
    """Token ids from one `generate` run over every prompt (ids in, ids out: no tokenizer)."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for ids in prompts:
            f.write(json.dumps({"prompt_ids": ids}) + "\n")
    cmd = launch(args, "generate")
    cmd += ["--prompts", f.name, "--max-new-tokens", str(max_tokens), "--ignore-eos", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=900).stdout
    lines = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    os.unlink(f.name)
    assert len(lines) == len(prompts), out
    return [l["output_ids"] for l in lines]


def http_get(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def metric(text, name):
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_idle(base, timeout=30.0):
    """Until the server reports no running or waiting request and an empty KV cache."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, m = http_get(base + "/metrics")
        running = metric(m, "shardwise:num_requests_running")
        waiting = metric(m, "shardwise:num_requests_waiting")
        usage = metric(m, "shardwise:kv_cache_usage_perc")
        if running == 0 and waiting == 0 and usage == 0:
            return True
        time.sleep(0.1)
    return False


async def many_streams(base, model, n, max_tokens):
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="none", max_retries=0,
                                timeout=600, http_client=None)
    health_worst = 0.0
    done = False

    async def health():
        nonlocal health_worst
        loop = asyncio.get_running_loop()
        while not done:
            t = time.time()
            status, _ = await loop.run_in_executor(None, http_get, base + "/health", 10.0)
            health_worst = max(health_worst, time.time() - t)
            check(status == 200, f"/health answered {status} under load")
            await asyncio.sleep(0.2)

    async def one(i):
        stream = await client.completions.create(
            model=model, prompt=[1 + i % 50, 2, 3], max_tokens=max_tokens, temperature=0,
            stream=True, extra_body={"ignore_eos": True})
        text, reason = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].text or ""
                reason = chunk.choices[0].finish_reason or reason
        return reason

    h = asyncio.create_task(health())
    t0 = time.time()
    reasons = await asyncio.gather(*[one(i) for i in range(n)], return_exceptions=True)
    done = True
    await h
    errors = [r for r in reasons if isinstance(r, BaseException)]
    check(not errors, f"{len(errors)} of {n} concurrent streams failed: {errors[:3]}")
    check(all(r == "length" for r in reasons if not isinstance(r, BaseException)),
          "every concurrent stream ends by length")
    print(f"{n} concurrent streams of {max_tokens} tokens in {time.time() - t0:.1f} s; "
          f"slowest /health {health_worst * 1000:.0f} ms")
    check(health_worst < 5.0, f"/health took {health_worst:.2f} s under {n} streams")
    await client.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shardwise", required=True)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--layout", choices=["one", "mixed", "disagg"], default="one",
                    help="one process, or under mpirun: mixed (tp 2) or disaggregated")
    ap.add_argument("--streams", type=int, default=1000)
    args = ap.parse_args()

    hf = tokenizers.Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    tf = PreTrainedTokenizerFast.from_pretrained(args.model_dir)
    prompts = ["Hello, world!", "The capital of France is", "  leading spaces\tand tabs",
               "日本語のテキストと emoji 🎉🎉", "x"]
    conversations = [
        [{"role": "user", "content": "What is 2 + 2?"}],
        [{"role": "system", "content": "You are terse."},
         {"role": "user", "content": "Name a colour."},
         {"role": "assistant", "content": "Blue."},
         {"role": "user", "content": "Another, in français?"}],
    ]
    tmp = tempfile.mkdtemp()
    args.config = None
    if args.layout != "one":
        write_config(args, tmp)
    ready = os.path.join(tmp, "ready.json")
    log = open(os.path.join(tmp, "serve.log"), "w")
    # The reference chain: HF encodes (transformers renders the chat template, encoded without
    # special tokens), `generate` runs the ids, HF decodes.
    prompt_ids = [hf.encode(p, add_special_tokens=True).ids for p in prompts]
    chat_ids = []
    for messages in conversations:
        ids = tf.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                     return_dict=False)
        chat_ids.append(list(ids["input_ids"] if hasattr(ids, "keys") else ids))
    refs = reference_ids(args, prompt_ids + chat_ids, 24)
    # The text the outputs add after the prompt (as vLLM streams it: a SentencePiece word's
    # leading space stays, which decoding the outputs alone would strip).
    def added_text(prompt, out):
        before = hf.decode(prompt, skip_special_tokens=True)
        full = hf.decode(prompt + out, skip_special_tokens=True)
        assert full.startswith(before), (before, full)
        return full[len(before):]

    wants = [added_text(p, r) for p, r in zip(prompt_ids, refs[:len(prompts)])]
    chat_wants = [added_text(p, r[:20]) for p, r in zip(chat_ids, refs[len(prompts):])]
    server = subprocess.Popen(
        launch(args, "serve") + ["--port", "0", "--endpoint", "tcp://127.0.0.1:*",
                                 "--ready-file", ready, "--served-model-name", "tiny",
                                 "--drain-timeout", "5"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not os.path.exists(ready):
            if server.poll() is not None or time.time() > deadline:
                log.flush()
                print(open(log.name).read()[-4000:], file=sys.stderr)
                sys.exit("serve did not start")
            time.sleep(0.2)
        base = json.load(open(ready))["http"]
        client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)
        models = client.models.list()
        check(models.data[0].id == "tiny", f"/v1/models names 'tiny': {models.data[0].id}")

        # Completions: text prompts with the tokenizer's post-processor, as HF encodes them.
        for prompt, ids, want in zip(prompts, prompt_ids, wants):
            r = client.completions.create(model="tiny", prompt=prompt, max_tokens=24,
                                          temperature=0, extra_body={"ignore_eos": True})
            check(r.choices[0].text == want, f"completion of {prompt!r}: {r.choices[0].text!r} "
                                             f"!= {want!r}")
            check(r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens == 24,
                  f"usage of {prompt!r}: {r.usage}")
            check(r.choices[0].finish_reason == "length", "finish_reason length")
            text, usage = "", None
            for chunk in client.completions.create(
                    model="tiny", prompt=prompt, max_tokens=24, temperature=0, stream=True,
                    stream_options={"include_usage": True}, extra_body={"ignore_eos": True}):
                if chunk.choices:
                    text += chunk.choices[0].text
                if chunk.usage:
                    usage = chunk.usage
            check(text == want, f"streamed completion of {prompt!r}: {text!r} != {want!r}")
            check(usage is not None and usage.completion_tokens == 24 and
                  usage.prompt_tokens == len(ids), f"streamed usage of {prompt!r}: {usage}")
            # Token-id prompts skip the tokenizer.
            r = client.completions.create(model="tiny", prompt=ids, max_tokens=24, temperature=0,
                                          extra_body={"ignore_eos": True})
            check(r.choices[0].text == want, f"token-id prompt of {prompt!r}")
            # A stop string from the middle of the text: cut before it, across tokens.
            if len(want) > 12:
                stop = want[5:9]
                cut = want[:want.find(stop)]
                r = client.completions.create(model="tiny", prompt=prompt, max_tokens=24,
                                              temperature=0, stop=[stop],
                                              extra_body={"ignore_eos": True})
                check(r.choices[0].text == cut and r.choices[0].finish_reason == "stop",
                      f"stop {stop!r} on {prompt!r}: {r.choices[0].text!r} "
                      f"({r.choices[0].finish_reason}) != {cut!r}")

        # Chat: rendered by transformers' apply_chat_template, encoded without special tokens.
        for messages, ids, want in zip(conversations, chat_ids, chat_wants):
            r = client.chat.completions.create(model="tiny", messages=messages,
                                               max_completion_tokens=20, temperature=0,
                                               extra_body={"ignore_eos": True})
            check(r.choices[0].message.content == want,
                  f"chat {messages[-1]['content']!r}: {r.choices[0].message.content!r} != "
                  f"{want!r}")
            check(r.usage.prompt_tokens == len(ids), f"chat usage {r.usage} vs {len(ids)} ids")
            text = ""
            for chunk in client.chat.completions.create(
                    model="tiny", messages=messages, max_completion_tokens=20, temperature=0,
                    stream=True, extra_body={"ignore_eos": True}):
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
            check(text == want, f"streamed chat: {text!r} != {want!r}")

        # Errors: OpenAI's error object and status.
        try:
            client.completions.create(model="nope", prompt="x", max_tokens=2)
            check(False, "an unknown model is refused")
        except openai.NotFoundError:
            pass
        try:
            client.completions.create(model="tiny", prompt="x", max_tokens=2, n=3)
            check(False, "n > 1 is refused")
        except openai.BadRequestError as e:
            check("n" in str(e), f"the n error names the field: {e}")

        # A client that drops mid-stream: its request is aborted and its blocks freed.
        check(wait_idle(base), "idle before the drop test")
        stream = client.completions.create(model="tiny", prompt="drop me", max_tokens=900,
                                           temperature=0, stream=True,
                                           extra_body={"ignore_eos": True})
        got = 0
        for chunk in stream:
            got += 1
            if got == 3:
                break
        stream.close()
        check(wait_idle(base, 30), "a dropped stream frees its request and KV blocks")
        _, m = http_get(base + "/metrics")
        aborted = [float(l.rsplit(" ", 1)[1]) for l in m.splitlines()
                   if l.startswith("shardwise:request_success_total{") and
                   'finished_reason="abort"' in l]
        check(aborted and aborted[0] >= 1, f"the dropped request counts as aborted: {aborted}")

        # Many concurrent streams while /health answers.
        if args.streams > 0:
            asyncio.run(many_streams(base, "tiny", args.streams, 4))
            check(wait_idle(base, 60), "idle after the concurrent streams")
    finally:
        # SIGTERM to the coordinator (the ready file's pid: rank 0 under mpirun), which drains
        # and stops its workers; the job then exits 0.
        coordinator = server.pid
        if os.path.exists(ready):
            coordinator = json.load(open(ready))["pid"]
        os.kill(coordinator, signal.SIGTERM)
        try:
            rc = server.wait(60)
            check(rc == 0, f"serve exited {rc} after SIGTERM")
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            check(False, "serve did not exit within 60 s of SIGTERM")
        log.close()
        if FAILURES:
            print(open(log.name).read()[-3000:], file=sys.stderr)
    print(f"{len(FAILURES)} failed" if FAILURES else "openai_e2e: all checks passed")
    sys.exit(1 if FAILURES else 0)


if __name__ == "__main__":
    main()
