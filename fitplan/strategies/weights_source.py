"""How a plan's weights are obtained: never pretend a file exists.

An existing local file, a cast or quantization at load time, a local conversion (with the
command), or a download (which repository, how many bytes).
"""
from __future__ import annotations

from typing import Any

from fitplan.model_spec import ModelSpec
from fitplan.strategies.quantization import WeightFormat

_LOAD_TIME = {"bnb8": "bitsandbytes int8 (BitsAndBytesConfig)", "bnb4": "bitsandbytes 4-bit (BitsAndBytesConfig)",
              "dynint8": "torch's quantize_dynamic, per output channel, after an fp32 load"}


def weights_source(spec: ModelSpec, fmt: WeightFormat, weight_bytes: int) -> dict[str, Any]:
    local = spec.source in ("gguf", "folder")
    if fmt.runtime == "onnxruntime":
        how = "optimum exports the fp32 model to ONNX once (text-generation-with-past), cached by fingerprint" + (
            "; onnxruntime's quantize_dynamic writes its int8 copy once" if fmt.family == "dynint8" else "")
        if local:
            return {"kind": "exported locally", "bytes": weight_bytes, "how": how}
        return _download(spec, f"the safetensors of {spec.hub_id}, then an ONNX export", weight_bytes)
    if spec.source == "gguf":
        return _from_gguf(spec, fmt, weight_bytes)
    if fmt.family == "dense":
        if local and fmt.name == spec.native_dtype:
            return {"kind": "existing files", "where": spec.location, "bytes": spec.stored_bytes or weight_bytes}
        if local:
            return {"kind": "cast at load", "how": f"transformers loads the {spec.native_dtype} files as {fmt.name}"}
        return _download(spec, f"the {spec.native_dtype} safetensors of {spec.hub_id}", weight_bytes)
    if fmt.family in _LOAD_TIME:
        base = {"kind": "quantized at load time", "how": f"{_LOAD_TIME[fmt.family]}, from the 16/32-bit weights"}
        return base if local else {**base, "needs": _download(spec, f"the safetensors of {spec.hub_id}", 0)}
    if fmt.family in ("gptq", "awq"):
        return {"kind": "download a pre-quantized checkpoint",
                "how": f"a {fmt.name} checkpoint of {spec.hub_id or spec.name} (search the hub; fitplan does not "
                       "know that one exists), or quantize it yourself with gptqmodel / llm-compressor",
                "bytes": weight_bytes}
    convert = (f"python convert_hf_to_gguf.py {spec.location if local else '<downloaded folder>'} --outtype bf16 "
               f"--outfile model-bf16.gguf && llama-quantize model-bf16.gguf model-{fmt.name}.gguf {fmt.name}")
    if local:
        return {"kind": "convert locally", "how": convert, "bytes": weight_bytes}
    return {"kind": "download or convert", "how": f"a {fmt.name} GGUF of {spec.hub_id} (search the hub), or download "
            f"the safetensors and convert: {convert}", "bytes": weight_bytes}


def _from_gguf(spec: ModelSpec, fmt: WeightFormat, weight_bytes: int) -> dict[str, Any]:
    if fmt.family == "gguf" and fmt.name == spec.native_dtype:
        return {"kind": "existing file", "where": spec.location, "bytes": spec.stored_bytes or weight_bytes}
    if fmt.family == "gguf":
        return {"kind": "convert locally", "bytes": weight_bytes,
                "how": f"llama-quantize --allow-requantize {spec.location} model-{fmt.name}.gguf {fmt.name}"
                       f" (requantizing from {spec.native_dtype} keeps its losses; a 16-bit source is better)"}
    then = f"; then {_LOAD_TIME[fmt.family]}" if fmt.family in _LOAD_TIME else ""
    return {"kind": "dequantized at load", "how": f"transformers dequantizes the GGUF ({spec.native_dtype}) at load "
            f"(gguf_file=) into {fmt.name if not then else 'fp32 safetensors, once'}{then}; the quantization loss of "
            "the file stays", "bytes": weight_bytes}


def _download(spec: ModelSpec, what: str, weight_bytes: int) -> dict[str, Any]:
    size = spec.stored_bytes or weight_bytes or None
    return {"kind": "download", "what": what, "from": f"https://huggingface.co/{spec.hub_id}" if spec.hub_id else None,
            "bytes": size}
