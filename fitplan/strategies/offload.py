"""Where the blocks go: all on the GPUs, the first N on the GPUs and the rest on the CPU, MoE routed
experts on the CPU (llama.cpp --n-cpu-moe), an exact per-block/per-expert placement (the MILP in
advisor/planner/placement.py), or all on the CPU. Memory per device and the speed of each placement come
from the runtimes' cost models and advisor/planner/speed.py; every placement leaves the GPU reserve free."""
from __future__ import annotations

from fitplan.datafiles import load_table
from fitplan.strategies.strategy import TableStrategy, table_options

STRATEGY = TableStrategy("offload", "placement of blocks and MoE experts over GPUs and CPU",
                         lambda: table_options("offload", "offload"))


def default_gpu_reserve_bytes() -> int:
    """What a plan leaves free on each GPU unless told otherwise: headroom the memory model cannot
    see (allocator rounding, other processes, a display), as llama.cpp's --fit keeps (runtimes.toml)."""
    return int(load_table("fitplan.strategies.data", "runtimes.toml")["gpu_reserve"]["default_bytes"])
