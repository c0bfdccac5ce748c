"""The runtime executors known to this installation, collected through the pluggy hooks."""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Protocol

from fitplan.errors import BadValueError


class RuntimeExecutor(Protocol):
    """Runs a plan on a real runtime (loaded lazily: nothing heavy is imported before `open`)."""

    name: str

    def missing(self) -> str | None:
        """Why this runtime cannot run here (package absent, no GPU), or None."""

    def open(self, source: Any, setup: Any, *, layers: int) -> Any:
        """Load the model as `setup` says; the result has `run(prompt_tokens, gen_tokens)` and `close()`."""


@lru_cache(maxsize=1)
def _executors() -> dict[str, RuntimeExecutor]:
    import pluggy

    from fitplan.strategies import builtin_runtimes, hookspecs

    manager = pluggy.PluginManager("fitplan")
    manager.add_hookspecs(hookspecs)
    manager.register(builtin_runtimes)
    manager.load_setuptools_entrypoints("fitplan")
    found: dict[str, RuntimeExecutor] = {}
    manager.hook.fitplan_register_runtimes(register=lambda e: found.setdefault(e.name, e))
    return found


def executor(name: str) -> RuntimeExecutor:
    found = _executors()
    if name not in found:
        raise BadValueError(f"no executor for runtime {name!r}; installed: {', '.join(sorted(found))}")
    return found[name]
