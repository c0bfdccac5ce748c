"""The weight tensors of one layer, and what it caches per sequence, from its LayerPlan.

Names and axis order are llama.cpp's (gguf-py constants.py MODEL_TENSORS): shape[0] is a matrix's
row length. Shapes follow the transformers modeling code of each architecture; tests check the
totals against transformers' own models built on the meta device.
"""
from __future__ import annotations

import math
from typing import Any, Protocol

from fitplan.advisor.models.config_values import Config
from fitplan.advisor.models.layer_plan import LayerPlan
from fitplan.errors import ModelFileError
from fitplan.model_spec import LayerCache, TensorInfo


class Block(Protocol):
    """Makes one tensor of the layer being laid out: its GGUF name's tail and its shape."""

    def __call__(self, name: str, *shape: int, experts: int = 0) -> TensorInfo: ...


class Dims:
    """The widths every layer shares, read once from the config."""

    def __init__(self, cfg: Config, layout: dict[str, Any], hidden: int, heads: int, kv_heads: int,
                 head_dim: int, v_head_dim: int, layers: int = 0) -> None:
        self.cfg, self.layout, self.layers = cfg, layout, layers
        self.hidden, self.heads, self.kv_heads, self.head_dim, self.v_head_dim = hidden, heads, kv_heads, head_dim, v_head_dim


def layer_tensors(d: Dims, i: int, plan: LayerPlan) -> list[TensorInfo]:
    """Layer i's tensors: its norms, token mixer(s) and MLP."""
    def block(name: str, *shape: int, experts: int = 0) -> TensorInfo:
        return TensorInfo(f"blk.{i}.{name}", tuple(shape), "block", i, experts)

    norms = d.layout.get("norms", 2)
    out = [block("attn_norm.weight", d.hidden)]
    if plan.mixer == "attention":
        out += _attention(d, block, own_kv=not plan.kv_shared)
    elif plan.mixer == "mamba2":
        out += _mamba2(d, block)
    elif plan.mixer == "mamba1":
        out += _mamba1(d, block)
    elif plan.mixer == "deltanet":
        out += _deltanet(d, block)
    elif plan.mixer == "shortconv":
        out += _shortconv(d, block)
    if plan.parallel_mamba:
        out += _mamba2(d, block)
    if plan.mlp != "none" and norms >= 2:
        out.append(block("ffn_norm.weight", d.hidden))
    if plan.mlp == "dense":
        out += _dense_mlp(d, block, _dense_width(d, i))
    elif plan.mlp == "moe":
        out += _moe(d, block)
    if norms == 4:  # Gemma 2/3 and GLM-4: a norm after attention and one after the MLP as well
        out += [block("post_attention_norm.weight", d.hidden), block("post_ffw_norm.weight", d.hidden)]
    if d.layout.get("gemma3n"):
        out += _gemma3n_block(d, block)
    return out


def gemma3n_globals(cfg: Config, hidden: int, layers: int) -> list[TensorInfo]:
    """Gemma 3n's tensors outside the blocks: the per-layer embedding table (a row of
    hidden_size_per_layer_input for every layer and token; gathered, never multiplied), its projection
    from the hidden state, and the AltUp projections into and out of the extra streams."""
    per_layer, streams = cfg.size("hidden_size_per_layer_input", limit=65536), cfg.size("altup_num_inputs", limit=64)
    return [TensorInfo("per_layer_token_embd.weight", (layers * per_layer, cfg.size("vocab_size_per_layer_input")), "lookup"),
            TensorInfo("per_layer_model_proj.weight", (hidden, layers * per_layer), "global"),
            TensorInfo("per_layer_proj_norm.weight", (per_layer,), "global"),
            TensorInfo("altup_proj.weight", (hidden, hidden, streams - 1), "global"),
            TensorInfo("altup_unembd_proj.weight", (hidden, hidden, streams - 1), "global")]


