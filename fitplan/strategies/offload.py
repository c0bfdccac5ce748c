"""Where the blocks go: all on the GPUs, the first N on the GPUs and the rest on the CPU, MoE routed
experts on the CPU (llama.cpp --n-cpu-moe), an exact per-block/per-expert placement (the MILP in
advisor/planner/placement.py), or all on the CPU. Memory per device and the speed of each placement come
from the runtimes' cost models and advisor/planner/speed.py."""
from __future__ import annotations

from fitplan.strategies.strategy import TableStrategy, table_options

STRATEGY = TableStrategy("offload", "placement of blocks and MoE experts over GPUs and CPU",
                         lambda: table_options("offload", "offload"))
