"""`fitplan export PLAN --to python|shell|llama-server|vllm|tensorrt-llm`: the plan as code or a
command line, and the server `fitplan run --serve` starts.

Each form is written by the plan runtime's executor (strategies/runtimes/<runtime>/executor.py)
from the same argument builders its session uses, so they load and generate exactly as `fitplan
run` does; the tests run them and compare the first tokens. `--to vllm` / `--to tensorrt-llm`
(and `--serve --server`) take another executor's server for the plan's model.
"""
from __future__ import annotations

from fitplan.advisor.plans.plan_file import PlanFile, run_target
from fitplan.errors import BadValueError, RuntimeMissingError
from fitplan.strategies.registry import executor, executors, export_targets
from fitplan.strategies.runtimes.contract import Executor, ServeCommand

DEFAULT_PORT = 8000


def export(plan: PlanFile, to: str, *, max_tokens: int = 128, port: int = DEFAULT_PORT) -> str:
    if to not in export_targets():
        raise BadValueError(f"unknown export target {to!r} (--to); known: {', '.join(export_targets())}")
    runner = _server(to, plan) or executor(plan.plan.runtime)
    return runner.export(run_target(plan), to, max_tokens=max_tokens, port=port)


def serve(plan: PlanFile, *, port: int, host: str, server: str | None = None) -> ServeCommand:
    """What `fitplan run --serve` starts: the runtime's own OpenAI-compatible server, or with `server`
    another executor's (vLLM, TensorRT-LLM), which says in one line when it cannot run here."""
    if server not in (None, plan.plan.runtime) and _server(server, plan) is None:
        names = [n for n in executors() if n != plan.plan.runtime and n in export_targets()]
        raise BadValueError(f"unknown --server {server!r}; known: the plan's runtime, {', '.join(names)}")
    runner = _server(server, plan) if server else None
    if runner is not None:
        missing = runner.missing()
        if missing:
            raise RuntimeMissingError(missing)
    return (runner or executor(plan.plan.runtime)).serve(run_target(plan), port=port, host=host)


def _server(name: str | None, plan: PlanFile) -> Executor | None:
    """Another runtime's executor whose own server takes this plan's model (`--to vllm`), or None."""
    found = executors().get(name or "")
    if found is None or name == plan.plan.runtime or name not in found.exports:
        return None
    return found
