"""Hostile model files (issue 11): one line on stderr and exit 2, never a traceback, a hang or unbounded memory.

Each case builds its file or folder in tmp_path and runs the real `advise` script in a subprocess
(HF_HUB_OFFLINE=1, FITPLAN_CACHE_DIR in tmp_path, address space capped at 4 GiB), then checks the exit
code, that stderr is exactly one line without a traceback or a terminal escape, that the child's peak
RSS stayed under 1 GiB (os.wait4; it counts from the fork, so pytest's own pages are included: an upper
bound), and that no file that was in tmp_path before the run changed.
The classes covered, beyond tests/test_bad_input.py: FIFOs, folders, devices and dangling links named
like model files (also when `-o` fingerprints the weights, and when a plan is loaded), wrong JSON types in
every config.json field architectures.py reads, duplicate GGUF keys, well-formed but costly headers
(caps on keys, tensors, header bytes, array elements walked and kept, shard count and header bytes a
folder), and control characters in strings read from files.
GGUF layout: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md; safetensors:
https://github.com/huggingface/safetensors#format
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gguf_bytes import ALIGN, ARRAY, BOOL, STRING, U8, U32, WIDTH, g_array, g_kv, g_str, g_u32

ADVISE = Path(sys.executable).with_name("advise")
FITPLAN = Path(sys.executable).with_name("fitplan")
HARDWARE = "rtx-4090-24gb"
ADDRESS_SPACE = 4 * 2**30
MAX_RSS = 2**30
HANG_S = 120  # a hang guard only: every case takes about a second

# ---------------------------------------------------------------------------------------------
# a small valid GGUF (building blocks: tests/gguf_bytes.py)

LLAMA = {"block_count": 1, "embedding_length": 64, "attention.head_count": 4, "attention.head_count_kv": 2,
         "feed_forward_length": 128, "context_length": 256, "vocab_size": 32}
TENSORS = [("token_embd.weight", (64, 32)), ("output_norm.weight", (64,)), ("blk.0.attn_norm.weight", (64,)),
           ("blk.0.attn_q.weight", (64, 64)), ("blk.0.attn_k.weight", (64, 32)), ("blk.0.attn_v.weight", (64, 32)),
           ("blk.0.attn_output.weight", (64, 64)), ("blk.0.ffn_norm.weight", (64,)),
           ("blk.0.ffn_gate.weight", (64, 128)), ("blk.0.ffn_up.weight", (64, 128)),
           ("blk.0.ffn_down.weight", (128, 64))]


def llama_kvs(name: str | bytes | None = None) -> list[bytes]:
    kvs = [g_kv("general.architecture", STRING, g_str("llama"))]
    if name is not None:
        kvs.append(g_kv("general.name", STRING, g_str(name)))
    return kvs + [g_u32(f"llama.{k}", v) for k, v in LLAMA.items()]


def tensor_info(name: str | bytes, dims: tuple[int, ...], offset: int, type_id: int = 0) -> bytes:
    return (g_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
            + struct.pack("<IQ", type_id, offset))


def llama_tensors(extra: list[tuple[str | bytes, tuple[int, ...]]] = ()) -> tuple[list[bytes], int]:
    """The tiny llama's F32 tensor infos (plus extra ones), packed back to back; and the data bytes."""
    infos, offset = [], 0
    for name, dims in [*TENSORS, *extra]:
        infos.append(tensor_info(name, dims, offset))
        nbytes = 4
        for d in dims:
            nbytes *= d
        offset += -(-nbytes // ALIGN) * ALIGN
    return infos, offset


def gguf(kvs: list[bytes] | None = None, infos: list[bytes] | None = None, data_bytes: int | None = None, *,
         n_kv: int | None = None, n_tensors: int | None = None, version: int = 3, magic: bytes = b"GGUF") -> bytes:
    """The tiny llama GGUF (1 block, 39,104 F32 parameters), or the same with parts replaced."""
    kvs = llama_kvs() if kvs is None else kvs
    if infos is None:
        infos, size = llama_tensors()
        data_bytes = size if data_bytes is None else data_bytes
    head = magic + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    head += b"".join(kvs) + b"".join(infos)
    return head + b"\0" * (-len(head) % ALIGN) + b"\0" * (data_bytes or 0)


VALID_GGUF = gguf()
HEADER_END = len(VALID_GGUF) - llama_tensors()[1]


def with_kv(*extra: bytes, name: str | None = None) -> bytes:
    return gguf(llama_kvs(name) + list(extra))


def replaced_kv(key: str, value_type: int | None, payload: bytes = b"") -> bytes | list[bytes]:
    """The tiny llama with one key's value replaced (a GGUF), or with the key dropped (its key/values)."""
    kvs = [kv for kv in llama_kvs() if not kv.startswith(g_str(key) + b"\x04")]
    return kvs if value_type is None else gguf(kvs + [g_kv(key, value_type, payload)])


# ---------------------------------------------------------------------------------------------
# safetensors and config.json building blocks

CONFIG = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
          "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 32, "tie_word_embeddings": True,
          "torch_dtype": "float32"}
