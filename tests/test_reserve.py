"""The GPU reserve: what every plan leaves free on each GPU (runtimes.toml [gpu_reserve], `advise
--reserve`, a budget's `reserve`, the plugin's `reserve=` and `--fitplan-reserve`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.advisor.planner.solver import Request, advise
from fitplan.hardware_spec import HardwareSpec
from fitplan.profiles.named import load_profile
from fitplan.strategies.offload import default_gpu_reserve_bytes

pytest_plugins = ["pytester"]
BIN = Path(sys.executable).parent
GIB = 2**30


def run(tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


def advise_json(*args: str) -> dict:
    done = run("advise", *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def gpu_totals(doc: dict) -> list[tuple[int, int, int]]:
    """(predicted total, card size, reserve) of every GPU of the chosen plan and of each alternative."""
    gpus = doc["hardware"]["gpus"]
    return [(plan["predicted"]["memory"][f"gpu{i}"]["total"], gpu["memory_bytes"], gpu["reserve"])
            for plan in (doc, *doc["alternatives"]) for i, gpu in enumerate(gpus)
            if f"gpu{i}" in plan["predicted"]["memory"]]


def test_the_default_is_llama_cpp_fit_margin() -> None:
    """1024 MiB per GPU: llama.cpp --fit's default margin (`--fit-target`, default 1024 MiB; docs/memory.md)."""
    assert default_gpu_reserve_bytes() == 1024 * 2**20


@pytest.mark.parametrize("model", ["llama-3.1-70b", "mixtral-8x7b-v0.1"])
def test_plans_on_a_4090_leave_the_reserve_free(model: str) -> None:
    """70B and Mixtral-8x7B Q4_K_M on one RTX 4090 used 25.7 of its 25.76 GB; now every plan that
    fits keeps the reserve free on the GPU, and the JSON says how much that is."""
    doc = advise_json(model, "--weights", "Q4_K_M", "--hardware", "rtx-4090-24gb")
    assert doc["fits"]
    totals = gpu_totals(doc)
    assert totals and all(reserve == default_gpu_reserve_bytes() for _, _, reserve in totals)
    assert all(total <= card - reserve for total, card, reserve in totals), totals


def test_reserve_zero_gives_back_the_whole_card() -> None:
    """--reserve 0 plans on the whole card, as before the reserve: the 70B split then fills the GPU
    past card - 1 GiB, which the default plan never does; the JSON shows reserve 0."""
    whole = advise_json("llama-3.1-70b", "--weights", "Q4_K_M", "--hardware", "rtx-4090-24gb", "--reserve", "0")
    default = advise_json("llama-3.1-70b", "--weights", "Q4_K_M", "--hardware", "rtx-4090-24gb")
    (total, card, reserve), *_ = gpu_totals(whole)
    assert reserve == 0 and card - default_gpu_reserve_bytes() < total <= card
    assert whole["plan"]["gpu_layers"] > default["plan"]["gpu_layers"]
    assert advise_json("llama-3.1-70b", "--weights", "Q4_K_M", "--hardware", "rtx-4090-24gb",
                       "--reserve", "0GB") == whole


def test_a_reserve_takes_exactly_its_size_off_each_card() -> None:
    """A plan with a reserve R on a card of M bytes is the plan on a card of M - R without one (any R)."""
    spec, hw = catalog_spec("llama-3.1-70b"), load_profile("rtx-4090-24gb")
    smaller = hw.model_copy(update={"gpus": (hw.gpus[0].model_copy(update={"memory_bytes": hw.gpus[0].memory_bytes
                                                                                         - 3 * GIB}),)})
    reserved = advise(spec, hw, Request(weights="Q4_K_M", reserve=3 * GIB)).chosen
    plain = advise(spec, smaller, Request(weights="Q4_K_M", reserve=0)).chosen
    assert (reserved.setup, reserved.memory) == (plain.setup, plain.memory)


def test_a_detected_gpu_reserves_from_its_free_memory() -> None:
    """With --hardware auto the reserve comes off NVML's free memory, not the card's size."""
    hw = load_profile("rtx-3060-12gb")
    free = 9 * GIB
    detected = HardwareSpec.model_validate({**hw.model_dump(), "detected": True,
                                            "gpus": [{**hw.gpus[0].model_dump(), "free_memory_bytes": free}]})
    advice = advise(catalog_spec("llama-3.1-8b"), detected, Request(weights="Q4_K_M", context=32768))
    assert advice.fits and 0 < advice.chosen.memory["gpu0"].total <= free - default_gpu_reserve_bytes()


