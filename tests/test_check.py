"""`fitplan check` over sample repository layouts: every format and exit code, bad configs naming
file, line and field, the baseline regression, and budgets as pytest items."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
FITPLAN = Path(sys.executable).with_name("fitplan")

PASSING = """
[[tool.fitplan.budget]]
model = "llama-3.1-8b"
weights = "Q4_K_M"
context = 4096
hardware = ["rtx-3060-12gb", "rtx-4090-24gb"]
max_vram = "12GB"
min_decode_tokens_per_s = 30
"""
FAILING = """
[[tool.fitplan.budget]]
name = "70B on one 4090"
model = "llama-3.1-70b"
weights = "Q4_K_M"
hardware = ["rtx-4090-24gb"]
max_vram = "24GB"
"""


def repo(folder: Path, body: str, name: str = "pyproject.toml") -> Path:
    header = '[project]\nname = "model-repo"\n' if name == "pyproject.toml" else ""
    (folder / name).write_text(header + textwrap.dedent(body))
    return folder


def check(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(FITPLAN), "check", *args], capture_output=True, text=True, timeout=120, cwd=folder)


def test_all_budgets_hold_exit_0_with_a_table(tmp_path: Path) -> None:
    """8B Q4_K_M at 4K on a 3060 and a 4090: every layer on the GPU, 5.9 GB per GPU < 12 GB; exit 0."""
    run = check(repo(tmp_path, PASSING))
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split() == ["budget", "profile", "limit", "predicted", "headroom", "baseline", "verdict"]
    assert sum("ok" in line.split() for line in lines) == 4
    assert "fitplan check: pyproject.toml: 4 limits, 0 failing" in run.stdout


def test_a_broken_budget_exits_1_in_every_format(tmp_path: Path) -> None:
    """70B Q4_K_M needs 45.4 GB on a 24 GB card: text, json, junit and github all say so; exit 1."""
    folder = repo(tmp_path, PASSING + FAILING)
    text = check(folder)
    assert text.returncode == 1 and "70B on one 4090 max_vram" in text.stdout and "BROKEN" in text.stdout
    doc = json.loads(check(folder, "--format", "json").stdout)
    assert doc["ok"] is False and [r["verdict"] for r in doc["results"]].count("BROKEN") == 1
    broken = next(r for r in doc["results"] if r["verdict"] == "BROKEN")
    assert broken["predicted"] > 40e9 and broken["limit"] == 24e9 and broken["headroom"] < -0.8
    suite = ET.fromstring(check(folder, "--format", "junit").stdout).find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "1"
    failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["70B on one 4090 on rtx-4090-24gb"]
    github = check(folder, "--format", "github")
    assert github.returncode == 1
    error = github.stdout.splitlines()[0]
    line = 3 + PASSING.count("\n") + FAILING.splitlines().index('max_vram = "24GB"')  # the limit's own line
    assert error.startswith(f"::error file=pyproject.toml,line={line},title=fitplan check::70B on one 4090 on "
                            "rtx-4090-24gb: max_vram broken: predicted 45.4 GB, limit 24.0 GB")


@pytest.mark.parametrize(("body", "message"), [
    ('[[tool.fitplan.budget]]\nmodel = "llama-3.1-8b"\nhardware = ["rtx-3060-12gb"]\nmax_vram = "12 gigs"\n',
     r"pyproject.toml:6: budget 1, max_vram: .*12 gigs"),
    ('[[tool.fitplan.budget]]\nmodel = "llama-3.1-8b"\nhardware = ["rtx-3060-12gb"]\nmax_vram = "12GB"\nquant = "Q4"\n',
     r"pyproject.toml:7: budget 1, quant: Extra inputs are not permitted"),
    ('[[tool.fitplan.budget]]\nmodel = "llama-3.1-8b"\nhardware = ["rtx-3060-12gb"]\n',
     r"pyproject.toml:3: budget 1, entry: sets no limit"),
    ('[[tool.fitplan.budget]]\nmodel = "llama-3.1-8b"\nhardware = ["rtx-9090"]\nmax_vram = "12GB"\n',
     r"pyproject.toml:3: budget 1 on rtx-9090: unknown profile 'rtx-9090'"),
    ('[[tool.fitplan.budget]]\nmodel = "llama-3.1-8b"\nhardware = ["rtx-3060-12gb"]\nmax_vram = "12GB"\nweights = "Q9"\n',
     r"pyproject.toml:3: budget 1 on rtx-3060-12gb: unknown weight format 'Q9'"),
    ('[[tool.fitplan.budget]]\nmodel = "llama-3.1-8b"\nhardware = "rtx-3060-12gb"\nmax_vram = "12GB"\n',
     r"pyproject.toml:5: budget 1, hardware: Input should be a valid list"),
    ('[[tool.fitplan.budget]\nmodel = 1\n', r"pyproject.toml: not valid TOML: .*line 3"),
])
def test_a_bad_config_exits_2_naming_file_line_and_field(tmp_path: Path, body: str, message: str) -> None:
    """Each config mistake is one stderr line with the file, the line and the field; exit 2."""
    import re

    run = check(repo(tmp_path, body))
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert re.search(message, run.stderr), run.stderr


def test_fitplan_toml_and_config_discovery(tmp_path: Path) -> None:
    """Without budgets in pyproject.toml, fitplan.toml's [[budget]] tables are read; --config picks a file."""
    folder = repo(tmp_path, PASSING.replace("tool.fitplan.budget", "budget"), name="fitplan.toml")
    (folder / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert check(folder).returncode == 0
    other = tmp_path / "sub"
    other.mkdir()
    assert check(other).returncode == 2
    assert check(other, "--config", str(folder / "fitplan.toml")).returncode == 0


def test_baseline_catches_a_model_ten_percent_bigger_under_budget(tmp_path: Path) -> None:
    """A local model whose FFN grows (parameters +~10%) still fits its budget, but --baseline fails the run
    because the predicted RAM worsened by more than 5%; --baseline-tolerance 20 lets it pass."""
    model = tmp_path / "model"
    model.mkdir()
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024,
              "intermediate_size": 2816, "num_hidden_layers": 16, "num_attention_heads": 16,
              "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 4096,
              "torch_dtype": "bfloat16", "tie_word_embeddings": False}
    (model / "config.json").write_text(json.dumps(config))
    folder = repo(tmp_path, f'[[tool.fitplan.budget]]\nmodel = "{model}"\ncontext = 2048\n'
                            'hardware = ["laptop-cpu-16gb"]\nmax_ram = "8GB"\n')
    first = check(folder, "--format", "json", "-o", "baseline.json")
    assert first.returncode == 0, first.stderr
    config["intermediate_size"] = 3328  # +18% FFN: ~+11% parameters
    (model / "config.json").write_text(json.dumps(config))
    again = check(folder, "--baseline", "baseline.json")
    assert again.returncode == 1 and "REGRESSED" in again.stdout and "worsened beyond the baseline" in again.stdout
    assert check(folder, "--baseline", "baseline.json", "--baseline-tolerance", "20").returncode == 0
    assert check(folder, "--format", "json", "-o", "baseline.json").returncode == 0  # replaces its own report
    (folder / "notes.txt").write_text("mine")
    refused = check(folder, "-o", "notes.txt")
    assert refused.returncode == 2 and (folder / "notes.txt").read_text() == "mine"


