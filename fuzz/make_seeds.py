#!/usr/bin/env python3
"""Writes the binary seed inputs of fuzz/corpus/ (safetensors files and indexes, control
messages, step commands and replies), following the formats of model/safetensors.cpp,
comm/control/message.cpp and worker/step_protocol.cpp. Text seeds (config.json, cluster
YAML) are copies of model/presets, tests/fixtures/hf and launch/configs. Rerun after a wire
format changes: python3 fuzz/make_seeds.py"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(harness, name, data):
    path = os.path.join(HERE, "corpus", harness, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- safetensors: 8-byte little-endian header length, JSON header, data section.
def safetensors(tensors, metadata=None, pad=0):
    header, data = {}, b""
    for name, dtype, shape, size in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + size]}
        data += bytes((i * 7) & 0xFF for i in range(size))
    if metadata is not None:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(h)) + h + data


write("safetensors_header", "one_f32.safetensors", safetensors([("w", "F32", [2, 3], 24)]))
write("safetensors_header", "bf16_f16_meta.safetensors",
      safetensors([("a", "BF16", [4], 8), ("b", "F16", [2, 2], 8)], {"format": "pt"}, pad=3))
write("safetensors_header", "empty_and_ints.safetensors",
      safetensors([("e", "F32", [0, 5], 0), ("i", "I64", [2], 16), ("u", "U8", [3], 3),
                   ("j", "I32", [1], 4)]))
write("safetensors_header", "index.json", json.dumps(
    {"metadata": {"total_size": 48},
     "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                    "lm_head.weight": "model-00002-of-00002.safetensors"}}))


# --- control messages: <magic u32, version u16, type u16, request id u64, length u32> + payload.
# The harness reads its first byte as the size limit / 16. The version is
# comm::kControlProtocolVersion.
CONTROL_PROTOCOL_VERSION = 3


def message(mtype, rid, payload):
    return struct.pack("<IHHQI", 0x4D435753, CONTROL_PROTOCOL_VERSION, mtype, rid,
                       len(payload)) + payload


def pstr(s):
    return struct.pack("<I", len(s)) + s


write("control_message", "hello", b"\xff" + message(1, 0, b"rank1"))
write("control_message", "heartbeat", b"\xff" + message(2, 0, b""))
write("control_message", "command", b"\xff" + message(
    3, 7, struct.pack("<IQd", 7, 1 << 40, 2.5) + pstr(b"step")))
write("control_message", "error", b"\x10" + message(6, 9, pstr(b"rank 2: out of KV blocks")))
write("control_message", "abort", b"\x10" + message(
    10, 0, b"mixed instance 0 (ranks 1-2): worker rank(s) [2] lost"))


# --- step protocol (worker/step_protocol.cpp), payloads of kCommand / kResult messages.
def i32s(values):
    return pstr(struct.pack("<%di" % len(values), *values))


def sequence(seq_id, start, tokens, blocks, flags, temp=0.0, top_k=0, top_p=1.0, seed=0, off=0):
    return (struct.pack("<QQ", seq_id, start) + i32s(tokens) + i32s(blocks) +
            struct.pack("<IdIdQQ", flags, temp, top_k, top_p, seed, off))


def send_order(transfer, group, seq, blocks, tokens, ranks, addresses, timeout=30.0):
    out = struct.pack("<QIQ", transfer, group, seq) + i32s(blocks) + struct.pack("<Q", tokens)
    out += struct.pack("<IIII", 0, 1, 0, 0) + i32s(ranks)
    out += struct.pack("<I", len(addresses)) + b"".join(pstr(a) for a in addresses)
    return out + struct.pack("<d", timeout)


def command(groups, metrics=False, kv_sends=()):
    out = struct.pack("<II", 1 if metrics else 0, len(groups))
    for seqs, copies in groups:
        out += struct.pack("<I", len(seqs)) + b"".join(seqs)
        out += struct.pack("<I", len(copies)) + b"".join(struct.pack("<II", s, d) for s, d in copies)
    return out + struct.pack("<I", len(kv_sends)) + b"".join(kv_sends)


write("step_protocol", "command_prefill", command([([sequence(1, 0, [1, 2, 3], [0], 1)], [])]))
write("step_protocol", "command_kv_send", command(
    [([sequence(3, 0, [9, 8, 7, 6, 5], [4, 5], 1)], [])],
    kv_sends=[send_order(11, 0, 3, [4, 5], 5, [5, 6], [b"tcp://127.0.0.1:40001",
                                                       b"tcp://127.0.0.1:40002"])]))
# KV commands (send, expect, cancel) and a decode rank's report.
write("step_protocol", "kv_send", struct.pack("<I", 1) + send_order(
    12, 1, 8, [0, 1, 2], 40, [3], [b"tcp://127.0.0.1:40003"], 5.0))
write("step_protocol", "kv_recv", struct.pack("<IQIQ", 2, 13, 0, 21) + i32s([7, 8]) +
      struct.pack("<QIId", 20, 0, 1, 30.0))
write("step_protocol", "kv_cancel", struct.pack("<IQ", 3, 14))
write("step_protocol", "kv_done", struct.pack("<QIIII", 15, 1, 0, 0, 0) +
      pstr(b"rank 4: part 3 of transfer 15 came twice") + struct.pack("<QQQ", 4096, 10, 20))
write("step_protocol", "command_two_groups", command(
    [([sequence(1, 3, [4], [0], 3, 0.75, 40, 0.875, 5, 2), sequence(2, 0, [5, 6], [1, 2], 0)],
      [(1, 3)]),
     ([], [])], metrics=True))


def reply(group, stage, sampled, rows, logits_shape, metrics):
    out = struct.pack("<II", group, stage) + i32s(sampled)
    out += struct.pack("<I", len(rows)) + b"".join(struct.pack("<q", r) for r in rows)
    r, c = logits_shape
    out += struct.pack("<QQ", r, c)
    if r:
        out += pstr(struct.pack("<%df" % (r * c), *[0.25 * i for i in range(r * c)]))
    out += struct.pack("<I", len(metrics))
    for assignments, dropped, imbalance, per_expert in metrics:
        out += struct.pack("<QQdI", assignments, dropped, imbalance, len(per_expert))
        out += b"".join(struct.pack("<Q", n) for n in per_expert)
    return out


write("step_protocol", "reply_tokens", reply(0, 1, [17, 42], [-1, -1], (0, 0), []))
write("step_protocol", "reply_logits_metrics",
      reply(1, 2, [3], [0], (1, 4), [(8, 1, 1.5, [3, 2, 2, 0])]))


# --- prompt lines: a byte for the bench line's vocabulary (value + 1), then one JSONL line.
write("prompt_line", "generate_full", b"\x3f" + json.dumps(
    {"prompt_ids": [1, 2, 3], "max_new_tokens": 8, "temperature": 0.7, "top_k": 50,
     "top_p": 0.9, "seed": 1}).encode())
write("prompt_line", "generate_min", b"\x00" + b'{"prompt_ids":[0]}')
write("prompt_line", "bench_trace", b"\xff" + json.dumps(
    {"prompt_ids": [5, 250, 17, 0], "output_len": 64}).encode())