HF_TENSORS = {"model.embed_tokens.weight": [32, 64], "model.norm.weight": [64],
              "model.layers.0.input_layernorm.weight": [64], "model.layers.0.self_attn.q_proj.weight": [64, 64],
              "model.layers.0.self_attn.k_proj.weight": [32, 64], "model.layers.0.self_attn.v_proj.weight": [32, 64],
              "model.layers.0.self_attn.o_proj.weight": [64, 64],
              "model.layers.0.post_attention_layernorm.weight": [64],
              "model.layers.0.mlp.gate_proj.weight": [128, 64], "model.layers.0.mlp.up_proj.weight": [128, 64],
              "model.layers.0.mlp.down_proj.weight": [64, 128]}
QWEN3_MOE = {"model_type": "qwen3_moe", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "moe_intermediate_size": 32,
             "num_experts": 4, "num_experts_per_tok": 2, "decoder_sparse_step": 1, "mlp_only_layers": [],
             "vocab_size": 32, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}
DEEPSEEK = {"model_type": "deepseek_v2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "num_key_value_heads": 4, "intermediate_size": 128, "moe_intermediate_size": 32, "n_routed_experts": 4,
            "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1, "moe_layer_freq": 1,
            "kv_lora_rank": 32, "q_lora_rank": None, "qk_rope_head_dim": 8, "qk_nope_head_dim": 16,
            "v_head_dim": 16, "vocab_size": 32}
QWEN2 = {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 32, "use_sliding_window": True,
         "sliding_window": 128, "max_window_layers": 1}
GEMMA3 = {"model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "vocab_size": 32,
          "sliding_window": 64, "sliding_window_pattern": 2}
MIXTRAL = {"model_type": "mixtral", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
           "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 32, "num_local_experts": 4,
           "num_experts_per_tok": 2}


def st_header(tensors: dict[str, list[int]] = HF_TENSORS, dtype: str = "F32") -> tuple[dict, int]:
    header, offset = {}, 0
    for name, shape in tensors.items():
        nbytes = 4 if dtype == "F32" else 1
        for d in shape:
            nbytes *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    return header, offset


def safetensors(header: dict | bytes | None = None, data_bytes: int | None = None, length: int | None = None) -> bytes:
    valid, size = st_header()
    raw = header if isinstance(header, bytes) else json.dumps(valid if header is None else header).encode()
    raw += b" " * (-len(raw) % 8)
    prefix = struct.pack("<Q", len(raw) if length is None else length)
    return prefix + raw + b"\0" * (size if data_bytes is None else data_bytes)


def entry(dtype: object = "F32", shape: object = (1,), offsets: object = (0, 4)) -> dict:
    """One tensor's header entry, each field replaceable by a hostile value."""
    return {"dtype": dtype, "shape": list(shape) if isinstance(shape, tuple) else shape,
            "data_offsets": list(offsets) if isinstance(offsets, tuple) else offsets}


def with_tensor(name: str, info: object) -> bytes:
    header, _ = st_header()
    header[name] = info
    return safetensors(header)


# ---------------------------------------------------------------------------------------------
# cases: each builds its files under tmp_path and returns what to run


@dataclass
class Case:
    args: list[str]  # the model argument and any more options, after `advise`
    needles: tuple[str, ...] = ()  # what the one stderr line must name
    ok: bool = False  # a costly but well-formed file: exit 0, bounded, no escape byte in the output
    command: Path = ADVISE
    hardware: bool = True
    no_new: tuple[str, ...] = field(default=("plan.json",))  # files an error must not leave behind
    shows: tuple[str, ...] = ()  # what the output of an ok case must hold


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def sparse(path: Path, head: bytes, size: int) -> Path:
    """`head` followed by zeros up to `size` bytes, without writing the zeros (a sparse file)."""
    write(path, head)
    os.truncate(path, size)
    return path


def gguf_case(data: bytes | Callable[[], bytes], *needles: str) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        path = write(tmp / "model.gguf", data() if callable(data) else data)
        return Case([str(path)], (str(path), *needles))
    return build


def folder(tmp: Path, config: dict | str | bytes = CONFIG, shards: dict[str, bytes] | None = None) -> Path:
    root = tmp / "tiny"
    raw = json.dumps(config) if isinstance(config, dict) else config
    write(root / "config.json", raw)
    for name, data in ({"model.safetensors": safetensors()} if shards is None else shards).items():
        write(root / name, data)
    return root