def _gemma3n_block(d: Dims, block: Block) -> list[TensorInfo]:
    """A Gemma 3n layer's AltUp (mixing coefficients and router over its streams), LAuReL (a low-rank
    residual) and per-layer-input gate (Gemma3nTextDecoderLayer)."""
    cfg, hidden = d.cfg, d.hidden
    streams, rank = cfg.size("altup_num_inputs", limit=64), cfg.size("laurel_rank", limit=65536)
    per_layer = cfg.size("hidden_size_per_layer_input", limit=65536)
    return [block("altup_correct_coef.weight", streams, streams), block("altup_correct_scale.weight", hidden),
            block("altup_predict_coef.weight", streams, streams * streams), block("altup_router.weight", hidden, streams),
            block("altup_router_norm.weight", hidden),
            block("laurel_l.weight", hidden, rank), block("laurel_r.weight", rank, hidden),
            block("laurel_post_norm.weight", hidden),
            block("inp_gate.weight", hidden, per_layer), block("proj.weight", per_layer, hidden),
            block("post_norm.weight", hidden)]


def layer_cache(d: Dims, plan: LayerPlan, window: int | None, chunk: int | None) -> LayerCache:
    """What layer i keeps per sequence between steps."""
    if plan.mixer == "attention":
        kind = plan.attention
        span = window if kind == "sliding" else chunk if kind == "chunked" else None
        state = recurrent_state(d, "mamba2") if plan.parallel_mamba else 0
        return LayerCache(kind if span else "full", d.kv_heads, d.head_dim, d.v_head_dim, span, state,
                          plan.kv_shared)
    if plan.mixer == "none":
        return LayerCache("none")
    return LayerCache("recurrent", state_elements=recurrent_state(d, plan.mixer))


def recurrent_state(d: Dims, mixer: str) -> int:
    """Elements of a recurrent mixer's state per sequence, as llama.cpp allocates them
    (llama-memory-recurrent: r = the last d_conv - 1 inputs of the convolution, s = the SSM state)."""
    cfg = d.cfg
    if mixer == "mamba2":
        m = _mamba_keys(d)
        return (m["conv"] - 1) * m["conv_dim"] + m["inner"] * m["state"]
    if mixer == "mamba1":
        m = _mamba1_keys(d)
        return (m["conv"] - 1) * m["inner"] + m["inner"] * m["state"]
    if mixer == "deltanet":
        n = _deltanet_keys(d)
        return (n["conv"] - 1) * n["conv_dim"] + n["v_heads"] * n["k_dim"] * n["v_dim"]
    if mixer == "shortconv":
        return (cfg.size("conv_L_cache", limit=4096) - 1) * d.hidden
    raise AssertionError(mixer)


def _attention(d: Dims, block: Block, own_kv: bool = True) -> list[TensorInfo]:
    """Q/K/V/O with their biases and norms; a layer reading another's K/V (own_kv False) has Q and O only."""
    cfg, layout, hidden = d.cfg, d.layout, d.hidden
    if layout.get("mla"):
        return _mla(d, block)
    q, kv = d.heads * d.head_dim, d.kv_heads * d.head_dim
    out = []
    if layout.get("fused_qkv"):
        out.append(block("attn_qkv.weight", hidden, q + 2 * kv))
    else:
        gate = 2 if layout.get("gated_q") else 1  # Qwen3-Next: q_proj also yields the output gate
        out.append(block("attn_q.weight", hidden, q * gate))
        if own_kv:
            out += [block("attn_k.weight", hidden, kv), block("attn_v.weight", hidden, kv)]
        if cfg.switch(layout.get("qkv_bias")):
            out += [block("attn_q.bias", q * gate)] + ([block("attn_k.bias", kv), block("attn_v.bias", kv)] if own_kv else [])
    out.append(block("attn_output.weight", q, hidden))
    if cfg.switch(layout.get("o_bias")):
        out.append(block("attn_output.bias", hidden))
    qk_norm = layout.get("qk_norm")
    if qk_norm == "full":  # OLMo 2: one norm over all query heads and one over all key heads
        out += [block("attn_q_norm.weight", q), block("attn_k_norm.weight", kv)]
    elif cfg.switch(qk_norm):
        out += [block("attn_q_norm.weight", d.head_dim)] + ([block("attn_k_norm.weight", d.head_dim)] if own_kv else [])
    if layout.get("sinks"):  # gpt-oss: one learned sink logit per head
        out.append(block("attn_sinks.weight", d.heads))
    return out