def test_json_shows_the_reserve_asked_for() -> None:
    """--reserve 2GiB: reserve 2147483648 on every GPU entry, and every plan's GPU total within card - 2 GiB;
    the other fields of hardware.gpus keep their meaning (usable_bytes is still the whole card)."""
    doc = advise_json("llama-3.1-70b", "--weights", "Q4_K_M", "--hardware", "2xrtx-4090-24gb", "--reserve", "2GiB")
    assert [set(g) for g in doc["hardware"]["gpus"]] == [{"name", "backend", "memory_bytes", "usable_bytes", "reserve",
                                                         "unified_memory"}] * 2
    assert all(g["reserve"] == 2 * GIB and g["usable_bytes"] == g["memory_bytes"] for g in doc["hardware"]["gpus"])
    assert all(total <= card - 2 * GIB for total, card, _ in gpu_totals(doc))


@pytest.mark.parametrize("value", ["12XB", "-1GB", "12", "", "lots"])
def test_a_bad_reserve_is_one_line_and_exit_2(value: str) -> None:
    """advise --reserve and fitplan check --reserve refuse a bad size in one stderr line naming --reserve."""
    for tool, args in (("advise", ("llama-3.1-8b",)), ("fitplan", ("check",))):
        done = run(tool, *args, "--reserve", value)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "--reserve" in done.stderr and "Traceback" not in done.stderr + done.stdout


BUDGETS = """
[[budget]]
name = "{name}"
model = "llama-3.1-70b"
weights = "Q4_K_M"
offload = true
hardware = ["rtx-4090-24gb"]
max_vram = "100GB"
{reserve}
"""


def check_figures(folder: Path, *args: str) -> dict[str, float]:
    done = run("fitplan", "check", "--format", "json", *args, cwd=folder)
    assert done.returncode == 0, done.stderr
    return {r["label"]: r["predicted"] for r in json.loads(done.stdout)["results"]}


def test_check_takes_a_reserve_per_budget_and_a_default(tmp_path: Path) -> None:
    """A budget's `reserve` key sets what its predicted plan leaves free on each GPU; `fitplan check
    --reserve` does for the budgets without one; neither is added to the predicted figure."""
    body = "".join(BUDGETS.format(name=name, reserve=reserve) for name, reserve in
                   (("own 4GiB", 'reserve = "4GiB"'), ("own 0", 'reserve = "0"'), ("default", "")))
    (tmp_path / "fitplan.toml").write_text(body)
    card = load_profile("rtx-4090-24gb").gpus[0].memory_bytes
    figures = check_figures(tmp_path)
    assert figures["own 4GiB"] <= card - 4 * GIB < figures["default"] <= card - GIB < figures["own 0"] <= card
    figures_2g = check_figures(tmp_path, "--reserve", "2GiB")
    assert (figures_2g["own 4GiB"], figures_2g["own 0"]) == (figures["own 4GiB"], figures["own 0"])
    assert card - 4 * GIB < figures_2g["default"] <= card - 2 * GIB


def test_a_bad_reserve_key_names_file_line_and_field(tmp_path: Path) -> None:
    """reserve = "12XB" in a budget file: one line with the file, the line and the field; exit 2."""
    (tmp_path / "fitplan.toml").write_text(BUDGETS.format(name="bad", reserve='reserve = "12XB"'))
    done = run("fitplan", "check", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "fitplan.toml:9: budget 1, reserve: bad size '12XB'" in done.stderr


def test_plugin_predicted_fits_vram_takes_a_reserve(pytester: pytest.Pytester) -> None:
    """fits_vram(model=..., offload=True) on a 4090: 70B's GPU share under a 22 GB budget only when the
    plan leaves 4 GiB free (reserve= on the marker, else --fitplan-reserve); a bad reserve= errors that test."""
    pytester.makepyfile(test_budgets=textwrap.dedent("""
        import pytest

        PINS = dict(model="llama-3.1-70b", hardware="rtx-4090-24gb", weights="Q4_K_M", offload=True)

        @pytest.mark.fits_vram("22GB", reserve="4GiB", **PINS)
        def test_own_reserve():
            pass

        @pytest.mark.fits_vram("22GB", **PINS)
        def test_session_reserve():
            pass

        @pytest.mark.fits_vram("22GB", reserve="12XB", **PINS)
        def test_bad_reserve():
            pass
        """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-ra")
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(["*test_bad_reserve*reserve='12XB': bad size '12XB'*"])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-ra", "--fitplan-reserve", "4GiB")
    result.assert_outcomes(passed=2, errors=1)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fitplan-reserve", "lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad size 'lots' (--fitplan-reserve)*"])
