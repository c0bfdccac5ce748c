"""The truth set (bench/data/published/): every point sourced and set; the accuracy summary and the
fitted terms reproduced from it (both are deterministic, so a drift is a change someone must explain)."""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data" / "published"
SOURCE = re.compile(r"^https://github\.com/[\w.-]+/[\w.-]+/(pull|issues|discussions|blob)/\S+$")
# llama-bench's tests, or llama_print_timings' lines where a source printed those
TEST = re.compile(r"^((pp|tg)\d+(\+tg\d+)?(\s?@\s?d\d+)?|prompt eval \d+ tokens|eval \d+ runs)$")


def speed_rows() -> list[dict[str, str]]:
    rows = []
    for path in sorted((DATA / "speed").glob("*.csv")):
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            assert reader.fieldnames and reader.fieldnames[0] == "source", path
            rows += [{**r, "file": path.name} for r in reader]
    return rows


@pytest.fixture(scope="module")
def published():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import published as module
    finally:
        sys.path.pop(0)
    return module


@pytest.fixture(scope="module")
def truth(published):
    """(cases, skipped) built once: each case sizes a real plan."""
    return published.cases()


def test_every_speed_point_has_a_source_and_its_settings() -> None:
    rows = speed_rows()
    assert len(rows) >= 150
    assert len({r["gpu"] for r in rows}) >= 15
    for r in rows:
        where = f"{r['file']}: {r['source']} {r['test']}"
        assert SOURCE.match(r["source"]), where
        assert r["gpu"] and r["backend"] and (r["model_id"] or r["model"]) and r["quant"], where
        assert TEST.match(r["test"]) or TEST.match(r["test"].replace(" ", "")), where
        assert float(r["tokens_per_s"]) > 0, where
        assert r["gpu_count"].isdigit(), where


def test_every_memory_log_has_a_source_its_settings_and_buffer_lines() -> None:
    logs = []
    for path in sorted((DATA / "memory").glob("*.toml")):
        logs += tomllib.loads(path.read_text()).get("log", [])
    assert len(logs) >= 30
    for log in logs:
        assert SOURCE.match(log["source"]), log["source"]
        assert log["model_id"] and log["quant"] and log["n_ctx"] > 0, log["source"]
        assert any("buffer size" in line for line in log["lines"]), log["source"]


def test_the_accuracy_summary_is_reproduced(published, truth) -> None:
    """bench/published.py --json on the shipped terms gives the summary docs/accuracy.md records."""
    cases, skipped = truth
    expected = json.loads((DATA / "summary.json").read_text())
    assert published.summary(cases, skipped) == expected


def test_the_shipped_terms_are_what_the_fit_writes(published, truth) -> None:
    """speed_terms.toml is the fit of the training split, not a hand edit."""
    cases, _ = truth
    fitted = published.fitted_terms(cases)
    shipped = published.TERMS_FILE.read_text()
    assert published.terms_toml(fitted, published.provenances(cases, list(fitted))) == shipped


def test_no_training_row_comes_from_a_held_out_gpu(published, truth) -> None:
    cases, _ = truth
    for c in cases:
        assert c.held_out == (c.gpu in published.HELD_OUT_GPUS or c.row["model_id"] not in published.TRAINING_MODELS)
