"""fitplan's own runtime executors, registered through the same pluggy hook a third-party plugin uses.

Kept apart from the runtime modules so that `advise`, which needs only their cost models, never
imports pluggy.
"""
from __future__ import annotations

from typing import Any, Callable

from fitplan.strategies.hookspecs import hookimpl
from fitplan.strategies.runtime_llamacpp import LlamaCppExecutor
from fitplan.strategies.runtime_transformers import TransformersExecutor


@hookimpl
def fitplan_register_runtimes(register: Callable[[Any], None]) -> None:
    register(LlamaCppExecutor())
    register(TransformersExecutor())
