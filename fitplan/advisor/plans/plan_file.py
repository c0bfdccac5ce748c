"""The plan file: what `advise -o` writes and `run`, `verify`, `export` and `fitplan.load` read.

A plan is data. It is validated field by field (pydantic, unknown fields refused), its schema is
versioned and published (`fitplan schema plan`), and nothing in it is evaluated or imported: the
runtime and every strategy option are names checked against the known ones.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fitplan.errors import BadValueError
from fitplan.plan_spec import MAX_BATCH, MAX_CONTEXT, MAX_DRAFT_TOKENS, MAX_THREADS

PLAN_SCHEMA_VERSION = 1
PLAN_KIND = "fitplan-plan"
MAX_PLAN_BYTES = 4 * 2**20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanModel(_Strict):
    """Where the weights are: a catalog name, a local file or folder, or a hub id."""

    name: str
    source: Literal["catalog", "gguf", "folder", "hub"]
    location: str
    hub_id: str | None = None
    fingerprint: str | None = None  # of local weights: see `fingerprint`
    parameters: int = Field(ge=0)
    layers: int = Field(gt=0)


class PlanHardware(_Strict):
    name: str
    detected: bool
    gpus: list[str] = []
    cpu: str
    ram_bytes: int = Field(gt=0)


class Speculative(_Strict):
    draft: str  # a model (catalog name or local file) or "prompt-lookup"
    draft_weights: str | None = None  # the draft's format, e.g. bf16 for a lower-precision copy (transformers)
    draft_tokens: int = Field(gt=0, le=MAX_DRAFT_TOKENS)
    acceptance: float = Field(ge=0, lt=1)
    acceptance_source: str = ""
    cost_ratio: float | None = None
    speedup: float | None = None
    used: bool = True


class PlanSetup(_Strict):
    """Every chosen strategy option: what the executors carry out."""

    runtime: Literal["llama.cpp", "transformers", "onnxruntime"]
    weights: str
    kv_cache: str
    context: int = Field(gt=0, le=MAX_CONTEXT)
    batch: int = Field(gt=0, le=MAX_BATCH)
    threads: int = Field(gt=0, le=MAX_THREADS)
    gpu_layers: int = Field(ge=0)
    gpus: int = Field(ge=0)
    cpu_moe_layers: int = Field(default=0, ge=0)
    flash_attn: bool = False
    use_mmap: bool = True  # llama.cpp maps the file (pages load on demand, the page cache is shared)
    use_mlock: bool = False  # llama.cpp locks the weights in RAM (no swapping; needs RLIMIT_MEMLOCK)
    placement: Literal["gpu", "split", "cpu", "experts-cpu", "exact", "disk"]
    disk_layers: int = Field(default=0, ge=0)
    layer_map: list[str] = []
    expert_map: list[str] = []
    tensor_overrides: list[str] = []
    prune: str = ""
    sparse_kernels: bool = False
    speculative: Speculative | None = None
    context_note: str = ""
    weights_source: dict[str, Any] = {}
    pruning: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _possible(self) -> PlanSetup:
        """Refuse combinations no runtime can execute (one message each)."""
        from fitplan.strategies.kv_cache import kv_bytes_per_element
        from fitplan.strategies.pruning import parse_prune
        from fitplan.strategies.quantization import weight_format

        fmt = weight_format(self.weights, source="plan.weights", runtime=self.runtime)
        if fmt.runtime != self.runtime:
            raise ValueError(f"weights {self.weights} run on {fmt.runtime}, not on {self.runtime}")
        kv_bytes_per_element(self.kv_cache, self.runtime)
        if self.runtime == "llama.cpp" and self.kv_cache in ("q8_0", "q4_0") and not self.flash_attn:
            raise ValueError(f"a {self.kv_cache} KV cache needs flash_attn in llama.cpp")
        if (self.gpu_layers > 0) != (self.gpus > 0):
            raise ValueError("gpu_layers and gpus must be both zero (CPU) or both positive")
        if self.placement == "cpu" and self.gpu_layers:
            raise ValueError("placement 'cpu' with gpu_layers > 0")
        if self.prune:
            parse_prune(self.prune)
            if self.runtime != "transformers":
                raise ValueError("pruning runs on transformers only")
        if self.disk_layers and self.runtime != "transformers":
            raise ValueError("disk_layers (accelerate's disk offload) runs on transformers only")
        if self.sparse_kernels and self.prune != "2:4":
            raise ValueError("sparse_kernels needs prune '2:4'")
        return self


class PlanFile(_Strict):
    schema_version: int
    kind: Literal["fitplan-plan"] = PLAN_KIND
    created_by: str = ""
    model: PlanModel
    hardware: PlanHardware
    fits: bool
    plan: PlanSetup
    predicted: dict[str, Any]
    quality: dict[str, Any]
    why: str


def plan_from_advice(doc: dict[str, Any]) -> PlanFile:
    """The plan file of an advise document (its chosen plan, without the alternatives)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        created_by = f"fitplan {version('fitplan')}"
    except PackageNotFoundError:  # running from a source tree
        created_by = "fitplan"
    m, hw = doc["model"], doc["hardware"]
    model = PlanModel(name=m["name"], source=m["source"], location=m["location"], hub_id=m.get("hub_id"),
                      fingerprint=fingerprint(m["location"]) if m["source"] in ("gguf", "folder") else None,
                      parameters=m["parameters"], layers=m["layers"])
    hardware = PlanHardware(name=hw["name"], detected=hw["detected"], gpus=[g["name"] for g in hw["gpus"]],
                            cpu=hw["cpu"]["name"], ram_bytes=hw["ram_bytes"])
    return PlanFile(schema_version=PLAN_SCHEMA_VERSION, created_by=created_by, model=model, hardware=hardware,
                    fits=doc["fits"], plan=PlanSetup(**doc["plan"]), predicted=doc["predicted"],
                    quality=doc["quality"], why=doc["why"])


