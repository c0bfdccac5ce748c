"""The plan file: what `advise -o` writes and `run`, `verify`, `export` and `fitplan.load` read.

A plan is data. It is validated field by field (pydantic, unknown fields refused), its schema is
versioned and published (`fitplan schema plan`), and nothing in it is evaluated or imported: the
runtime and every strategy option are names checked against the known ones.
"""
from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fitplan.errors import BadValueError, FitplanError
from fitplan.plan_spec import ModelSource, Placement, RunTarget, Setup
from fitplan.user_files import weights_fingerprint

PLAN_SCHEMA_VERSION = 1
PLAN_KIND: Literal["fitplan-plan"] = "fitplan-plan"
MAX_PLAN_BYTES = 4 * 2**20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanModel(_Strict):
    """Where the weights are: a catalog name, a local file or folder, or a hub id."""

    name: str
    source: Literal["catalog", "gguf", "folder", "hub"]
    location: str
    hub_id: str | None = None
    fingerprint: str | None = None  # of local weights: user_files.weights_fingerprint
    parameters: int = Field(ge=0)
    layers: int = Field(gt=0)


class PlanHardware(_Strict):
    name: str
    detected: bool
    gpus: list[str] = []
    cpu: str
    ram_bytes: int = Field(gt=0)


class PlanSetup(Setup):
    """Every chosen strategy option: what the executors carry out."""

    gpus: int = Field(ge=0)  # stated in every plan file, as is the placement
    placement: Placement

    @field_validator("runtime")
    @classmethod
    def _registered(cls, runtime: str) -> str:
        from fitplan.strategies.registry import runtime_names

        if runtime not in runtime_names():
            raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(runtime_names())}")
        return runtime

    @model_validator(mode="after")
    def _possible(self) -> PlanSetup:
        """Refuse what the registered runtimes cannot execute (one message each)."""
        refused = refusal(self)
        if refused:
            raise ValueError(refused)
        return self


def refusal(setup: Setup) -> str:
    """Why `setup`'s registered runtime cannot execute it ('' when it can): the plan file's checks."""
    from fitplan.strategies.pruning import parse_prune
    from fitplan.strategies.registry import check_kv_cache, cost_model, cost_models, weight_format
    from fitplan.strategies.runtimes.contract import DISK, PRUNE

    runtime = cost_model(setup.runtime)  # a registered one: the field's own check comes first
    fmt = weight_format(setup.weights, source="plan.weights", runtime=setup.runtime)
    if fmt.runtime != setup.runtime:
        return f"weights {setup.weights} run on {fmt.runtime}, not on {setup.runtime}"
    check_kv_cache(setup.kv_cache, setup.runtime)
    refused = runtime.refuse(setup)
    if refused:
        return refused
    if (setup.gpu_layers > 0) != (setup.gpus > 0):
        return "gpu_layers and gpus must be both zero (CPU) or both positive"
    if setup.placement == "cpu" and setup.gpu_layers:
        return "placement 'cpu' with gpu_layers > 0"
    if setup.prune:
        parse_prune(setup.prune)
        if PRUNE not in runtime.features:
            return f"pruning runs on {_having(cost_models(), PRUNE)} only"
    if setup.disk_layers and DISK not in runtime.features:
        return f"disk_layers (accelerate's disk offload) runs on {_having(cost_models(), DISK)} only"
    if setup.sparse_kernels and setup.prune != "2:4":
        return "sparse_kernels needs prune '2:4'"
    return ""


def _having(models: dict[str, Any], feature: str) -> str:
    return " / ".join(name for name, m in models.items() if feature in m.features)


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
                      fingerprint=weights_fingerprint(m["location"]) if m["source"] in ("gguf", "folder") else None,
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


def parse_plan(doc: object, where: str = "plan") -> PlanFile:
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
    from fitplan.strategies.registry import runtime_names

    schema = PlanFile.model_json_schema()
    # a plan names a registered runtime: the schema lists this installation's
    schema["$defs"]["PlanSetup"]["properties"]["runtime"] = {"enum": runtime_names(), "title": "Runtime", "type": "string"}
    schema["$id"] = f"https://fitplan.dev/schema/plan/v{PLAN_SCHEMA_VERSION}.json"
    schema["title"] = f"fitplan plan file, schema version {PLAN_SCHEMA_VERSION}"
    return schema


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
    if weights_fingerprint(m.location) != m.fingerprint:
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


def run_target(plan: PlanFile) -> RunTarget:
    """What an executor runs for `plan`: its choices and model, with the local weights checked (or the
    one-line reason there are none, raised only by an executor that needs them)."""
    local, why = None, None
    try:
        local = ModelSource(plan.model.source, local_weights(plan))
    except FitplanError as exc:
        why = exc
    m = plan.model
    return RunTarget(plan.plan, m.name, m.layers, m.source, m.location, m.hub_id, m.fingerprint, local, why)