Shards = "dict[str, bytes] | Callable[[], dict[str, bytes]] | None"


def folder_case(config: dict | str | bytes = CONFIG, shards: Shards = None, *needles: str) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        root = folder(tmp, config, shards() if callable(shards) else shards)
        return Case([str(root)], (str(root), *needles))
    return build


def st_case(data: bytes | Callable[[], bytes], *needles: str) -> Callable[[Path], Case]:
    """The tiny llama folder with `data` as its one model.safetensors."""
    return folder_case(CONFIG, lambda: {"model.safetensors": data() if callable(data) else data}, *needles)


def config_case(changes: dict, *needles: str, base: dict = CONFIG) -> Callable[[Path], Case]:
    """A config folder without safetensors: the config alone decides."""
    return folder_case(json.dumps({**base, **changes}), {}, *needles)


def raw_config_case(text: str | bytes, *needles: str) -> Callable[[Path], Case]:
    return folder_case(text, {}, *needles)


def truncated_at(fraction: float) -> Callable[[], bytes]:
    return lambda: VALID_GGUF[: max(1, int(HEADER_END * fraction))]


def nested_empty_arrays(count: int) -> bytes:
    return g_kv("x.nested", ARRAY, g_array(ARRAY, count, g_array(U8, 0) * count))


def many_tensors(count: int, prefix: str = "x.") -> bytes:
    """The tiny llama plus `count` one-element F32 tensors named prefix + i (each a valid tensor)."""
    infos, size = llama_tensors()
    extra = [tensor_info(f"{prefix}{i}", (1,), size + ALIGN * i) for i in range(count)]
    return gguf(infos=infos + extra, data_bytes=size + ALIGN * count)


def many_keys(count: int) -> bytes:
    return with_kv(*(g_u32(f"x.k{i}", i) for i in range(count)))