def _mla(d: Dims, block: Block) -> list[TensorInfo]:
    cfg, hidden, heads = d.cfg, d.hidden, d.heads
    out = []
    q_rank = cfg.optional_size("q_lora_rank")
    if q_rank:
        out += [block("attn_q_a.weight", hidden, q_rank), block("attn_q_a_norm.weight", q_rank),
                block("attn_q_b.weight", q_rank, heads * d.head_dim)]
    else:
        out.append(block("attn_q.weight", hidden, heads * d.head_dim))
    if d.layout.get("indexer"):  # DeepSeek-V3.2's lightning indexer (sparse attention's token selector)
        index_heads, index_dim = cfg.size("index_n_heads", limit=4096), cfg.size("index_head_dim", limit=4096)
        out += [block("indexer.attn_q_b.weight", q_rank, index_heads * index_dim),
                block("indexer.attn_k.weight", hidden, index_dim), block("indexer.k_norm.weight", index_dim),
                block("indexer.k_norm.bias", index_dim), block("indexer.proj.weight", hidden, index_heads)]
    rank, rope = cfg.size("kv_lora_rank"), cfg.size("qk_rope_head_dim")
    nope = d.head_dim - rope
    return out + [block("attn_kv_a_mqa.weight", hidden, rank + rope), block("attn_kv_a_norm.weight", rank),
                  block("attn_kv_b.weight", rank, heads * (nope + d.v_head_dim)),
                  block("attn_output.weight", heads * d.v_head_dim, hidden)]