def load_plan(path: str) -> PlanFile:
    """Read and validate a plan file; every problem is one line naming the file and the field."""
    from fitplan.advisor.models.safetensors_header import strict_json
    from fitplan.user_files import read_bytes

    doc = strict_json(read_bytes(path, limit=MAX_PLAN_BYTES, what="plan file"), path)
    return parse_plan(doc, path)


def parse_plan(doc: Any, where: str = "plan") -> PlanFile:
    if not isinstance(doc, dict) or doc.get("kind") != PLAN_KIND:
        raise BadValueError(f"{where} is not a fitplan plan file (no \"kind\": \"{PLAN_KIND}\"); write one with advise -o")
    version = doc.get("schema_version")
    if version != PLAN_SCHEMA_VERSION:
        newer = isinstance(version, int) and version > PLAN_SCHEMA_VERSION
        raise BadValueError(f"{where} has plan schema version {version!r}; this fitplan reads version "
                            f"{PLAN_SCHEMA_VERSION}: " + ("upgrade fitplan" if newer else "write the plan again with advise -o"))
    try:
        return PlanFile.model_validate(doc)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        raise BadValueError(f"{where}: {field}: {message}") from None
    except BadValueError as exc:  # an unknown format or KV type, raised by the checks above
        raise BadValueError(f"{where}: {exc}") from None


def plan_json_schema() -> dict[str, Any]:
    schema = PlanFile.model_json_schema()
    schema["$id"] = f"https://fitplan.dev/schema/plan/v{PLAN_SCHEMA_VERSION}.json"
    schema["title"] = f"fitplan plan file, schema version {PLAN_SCHEMA_VERSION}"
    return schema


def fingerprint(location: str) -> str:
    """sha256 over each weight file's size and first and last MiB: it tells a replaced or truncated
    file from the planned one in milliseconds, without reading 100 GB.

    Regular files only: a FIFO, a device, a folder or a dangling link, as the location or named like a
    weight file inside it, is refused in one line (ModelFileError) rather than blocking or reading forever."""
    from fitplan.errors import ModelFileError
    from fitplan.user_files import open_regular, printable

    if os.path.isdir(location):
        try:
            names = os.listdir(location)
        except OSError as exc:
            raise ModelFileError(printable(f"cannot list model folder {location}: {exc.strerror or exc}")) from None
        files = sorted(os.path.join(location, n) for n in names if n.endswith((".safetensors", ".gguf", "config.json")))
    else:
        files = [location]
    digest = hashlib.sha256()
    for path in files:
        fd = open_regular(path, "model file", ModelFileError)
        try:
            size = os.fstat(fd).st_size
            digest.update(f"{os.path.basename(path)}:{size}:".encode())
            digest.update(os.pread(fd, 2**20, 0))
            if size > 2**21:
                digest.update(os.pread(fd, 2**20, size - 2**20))
        except OSError as exc:
            raise ModelFileError(printable(f"cannot read model file {path}: {exc.strerror or exc}")) from None
        finally:
            os.close(fd)
    return "sha256-ends:" + digest.hexdigest()


def check_fingerprint(plan: PlanFile) -> None:
    """The local weights must be the ones planned for."""
    m = plan.model
    if m.source not in ("gguf", "folder"):
        return
    if not os.path.exists(m.location):
        raise BadValueError(f"the plan's model {m.location} does not exist")
    if not m.fingerprint:  # without it, nothing would tell the planned weights from any other file
        raise BadValueError(f"the plan names local weights {m.location} but no fingerprint of them, so nothing "
                            "can check they are the planned ones: run advise -o again")
    if fingerprint(m.location) != m.fingerprint:
        raise BadValueError(f"{m.location} changed since the plan was made (fingerprint differs): run advise -o again")


LOCAL_KINDS = ("existing file", "existing files", "cast at load", "dequantized at load", "quantized at load time",
               "exported locally")


def local_weights(plan: PlanFile) -> str:
    """The local file or folder a runtime loads for this plan; never pretends weights exist."""
    m, source = plan.model, plan.plan.weights_source
    if m.source not in ("gguf", "folder"):
        how = source.get("how") or source.get("kind", "")
        raise BadValueError(f"the plan's model {m.name} has no local weights ({m.source} {m.location}): {how}".rstrip(": "))
    check_fingerprint(plan)
    if source and source.get("kind") not in LOCAL_KINDS:
        raise BadValueError(f"the plan's {plan.plan.weights} weights are not on disk yet ({source.get('kind')}): "
                            f"{source.get('how', '')}")
    return m.location
