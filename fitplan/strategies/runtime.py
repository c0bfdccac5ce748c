"""The runtime strategy: which runtime runs the plan. Its options are strategies.toml's [runtime.*]
rows; each runtime's cost model and executor live in strategies/runtimes/<runtime>/ and are found
through the registry (strategies/registry.py `cost_model`, `executor`)."""
from __future__ import annotations

from fitplan.strategies.strategy import TableStrategy, table_options

STRATEGY = TableStrategy("runtime", "llama.cpp, transformers (+accelerate), vLLM for multi-GPU / multi-node",
                         lambda: table_options("runtime", "runtime"))