def u8_arrays(total_bytes: int, per_array: int) -> bytes:
    one = g_array(U8, per_array, b"\1" * per_array)
    return with_kv(*(g_kv(f"x.a{i}", ARRAY, one) for i in range(total_bytes // per_array)))


def short_strings(count: int) -> bytes:
    return with_kv(g_kv("tokenizer.ggml.tokens", ARRAY, g_array(STRING, count, g_str("ab") * count)))


ESC_NAME = "\x1b]0;pwned\x07\x1b[2J\x1b[31mSmol\u009b31m\u202eevil\r\n"


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def link(path: Path, target: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return path


def in_valid_folder(make: Callable[[Path], object], *needles: str, output: bool = False) -> Callable[[Path], Case]:
    """A valid tiny folder plus one hostile entry made by `make(folder)`; with output, `-o plan.json`."""
    def build(tmp: Path) -> Case:
        root = folder(tmp)
        make(root)
        extra = ["-o", str(tmp / "plan.json")] if output else []
        return Case([str(root), *extra], (str(root), *needles))
    return build


def model_path(make: Callable[[Path], Path], *needles: str) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        path = make(tmp)
        return Case([str(path)], (str(path), *needles))
    return build


def plan_then(replace: Callable[[Path], None], *needles: str, gguf_model: bool = True) -> Callable[[Path], Case]:
    """A plan written by `advise -o` for a valid model, whose weights `replace` then swaps for something
    hostile; `fitplan verify plan.json` must refuse before running anything."""
    def build(tmp: Path) -> Case:
        model = write(tmp / "model.gguf", VALID_GGUF) if gguf_model else folder(tmp)
        plan = tmp / "made.json"
        proc = _spawn([str(ADVISE), str(model), "--hardware", HARDWARE, "-o", str(plan)], tmp)
        assert proc[0] == 0, proc
        replace(model)
        return Case([str(plan)], (str(model), *needles), command=FITPLAN, hardware=False)
    return build


def _as_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _sub_gguf_folder(path: Path) -> None:
    (path / "sub.gguf").mkdir()


def _too_many_shards(tmp: Path) -> Case:
    root = folder(tmp, shards={f"model-{i:05d}.safetensors": b"" for i in range(4097)})
    return Case([str(root)], (str(root), "4,096"))


def _big_shards(tmp: Path) -> Case:
    """Three shards whose prefixes claim 30 MiB headers each (sparse files): refused from the prefixes."""
    root = folder(tmp, shards={})
    for i in range(3):
        sparse(root / f"model-{i}.safetensors", struct.pack("<Q", 30 * 2**20) + b"{", 30 * 2**20 + 64)
    return Case([str(root)], (str(root), "64 MiB"))


def _tiny_tensor_header(count: int, escaped: bool = False) -> bytes:
    key = "data\\u005foffsets" if escaped else "data_offsets"
    body = ",".join(f'"t{i}":{{"dtype":"U8","shape":[1],"{key}":[{i},{i + 1}]}}' for i in range(count))
    return safetensors(("{" + body + "}").encode(), data_bytes=count)


def _params_beyond_config_early() -> dict[str, bytes]:
    """Shard 1 alone holds more parameters than the config describes; shard 2 is garbage never parsed."""
    header, size = st_header({**HF_TENSORS, "model.layers.0.extra.weight": [128, 128]})
    return {"a.safetensors": safetensors(header, data_bytes=size), "b.safetensors": safetensors(b"{not json")}


def _dup_across_shards() -> dict[str, bytes]:
    header, size = st_header({"model.norm.weight": [64]})
    return {"a.safetensors": safetensors(header, data_bytes=size), "b.safetensors": safetensors()}


def _header_33mib(tmp: Path) -> Case:
    root = folder(tmp, shards={})
    sparse(root / "model.safetensors", struct.pack("<Q", 33 * 2**20), 34 * 2**20)
    return Case([str(root)], (str(root), "33554432"))


def _escape_in_file_name(tmp: Path) -> Case:
    root = folder(tmp, shards={"evil\x1b[2J.safetensors": b"\x10"})
    return Case([str(root)], (str(root), "evil[2J"))


def _escaped_folder_name(tmp: Path) -> Case:
    root = folder(tmp).rename(tmp / "evil\x1b]0;pwned\x07")
    return Case([str(root)], ok=True)


def _ok_config(config: dict) -> Callable[[Path], Case]:
    return lambda tmp: Case([str(folder(tmp, config, {}))], ok=True)


def _duplicate_tensor() -> bytes:
    """The valid header with model.norm.weight written a second time (json.loads would keep the last)."""
    again = b', "model.norm.weight": ' + json.dumps(entry(shape=[64], offsets=[0, 256])).encode() + b"}"
    return safetensors(json.dumps(st_header()[0])[:-1].encode() + again)


def _deep_json(depth: int) -> str:
    return json.dumps(CONFIG)[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}"


CASES: dict[str, Callable[[Path], Case]] = {
    # --- GGUF: truncations at many points of the header, magic, versions
    **{f"gguf-truncated-{int(f * 100)}pct": gguf_case(truncated_at(f)) for f in
       (0.05, 0.12, 0.2, 0.33, 0.45, 0.58, 0.7, 0.83, 0.91, 0.97, 0.999)},
    "gguf-magic-lowercase": gguf_case(gguf(magic=b"gguf"), "magic"),
    "gguf-magic-zero": gguf_case(gguf(magic=b"\0\0\0\0"), "magic"),
    "gguf-version-0": gguf_case(gguf(version=0), "version 0"),
    "gguf-version-1": gguf_case(gguf(version=1), "version 1"),
    "gguf-version-4": gguf_case(gguf(version=4), "version 4"),
    "gguf-version-big-endian-3": gguf_case(gguf(version=3 << 24), "version"),
    # --- GGUF: counts beyond the caps, in files large enough to hold them (zeros, sparse)
    "gguf-keys-65537": model_path(lambda t: sparse(t / "k.gguf", gguf(n_kv=65537), 2 * 2**20), "65,536"),
    "gguf-tensors-65537": model_path(lambda t: sparse(t / "t.gguf", gguf(n_tensors=65537), 4 * 2**20), "65,536"),
    "gguf-200k-tensors": gguf_case(lambda: many_tensors(200_000), "65,536"),
    "gguf-100k-keys": gguf_case(lambda: many_keys(100_000), "65,536"),
    "gguf-5000-tensors-outside-blocks": gguf_case(lambda: many_tensors(5000), "4,096"),
    "gguf-1025-tensors-in-one-block": gguf_case(lambda: many_tensors(1025, "blk.0.x"), "1,024"),
    "gguf-block-count-513": gguf_case(lambda: gguf([kv for kv in llama_kvs() if b"block_count" not in kv]
                                                   + [g_u32("llama.block_count", 513)]), "block_count"),
    "gguf-header-beyond-64MiB": model_path(lambda t: sparse(
        t / "h.gguf", with_kv(g_kv("x.big", ARRAY, g_array(U8, 70 * 2**20))), 80 * 2**20), "64 MiB"),
    # --- GGUF: every value type with a hostile length
    **{f"gguf-array-type-{t}-past-end": gguf_case(with_kv(g_kv("x.arr", ARRAY, g_array(t, 10**6) + b"\0" * 64)),
                                                   "x.arr") for t in WIDTH},
    "gguf-string-value-2**64-1": gguf_case(with_kv(g_kv("x.s", STRING, g_str("a", length=2**64 - 1))), "x.s"),
    "gguf-key-length-2**64-1": gguf_case(with_kv(struct.pack("<Q", 2**64 - 1) + b"x" * 64), "key"),
    "gguf-string-array-element-2**63": gguf_case(with_kv(g_kv("x.t", ARRAY, g_array(STRING, 2, g_str("a", 2**63)))),
                                                 "x.t"),
    "gguf-array-of-arrays-past-end": gguf_case(with_kv(g_kv("x.n", ARRAY, g_array(ARRAY, 2, g_array(U32, 10**9)))),
                                               "x.n"),
    "gguf-array-length-2**64-1": gguf_case(with_kv(g_kv("x.a", ARRAY, g_array(U8, 2**64 - 1))), "x.a"),
    "gguf-tensor-name-not-utf8": gguf_case(lambda: gguf(infos=[tensor_info(b"\xff\xfe", (64,), 0)], data_bytes=256),
                                           "UTF-8"),
    # --- GGUF: nesting, walked and kept elements
    "gguf-5M-nested-empty-arrays": gguf_case(lambda: with_kv(nested_empty_arrays(5_000_000)), "4,194,304"),
    "gguf-70k-nested-empty-arrays": gguf_case(lambda: with_kv(nested_empty_arrays(70_000)), "65,536"),
    "gguf-array-depth-3": gguf_case(with_kv(g_kv("x.d", ARRAY, g_array(ARRAY, 1, g_array(ARRAY, 1, g_array(U8, 0))))),
                                    "deep"),
    "gguf-64MB-of-u8-arrays-kept": gguf_case(lambda: u8_arrays(64 * 10**6, 4096), "1,048,576"),
    "gguf-5M-empty-strings": gguf_case(lambda: with_kv(g_kv("x.s", ARRAY, g_array(STRING, 5 * 10**6, b"\0" * 40 * 10**6))),
                                       "4,194,304"),
    # --- GGUF: duplicate keys, metadata values of the wrong kind
    "gguf-duplicate-block-count": gguf_case(lambda: with_kv(g_u32("llama.block_count", 4096)),
                                            "llama.block_count", "twice"),
    "gguf-duplicate-architecture": gguf_case(lambda: with_kv(g_kv("general.architecture", STRING, g_str("qwen3"))),
                                             "twice"),
    "gguf-block-count-array": gguf_case(lambda: replaced_kv("llama.block_count", ARRAY, g_array(U32, 1, b"\1\0\0\0")),
                                        "block_count"),
    "gguf-head-count-string-array": gguf_case(
        lambda: replaced_kv("llama.attention.head_count", ARRAY, g_array(STRING, 1, g_str("4"))), "head_count"),
    "gguf-alignment-bool": gguf_case(lambda: with_kv(g_kv("general.alignment", BOOL, b"\1")), "alignment"),
    "gguf-vocab-from-2**25-tokens": gguf_case(
        lambda: gguf(replaced_kv("llama.vocab_size", None)
                     + [g_kv("tokenizer.ggml.tokens", ARRAY, g_array(U8, 2**25, b"\0" * 2**25))]), "vocabulary"),
    # --- GGUF: control characters in names reaching the terminal
    "gguf-escape-in-key-of-bad-type": gguf_case(lambda: with_kv(g_kv("x.\x1b[2Jkey", 13, b"\0" * 8)), "x.[2Jkey"),
    "gguf-escape-in-tensor-name": gguf_case(lambda: gguf(None, *llama_tensors([("blk.7.\x1b]0;pwned\x07", (64,))])),
                                            "blk.7.]0;pwned"),
    # --- safetensors: lengths, sizes, encodings, JSON traps, layout
    "st-length-0": st_case(struct.pack("<Q", 0) + b"\0" * 64, "JSON"),
    "st-length-past-end-by-1": st_case(lambda: safetensors(length=len(safetensors()) - 7), "claims"),
    "st-header-33MiB": _header_33mib,
    "st-header-latin1": st_case(safetensors(b'{"\xe9t\xe9": 1}'), "UTF-8"),
    "st-header-utf16": st_case(lambda: safetensors(json.dumps(st_header()[0]).encode("utf-16")), "UTF-8"),
    "st-dtype-list": st_case(lambda: with_tensor("x", entry(dtype=["F32"])), "dtype"),
    "st-shape-17-dims": st_case(lambda: with_tensor("x", entry(shape=[1] * 17)), "shape"),
    "st-shape-1000-huge-dims": st_case(lambda: with_tensor("x", entry(shape=[2**47] * 1000)), "shape"),
    "st-offsets-bool": st_case(lambda: with_tensor("x", entry(offsets=[False, True])), "data_offsets"),
    "st-shape-NaN": st_case(safetensors(b'{"x": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 4]}}'), "NaN"),
    "st-offsets-Infinity": st_case(safetensors(b'{"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, Infinity]}}'),
                                   "Infinity"),
    "st-int-5000-digits": st_case(safetensors(b'{"x": {"dtype": "F32", "shape": [' + b"9" * 5000 + b"]}}"), "JSON"),
    "st-duplicate-tensor": st_case(_duplicate_tensor, "twice"),
    "st-duplicate-inner-key": st_case(safetensors(b'{"x": {"dtype": "F32", "dtype": "F16", "shape": [1]}}'), "twice"),
    "st-zero-length-inside-another": st_case(lambda: with_tensor("model.z", entry(shape=[0], offsets=[8, 8])),
                                             "overlap"),
    "st-tensor-in-two-shards": folder_case(CONFIG, _dup_across_shards, "two shards"),
    "st-params-beyond-config-in-first-shard": folder_case(CONFIG, _params_beyond_config_early, "at least"),
    "st-200k-tiny-tensors": st_case(lambda: _tiny_tensor_header(200_000), "200,000"),
    "st-200k-escaped-keys": st_case(lambda: _tiny_tensor_header(200_000, escaped=True), "JSON values"),
    "st-16M-numbers-in-metadata": st_case(lambda: safetensors(b'{"__metadata__": [' + b"1," * (8 * 2**20) + b"1]}"),
                                          "JSON values"),
    "st-three-30MiB-headers": _big_shards,
    "st-4097-shards": _too_many_shards,
    "st-escape-in-file-name": _escape_in_file_name,
    # --- config.json: every field architectures.py reads, with the wrong JSON type or an absurd value
    "cfg-mlp_only_layers-int": config_case({"mlp_only_layers": 5}, "mlp_only_layers", base=QWEN3_MOE),
    "cfg-mlp_only_layers-nested": config_case({"mlp_only_layers": [[1]]}, "mlp_only_layers", base=QWEN3_MOE),
    "cfg-mlp_only_layers-bools": config_case({"mlp_only_layers": [True]}, "mlp_only_layers", base=QWEN3_MOE),
    "cfg-mlp_only_layers-string": config_case({"mlp_only_layers": "0"}, "mlp_only_layers", base=QWEN3_MOE),
    "cfg-mlp_only_layers-negative": config_case({"mlp_only_layers": [-1]}, "mlp_only_layers", base=QWEN3_MOE),
    "cfg-mlp_only_layers-huge": config_case({"mlp_only_layers": [10**30]}, "mlp_only_layers", base=QWEN3_MOE),
    "cfg-mlp_only_layers-long": config_case({"mlp_only_layers": [0] * 100_000}, "mlp_only_layers", base=QWEN3_MOE),
    "cfg-mlp_only_layers-zero": config_case({"mlp_only_layers": 0}, "mlp_only_layers", base=QWEN3_MOE),
    "cfg-num_experts-string": config_case({"num_experts": "4"}, "num_experts", base=QWEN3_MOE),
    "cfg-decoder_sparse_step-bool": config_case({"decoder_sparse_step": True}, "decoder_sparse_step", base=QWEN3_MOE),
    "cfg-num_local_experts-huge": config_case({"num_local_experts": 10**9}, "num_local_experts", base=MIXTRAL),
    "cfg-q_lora_rank-string": config_case({"q_lora_rank": "abc"}, "q_lora_rank", base=DEEPSEEK),
    "cfg-q_lora_rank-list": config_case({"q_lora_rank": [16]}, "q_lora_rank", base=DEEPSEEK),
    "cfg-q_lora_rank-negative": config_case({"q_lora_rank": -1}, "q_lora_rank", base=DEEPSEEK),
    "cfg-n_shared_experts-float": config_case({"n_shared_experts": 1.5}, "n_shared_experts", base=DEEPSEEK),
    "cfg-moe_layer_freq-list": config_case({"moe_layer_freq": [1]}, "moe_layer_freq", base=DEEPSEEK),
    "cfg-layer_types-int": config_case({"layer_types": 5}, "layer_types", base=QWEN2),
    "cfg-layer_types-wrong-length": config_case({"layer_types": ["full_attention"]}, "layer_types", base=QWEN2),
    "cfg-layer_types-not-strings": config_case({"layer_types": [1, 2]}, "layer_types", base=QWEN2),
    "cfg-sliding_window-string": config_case({"sliding_window": "128"}, "sliding_window", base=QWEN2),
    "cfg-use_sliding_window-string": config_case({"use_sliding_window": "yes"}, "use_sliding_window", base=QWEN2),
    "cfg-max_window_layers-negative": config_case({"max_window_layers": -1}, "max_window_layers", base=QWEN2),
    "cfg-sliding_window_pattern-list": config_case({"sliding_window_pattern": [2]}, "sliding_window_pattern",
                                                   base=GEMMA3),
    "cfg-torch_dtype-int": config_case({"torch_dtype": 5}, "torch_dtype"),
    "cfg-torch_dtype-object": config_case({"torch_dtype": {"x": 1}}, "torch_dtype"),
    "cfg-head_dim-zero": config_case({"head_dim": 0}, "head_dim"),
    "cfg-num_attention_heads-huge": config_case({"num_attention_heads": 2**40}, "num_attention_heads"),
    "cfg-num_hidden_layers-list": config_case({"num_hidden_layers": [[1]]}, "num_hidden_layers"),
    "cfg-num_hidden_layers-513": config_case({"num_hidden_layers": 513}, "num_hidden_layers"),
    "cfg-parameters-beyond-cap": config_case({"hidden_size": 2**24, "intermediate_size": 2**24, "vocab_size": 2**24,
                                              "num_hidden_layers": 512}, "parameters"),
    "cfg-model_type-list": config_case({"model_type": ["llama"]}, "model_type"),
    "cfg-depth-40": raw_config_case(_deep_json(40), "32 levels"),
    "cfg-depth-500": raw_config_case(_deep_json(500), "32 levels"),
    # NaN in a field fitplan reads (one it never reads is accepted: Nemotron-H's configs hold Infinity)
    "cfg-NaN-read": raw_config_case(json.dumps({**CONFIG, "intermediate_size": "@"}).replace('"@"', "NaN"),
                                    "intermediate_size", "NaN"),
    "cfg-int-5000-digits": raw_config_case(json.dumps(CONFIG)[:-1] + ', "x": ' + "9" * 5000 + "}"),
    "cfg-5MB": raw_config_case(json.dumps(CONFIG)[:-1] + ', "x": "' + "a" * (5 * 2**20) + '"}', "4,194,304"),
    "cfg-utf16": raw_config_case(json.dumps(CONFIG).encode("utf-16"), "UTF-8"),
    # --- files that are no regular files: as MODEL, inside a folder, with -o, and under a plan
    "model-fifo-gguf": model_path(lambda t: fifo(t / "m.gguf"), "FIFO"),
    "model-dev-zero": model_path(lambda t: Path("/dev/zero"), "character device"),
    "model-link-to-dev-zero": model_path(lambda t: link(t / "z.gguf", "/dev/zero"), "character device"),
    "model-dangling-link-gguf": model_path(lambda t: link(t / "gone.gguf", str(t / "nowhere.gguf")), "dangling"),
    "model-folder-named-gguf": model_path(lambda t: (t / "d.gguf").mkdir() or t / "d.gguf", "config.json"),
    "folder-config-fifo": in_valid_folder(lambda r: (r / "config.json").unlink() or fifo(r / "config.json"), "FIFO"),
    "folder-config-folder": in_valid_folder(lambda r: (r / "config.json").unlink() or (r / "config.json").mkdir(),
                                            "folder"),
    "folder-config-dev-zero": in_valid_folder(
        lambda r: (r / "config.json").unlink() or link(r / "config.json", "/dev/zero"), "character device"),
    "folder-fifo-shard": in_valid_folder(lambda r: fifo(r / "shard.safetensors"), "FIFO"),
    "folder-dir-shard": in_valid_folder(lambda r: (r / "x.safetensors").mkdir(), "folder"),
    "folder-dangling-shard": in_valid_folder(lambda r: link(r / "x.safetensors", str(r / "nowhere")), "dangling"),
    "folder-dev-zero-shard": in_valid_folder(lambda r: link(r / "z.safetensors", "/dev/zero"), "character device"),
    "folder-fifo-extra-gguf-with-o": in_valid_folder(lambda r: fifo(r / "extra.gguf"), "FIFO", output=True),
    "folder-dir-gguf-with-o": in_valid_folder(lambda r: (r / "sub.gguf").mkdir(), "folder", output=True),
    "folder-dangling-gguf-with-o": in_valid_folder(lambda r: link(r / "x.gguf", str(r / "nowhere")), "dangling",
                                                   output=True),
    "folder-dev-zero-gguf-with-o": in_valid_folder(lambda r: link(r / "z.gguf", "/dev/zero"), "character device",
                                                   output=True),
    "plan-weights-now-fifo": plan_then(_as_fifo, "FIFO"),
    "plan-folder-gains-sub-gguf-dir": plan_then(_sub_gguf_folder, "folder", gguf_model=False),
}

# Costly but well-formed: accepted, fast and bounded (the caps leave room for real files)
OK_CASES: dict[str, Callable[[Path], Case]] = {
    "ok-gguf-escape-sequences-in-name": lambda t: Case(
        [str(write(t / "m.gguf", with_kv(name=ESC_NAME)))], ok=True, shows=("]0;pwned[2J[31mSmol31mevil (",)),
    "ok-gguf-1M-tokens": lambda t: Case([str(write(t / "m.gguf", short_strings(1_000_000)))], ok=True),
    "ok-gguf-64MB-long-u8-arrays-skipped": lambda t: Case([str(write(t / "m.gguf", u8_arrays(64 * 10**6, 65536)))],
                                                          ok=True),
    "ok-gguf-4000-tensors-outside-blocks": lambda t: Case([str(write(t / "m.gguf", many_tensors(4000)))], ok=True),
    "ok-gguf-1000-tensors-in-one-block": lambda t: Case([str(write(t / "m.gguf", many_tensors(1000, "blk.0.x")))],
                                                        ok=True),
    "ok-folder-escape-in-folder-name": _escaped_folder_name,
    # the configs the wrong-typed fields above edit are each accepted as they are
    **{f"ok-config-{c['model_type']}": _ok_config(c) for c in (QWEN3_MOE, DEEPSEEK, QWEN2, GEMMA3, MIXTRAL)},
}

# ---------------------------------------------------------------------------------------------
# running the CLI, and what every case must show


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _spawn(argv: list[str], tmp: Path) -> tuple[int, str, str, int, float]:
    """(exit code, stdout, stderr, peak RSS in bytes, seconds) of argv run under the 4 GiB address-space cap.

    The child is reaped with os.wait4, whose rusage is that child's alone."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FITPLAN_CACHE_DIR": str(tmp / ".cache"), "COLUMNS": "200"}
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=tmp,
                                preexec_fn=_limit)
        while True:
            done, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - start > HANG_S:
                proc.kill()
                proc.wait()
                pytest.fail(f"{argv} still running after {HANG_S} s: a hang")
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        elapsed = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        text = out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace")
    return proc.returncode, text[0], text[1], usage.ru_maxrss * 1024, elapsed


def _snapshot(root: Path) -> dict[str, object]:
    """Every entry under root (but the cache): its kind, and for regular files a digest of all their bytes."""
    seen: dict[str, object] = {}
    for base, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".cache"]
        for name in dirs + files:
            path = os.path.join(base, name)
            info = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    for chunk in iter(lambda: handle.read(2**22), b""):
                        digest.update(chunk)
                seen[rel] = ("file", info.st_size, digest.hexdigest())
            elif stat.S_ISLNK(info.st_mode):
                seen[rel] = ("link", os.readlink(path))
            else:
                seen[rel] = (stat.S_IFMT(info.st_mode),)
    return seen


def _check(case: Case, tmp: Path) -> tuple[float, int]:
    before = _snapshot(tmp)
    argv = [str(case.command), *(["verify"] if case.command == FITPLAN else []), *case.args]
    if case.hardware:
        argv += ["--hardware", HARDWARE]
    code, stdout, stderr, rss, elapsed = _spawn(argv, tmp)
    shown = f"argv={argv}\nrc={code}\nstdout={stdout[-2000:]!r}\nstderr={stderr[-2000:]!r}\nrss={rss}"
    assert "Traceback" not in stdout + stderr, shown
    assert "\x1b" not in stdout + stderr and "\x9b" not in stdout + stderr and "\a" not in stdout + stderr, shown
    assert rss < MAX_RSS, shown
    if case.ok:
        assert code == 0 and stderr == "", shown
        for text in case.shows:
            assert text in stdout, f"{text!r} not shown\n{shown}"
    else:
        assert code == 2, shown
        assert stderr.endswith("\n") and stderr.count("\n") == 1, shown
        assert stderr.startswith(("advise: error: ", "fitplan: error: ")), shown
        for needle in case.needles:
            assert needle in stderr, f"{needle!r} not named\n{shown}"
        for name in case.no_new:
            assert not (tmp / name).exists() or name in before, shown
    after = _snapshot(tmp)
    changed = [name for name, state in before.items() if after.get(name) != state]
    assert not changed, f"changed by the run: {changed}\n{shown}"
    return elapsed, rss


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_model_file_is_one_line(tmp_path: Path, name: str) -> None:
    """A hostile file, folder or plan is refused in one line (exit 2) naming it and the broken rule, promptly
    and in bounded memory, changing nothing that was there."""
    _check(CASES[name](tmp_path), tmp_path)


@pytest.mark.parametrize("name", sorted(OK_CASES))
def test_costly_but_valid_model_file_is_bounded(tmp_path: Path, name: str) -> None:
    """A well-formed file that is costly to read is planned (exit 0) within bounds, and nothing it holds
    reaches the terminal as a control character."""
    _check(OK_CASES[name](tmp_path), tmp_path)