def _dense_width(d: Dims, layer: int | None = None) -> int:
    """The dense MLP's width (of `layer`, where the config lists one per layer, as Gemma 3n may)."""
    cfg, layout = d.cfg, d.layout
    key = layout.get("dense_width", "intermediate_size")
    width = cfg.size(key) if layer is None or not isinstance(cfg.get(key), list) else cfg.sizes(key, d.layers)[layer]
    if layout.get("lfm2_width") and cfg.flag("block_auto_adjust_ff_dim"):  # Lfm2MLP's adjustment
        width = int(2 * width / 3)
        multiplier = cfg.get("block_ffn_dim_multiplier")
        if multiplier is not None:
            step = cfg.size("block_multiple_of")
            width = step * -(-int(_number(cfg, "block_ffn_dim_multiplier") * width) // step)
    return width


def _dense_mlp(d: Dims, block: Block, width: int | None = None, prefix: str = "ffn") -> list[TensorInfo]:
    cfg, layout, hidden = d.cfg, d.layout, d.hidden
    width = width or _dense_width(d)
    if layout.get("fused_gate_up"):
        out = [block(f"{prefix}_up.weight", hidden, 2 * width)]
    elif layout.get("gated", True):
        out = [block(f"{prefix}_gate.weight", hidden, width), block(f"{prefix}_up.weight", hidden, width)]
    else:  # Nemotron-H: up and down only (squared ReLU)
        out = [block(f"{prefix}_up.weight", hidden, width)]
    out.append(block(f"{prefix}_down.weight", width, hidden))
    if layout.get("activation_params") and prefix == "ffn":  # Apertus xIELU: alpha_p, alpha_n, beta, eps
        out.append(block("ffn_act_alpha", int(layout["activation_params"])))
    if cfg.switch(layout.get("mlp_bias")):
        out += [block(f"{prefix}_up.bias", width), block(f"{prefix}_down.bias", hidden)]
        if layout.get("gated", True) and not layout.get("fused_gate_up"):
            out.append(block(f"{prefix}_gate.bias", width))
    return out


def _moe(d: Dims, block: Block) -> list[TensorInfo]:
    cfg, layout, hidden = d.cfg, d.layout, d.hidden
    moe = layout["moe"]
    n = experts(cfg, moe)
    width = cfg.size(layout.get("expert_width", "moe_intermediate_size"))
    out = [block("ffn_gate_inp.weight", hidden, n)]
    if layout.get("router_bias"):
        out.append(block("ffn_gate_inp.bias", n))
    if layout.get("expert_bias"):  # DeepSeek-V3's noaux_tc routing: a stored score correction per expert
        out.append(block("exp_probs_b.bias", n))
    if layout.get("gated", True):
        out.append(block("ffn_gate_exps.weight", hidden, width, n, experts=n))
    out += [block("ffn_up_exps.weight", hidden, width, n, experts=n),
            block("ffn_down_exps.weight", width, hidden, n, experts=n)]
    if layout.get("expert_biases"):  # gpt-oss: a bias on every expert projection
        out += [block("ffn_gate_exps.bias", width, n, experts=n), block("ffn_up_exps.bias", width, n, experts=n),
                block("ffn_down_exps.bias", hidden, n, experts=n)]
    shared = layout.get("shared")
    if shared == "deepseek":
        count = cfg.size(layout.get("shared_count", "n_shared_experts"), 0, minimum=0, limit=4096)
        if count:
            out += _dense_mlp(d, block, width * count, "ffn_shexp")
    elif shared in ("gated", "plain"):  # Qwen2-MoE / Qwen3-Next: a shared expert, gated per token
        out += _dense_mlp(d, block, cfg.size(layout["shared_width"]), "ffn_shexp")
        if shared == "gated":
            out.append(block("ffn_gate_inp_shexp.weight", hidden))
    return out


def experts(cfg: Config, moe: str) -> int:
    key = {"mixtral": "num_local_experts", "gpt_oss": "num_local_experts", "llama4": "num_local_experts",
           "granite": "num_local_experts", "deepseek": "n_routed_experts", "ernie": "moe_num_experts"}.get(moe, "num_experts")
    return cfg.size(key, minimum=0, limit=4096)


def experts_per_token(cfg: Config, moe: str | None) -> int:
    return cfg.size("moe_k" if moe == "ernie" else "num_experts_per_tok", limit=4096) if moe else 0


def _mamba_keys(d: Dims) -> dict[str, int]:
    cfg, keys = d.cfg, d.layout["mamba"]
    heads, state = cfg.size(keys["heads"], limit=2**16), cfg.size(keys["state"], limit=2**16)
    groups, conv = cfg.size(keys["groups"], limit=2**16), cfg.size(keys["conv"], limit=4096)
    if keys.get("inner") == "heads":  # Nemotron-H: heads x head_dim
        inner = heads * cfg.size(keys["head_dim"], limit=2**16)
    elif keys.get("inner") == "d_ssm" and not ("mamba_d_ssm" in cfg.raw and cfg.raw["mamba_d_ssm"] is None):
        inner = cfg.size("mamba_d_ssm")  # Falcon-H1: the class default 1024 unless config.json says null
    else:
        inner = int(_number(cfg, keys["expand"]) * d.hidden)
    return {"heads": heads, "state": state, "groups": groups, "conv": conv, "inner": inner,
            "conv_dim": inner + 2 * groups * state}


def _mamba2(d: Dims, block: Block) -> list[TensorInfo]:
    cfg, keys, hidden = d.cfg, d.layout["mamba"], d.hidden
    m = _mamba_keys(d)
    width = m["inner"] + m["conv_dim"] + m["heads"]  # z, x B C, dt
    out = [block("ssm_in.weight", hidden, width), block("ssm_conv1d.weight", m["conv"], m["conv_dim"]),
           block("ssm_dt.bias", m["heads"]), block("ssm_a", m["heads"]), block("ssm_d", m["heads"]),
           block("ssm_out.weight", m["inner"], hidden)]
    if cfg.switch(keys.get("conv_bias")):
        out.append(block("ssm_conv1d.bias", m["conv_dim"]))
    if cfg.switch(keys.get("proj_bias")):
        out.append(block("ssm_in.bias", width))
    if cfg.switch(keys.get("out_bias", keys.get("proj_bias"))):
        out.append(block("ssm_out.bias", hidden))
    if cfg.switch(keys.get("norm", True)):
        out.append(block("ssm_norm.weight", m["inner"]))
    return out


def _mamba1_keys(d: Dims) -> dict[str, int]:
    cfg = d.cfg
    return {"inner": int(_number(cfg, "mamba_expand") * d.hidden), "state": cfg.size("mamba_d_state", limit=2**16),
            "conv": cfg.size("mamba_d_conv", limit=4096), "rank": cfg.size("mamba_dt_rank", limit=2**16)}


def _mamba1(d: Dims, block: Block) -> list[TensorInfo]:
    """Jamba's Mamba mixer, with its RMSNorms on dt, B and C."""
    cfg, hidden = d.cfg, d.hidden
    m = _mamba1_keys(d)
    inner, state, rank = m["inner"], m["state"], m["rank"]
    out = [block("ssm_in.weight", hidden, 2 * inner), block("ssm_conv1d.weight", m["conv"], inner),
           block("ssm_x.weight", inner, rank + 2 * state), block("ssm_dt.weight", rank, inner),
           block("ssm_dt.bias", inner), block("ssm_a", state, inner), block("ssm_d", inner),
           block("ssm_out.weight", inner, hidden),
           block("ssm_dt_norm.weight", rank), block("ssm_b_norm.weight", state), block("ssm_c_norm.weight", state)]
    if cfg.flag("mamba_conv_bias"):
        out.append(block("ssm_conv1d.bias", inner))
    if cfg.flag("mamba_proj_bias"):
        out += [block("ssm_in.bias", 2 * inner), block("ssm_out.bias", hidden)]
    return out


def _deltanet_keys(d: Dims) -> dict[str, int]:
    cfg = d.cfg
    k_heads, v_heads = cfg.size("linear_num_key_heads", limit=2**16), cfg.size("linear_num_value_heads", limit=2**16)
    k_dim, v_dim = cfg.size("linear_key_head_dim", limit=2**16), cfg.size("linear_value_head_dim", limit=2**16)
    return {"k_heads": k_heads, "v_heads": v_heads, "k_dim": k_dim, "v_dim": v_dim,
            "conv": cfg.size("linear_conv_kernel_dim", limit=4096), "conv_dim": 2 * k_heads * k_dim + v_heads * v_dim}


def _deltanet(d: Dims, block: Block) -> list[TensorInfo]:
    """Qwen3-Next's gated DeltaNet: q, k, v, z projected together, a causal convolution over q k v."""
    n, hidden = _deltanet_keys(d), d.hidden
    keys, values = n["k_heads"] * n["k_dim"], n["v_heads"] * n["v_dim"]
    return [block("ssm_in.weight", hidden, 2 * keys + 2 * values), block("ssm_ba.weight", hidden, 2 * n["v_heads"]),
            block("ssm_conv1d.weight", n["conv"], n["conv_dim"]), block("ssm_dt.bias", n["v_heads"]),
            block("ssm_a", n["v_heads"]), block("ssm_norm.weight", n["v_dim"]),
            block("ssm_out.weight", values, hidden)]


def _shortconv(d: Dims, block: Block) -> list[TensorInfo]:
    """LFM2's gated short convolution."""
    cfg, hidden = d.cfg, d.hidden
    size = cfg.size("conv_L_cache", limit=4096)
    out = [block("shortconv.conv.weight", size, hidden), block("shortconv.in_proj.weight", hidden, 3 * hidden),
           block("shortconv.out_proj.weight", hidden, hidden)]
    if cfg.flag("conv_bias"):
        out += [block("shortconv.conv.bias", hidden), block("shortconv.in_proj.bias", 3 * hidden),
                block("shortconv.out_proj.bias", hidden)]
    return out


def _number(cfg: Config, key: str) -> float:
    """A finite positive number (an expansion factor or multiplier)."""
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value <= 64:
        raise ModelFileError(f"{cfg.where}: {key} = {value!r} is not a number from 0 to 64")
    return float(value)