def test_budgets_become_pytest_items(pytester: pytest.Pytester) -> None:
    """pytest --fitplan-budgets: each entry x profile is an item beside the code tests; a broken one fails
    with its figures, without --fitplan-budgets nothing is collected from pyproject.toml."""
    pytester.makefile(".toml", pyproject='[project]\nname = "x"\n' + textwrap.dedent(PASSING + FAILING))
    pytester.makepyfile(test_code="def test_code():\n    assert True\n")
    run = pytester.runpytest_subprocess("--fitplan-budgets", "-p", "no:cacheprovider", "-rf")
    run.assert_outcomes(passed=3, failed=1)
    run.stdout.fnmatch_lines(["*max_vram: predicted 45.4 GB, limit 24.0 GB*",
                              "*FAILED pyproject.toml::70B on one 4090 on rtx-4090-24gb*"])
    plain = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    plain.assert_outcomes(passed=1)


def test_a_bad_budget_file_is_one_collection_error(pytester: pytest.Pytester) -> None:
    """--fitplan-budgets with a bad entry: one collection error naming file, line and field."""
    pytester.makefile(".toml", pyproject='[project]\nname = "x"\n[[tool.fitplan.budget]]\nmodel = "llama-3.1-8b"\n'
                                         'hardware = ["rtx-3060-12gb"]\nmax_vram = "lots"\n')
    run = pytester.runpytest_subprocess("--fitplan-budgets", "-p", "no:cacheprovider")
    run.assert_outcomes(errors=1)
    run.stdout.fnmatch_lines(["*pyproject.toml:6: budget 1, max_vram:*lots*"])


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path / "cache"))
    os.environ.pop("FITPLAN_HARDWARE", None)


def test_measure_runs_entries_on_this_machine(tmp_path: Path, smollm2_gguf: str) -> None:
    """--measure: an entry whose profile is `auto` runs for real (fitplan verify) and adds measured rows; a
    GPU profile this machine does not match is predicted only; a catalog model cannot be measured and says so."""
    folder = repo(tmp_path, f'[[budget]]\nmodel = "{smollm2_gguf}"\ncontext = 1024\nthreads = 1\n'
                            'hardware = ["auto", "rtx-3060-12gb"]\nmax_ram = "1GB"\nmin_decode_tokens_per_s = 1\n\n'
                            '[[budget]]\nmodel = "smollm2-135m"\nhardware = ["auto"]\nmax_ram = "2GB"\n', name="fitplan.toml")
    run = check(folder, "--measure", "--format", "json")
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout)["results"]
    measured = [r for r in results if r["measured"]]
    assert {(r["profile"], r["metric"]) for r in measured} == {("auto", "max_ram"), ("auto", "min_decode_tokens_per_s")}
    ram = next(r for r in measured if r["metric"] == "max_ram" and r["predicted"] is not None)
    assert 100e6 < ram["predicted"] < 1e9 and "measured by fitplan verify" in ram["detail"]
    assert any(r["verdict"] == "not measured" and "no local weights" in r["detail"] for r in measured)
