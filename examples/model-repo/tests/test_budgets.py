"""Budgets on the model this project ships, with fitplan's pytest plugin.

Measured here: memory of loading and a reply, decode rate, a reply's latency. The rate and latency
budgets leave at least 10x of what a 2-core CI machine measures (README, "Budgets and their
headroom"), so a busy runner cannot fail them; memory does not swing with load, and keeps 2x.
Predicted (no GPU needed): the shipped file's plan at 8K context on two GPU profiles.
"""
from __future__ import annotations

import pytest

from smolchat import Chat, model_path

MODEL = model_path()


@pytest.mark.fits_ram("400MB")
def test_loading_and_a_reply_fit_in_ram() -> None:
    chat = Chat(context=2048)
    try:
        assert chat.reply("Say hello.", max_tokens=8)
    finally:
        chat.close()


@pytest.mark.min_tokens_per_s(5)
def test_decode_rate_on_this_machine(fitplan_model) -> None:
    model = fitplan_model(MODEL, runtime="llama.cpp", threads=2, context=2048)
    timing = model.run(prompt_tokens=64, gen_tokens=32)
    assert timing.generated == 32


@pytest.mark.max_latency("2s", percentile=90)
def test_a_short_reply_is_quick(fitplan_timer) -> None:
    chat = Chat(context=1024)
    try:
        timing = fitplan_timer(lambda: chat.reply("Hi", max_tokens=8), repeat=5, warmup=1)
    finally:
        chat.close()
    assert len(timing.samples) == 5


@pytest.mark.fits_vram("1.2GB", model=MODEL, hardware="rtx-3060-12gb", context=8192)
@pytest.mark.fits_vram("1.2GB", model=MODEL, hardware="jetson-agx-orin-64gb", context=8192)
def test_the_shipped_file_fits_small_gpus_at_8k() -> None:
    """Predicted on both profiles: every layer on the GPU, the file's own Q4_1 weights."""
