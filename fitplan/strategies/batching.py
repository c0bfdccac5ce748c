"""Parallel sequences for throughput work (embeddings, document processing): the KV cache and
activations grow with every sequence, the weights are read once per step for the whole batch
(advisor/planner/speed.py: batch tokens/s). Chosen with --batch; the throughput objective ranks by it."""
from __future__ import annotations

from fitplan.strategies.strategy import TableStrategy, table_options

STRATEGY = TableStrategy("batching", "parallel sequences: KV cache per sequence, weights read once per step",
                         lambda: table_options("batching", "batching"))
