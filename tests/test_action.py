"""What a model repository uses to gate its budgets: the example project (examples/model-repo), the
composite action's scripts run with the GitHub environment variables set, the pre-commit hook as
pre-commit calls it, and `fitplan check`'s markdown report, --profiles, --no-fail-on-regression,
several files and paths read from the budgets file's folder."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "model-repo"
FITPLAN = Path(sys.executable).with_name("fitplan")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
BROKEN_LINE = next(i for i, line in enumerate((EXAMPLE / "broken-budgets.toml").read_text().splitlines(), 1)
                   if line.startswith("max_vram"))
SUMMARY_COMMANDS = (("examples/model-repo", ["--baseline", "fitplan-baseline.json"]),
                    ("examples/model-repo", ["--config", "broken-budgets.toml"]))


def fitplan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FITPLAN), *args], capture_output=True, text=True, env=ENV, cwd=cwd, timeout=300)


def action(tmp_path: Path, cwd: Path, **inputs: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """action/check.sh as the composite action runs it: the INPUT_* variables, and GitHub's files."""
    gh = tmp_path / "github"
    gh.mkdir(exist_ok=True)
    env = {**ENV, "FITPLAN_BIN": str(FITPLAN), "RUNNER_TEMP": str(gh), "GITHUB_STEP_SUMMARY": str(gh / "summary.md"),
           "GITHUB_OUTPUT": str(gh / "output"), "GITHUB_ACTIONS": "true",
           **{f"INPUT_{k.upper()}": v for k, v in inputs.items()}}
    done = subprocess.run(["bash", str(ROOT / "action" / "check.sh")], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)
    return done, gh


@pytest.fixture
def example(tmp_path: Path) -> Path:
    """A copy of the example repository, so a test may change its files."""
    copy = tmp_path / "model-repo"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns(".venv", "junit.xml", "fitplan-pytest.json"))
    return copy


# ---------------------------------------------------------------------------------------------
# the example repository

def test_the_example_holds_its_budgets_against_its_committed_baseline() -> None:
    """Its three target profiles (one a profile file beside pyproject.toml) pass, and no prediction moved
    beyond the 5% tolerance from the committed baseline: a change to fitplan's models that moves one
    shows here, and the baseline is refreshed in the same change."""
    done = fitplan("check", "--format", "json", "--baseline", "fitplan-baseline.json", cwd=EXAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert {r["profile"] for r in report["results"]} >= {"rtx-4060-8gb", "jetson-agx-orin-64gb",
                                                         "profiles/workstation.toml"}
    assert all(r["baseline"] is not None and not r["regressed"] for r in report["results"])


def test_the_broken_example_fails_with_an_annotation_on_its_line() -> None:
    done = fitplan("check", "--config", "broken-budgets.toml", "--format", "github", cwd=EXAMPLE)
    assert done.returncode == 1
    assert re.search(rf"^::error file=broken-budgets.toml,line={BROKEN_LINE},title=fitplan check::.*max_vram broken",
                     done.stdout, re.M)


def test_the_readme_block_ci_runs_installs_and_runs_what_the_readme_says() -> None:
    """.ci/model-repo runs the README's commands block as written; it must be there, install fitplan from
    $FITPLAN, and run the check and the tests."""
    readme = (EXAMPLE / "README.md").read_text()
    block = re.search(r"^<!-- commands:.*?-->\n```sh\n(.*?)```\n<!-- /commands -->$", readme, re.M | re.S)
    assert block, "examples/model-repo/README.md lost its commands block"
    commands = block[1]
    assert '"$FITPLAN"' in commands and "fitplan check --format github" in commands and "pytest --junitxml" in commands
    assert "examples/model-repo" in (ROOT / ".ci" / "model-repo").read_text()
    assert "ci/model-repo" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("folder,args", SUMMARY_COMMANDS)
def test_the_committed_markdown_summary_is_what_the_command_prints(folder: str, args: list[str]) -> None:
    """docs/example-summary.md holds the output of each command it names, as printed today."""
    done = fitplan("check", "--format", "markdown", *args, cwd=ROOT / folder)
    assert done.returncode in (0, 1), done.stderr
    doc = (ROOT / "docs" / "example-summary.md").read_text()
    assert done.stdout.strip() in doc, f"regenerate docs/example-summary.md: fitplan check --format markdown {' '.join(args)}"


# ---------------------------------------------------------------------------------------------
# the composite action

def test_the_action_annotates_summarizes_and_keeps_the_report(tmp_path: Path, example: Path) -> None:
    done, gh = action(tmp_path, example, baseline="fitplan-baseline.json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "::notice title=fitplan check::11 limits checked, 0 broken" in done.stdout
    summary = (gh / "summary.md").read_text()
    assert summary.startswith("**fitplan check: passed, all 11 limits hold in pyproject.toml**")
    assert "| budget" in summary and "headroom" in summary and "+0.0%" in summary
    outputs = dict(line.split("=", 1) for line in (gh / "output").read_text().splitlines())
    assert outputs["ok"] == "true"
    report = json.loads(Path(outputs["report"]).read_text())
    assert report["kind"] == "fitplan-check-report" and report["ok"] and len(report["results"]) == 11


def test_the_action_fails_a_broken_budget_on_its_line(tmp_path: Path, example: Path) -> None:
    done, gh = action(tmp_path, example, config="broken-budgets.toml", format="markdown")
    assert done.returncode == 1
    assert f"::error file=broken-budgets.toml,line={BROKEN_LINE}," in done.stdout
    assert "**fitplan check: FAILED, 1 of 1 limit broken in broken-budgets.toml**" in done.stdout  # format=
    assert (gh / "summary.md").read_text().startswith("**fitplan check: FAILED")
    assert "ok=false" in (gh / "output").read_text()


def test_a_regression_fails_or_warns_as_the_action_is_told(tmp_path: Path, example: Path) -> None:
    """A baseline whose predictions were 20% lower: the VRAM figures worsened beyond 5%. fail-on-regression
    true fails the step; false passes it with a warning annotation, and the summary says REGRESSED."""
    base = json.loads((example / "fitplan-baseline.json").read_text())
    for r in base["results"]:
        if r["metric"] == "max_vram":
            r["predicted"] *= 0.8
    (example / "old.json").write_text(json.dumps(base))
    failed, _ = action(tmp_path, example, baseline="old.json")
    assert failed.returncode == 1 and failed.stdout.count("::error ") == 3
    warned, gh = action(tmp_path, example, baseline="old.json", **{"fail_on_regression": "false"})
    assert warned.returncode == 0, warned.stdout + warned.stderr
    assert warned.stdout.count("::warning ") == 3 and "::error" not in warned.stdout
    assert "REGRESSED (allowed)" in (gh / "summary.md").read_text().split("**fitplan check: passed")[-1]


def test_the_action_says_what_is_wrong_in_one_annotation(tmp_path: Path, example: Path) -> None:
    """A missing baseline is a notice (a first run on main has none); a bad input or budgets file is an
    error annotation and exit 2."""
    done, _ = action(tmp_path, example, baseline="nowhere.json")
    assert done.returncode == 0 and "::notice title=fitplan check::no baseline at nowhere.json" in done.stdout
    bad, _ = action(tmp_path, example, **{"fail_on_regression": "maybe"})
    assert bad.returncode == 2 and "fail-on-regression must be true or false" in bad.stdout
    (example / "pyproject.toml").write_text((example / "pyproject.toml").read_text().replace('max_vram = "1.5GB"',
                                                                                             'max_vram = "lots"'))
    broken, _ = action(tmp_path, example)
    assert broken.returncode == 2
    assert re.search(r"^::error title=fitplan check::.*pyproject.toml:\d+: budget 1, max_vram: bad size 'lots'",
                     broken.stdout, re.M), broken.stdout
    assert "Traceback" not in broken.stderr


def test_the_action_install_step_makes_its_own_environment(tmp_path: Path) -> None:
    """action/install.sh: fitplan from the action's checkout into $RUNNER_TEMP/fitplan-venv, its path in
    $GITHUB_ENV (dependencies left out here: the test checks the step, not pip)."""
    env = {**ENV, "GITHUB_ACTION_PATH": str(ROOT), "RUNNER_TEMP": str(tmp_path), "GITHUB_ENV": str(tmp_path / "env"),
           "INPUT_PYTHON": sys.executable, "FITPLAN_PIP_ARGS": "--no-deps"}
    done = subprocess.run(["bash", str(ROOT / "action" / "install.sh")], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    line = (tmp_path / "env").read_text().strip()
    assert line == f"FITPLAN_BIN={tmp_path / 'fitplan-venv' / 'bin' / 'fitplan'}"
    assert Path(line.split("=", 1)[1]).is_file()


def test_action_yml_passes_every_input_to_its_scripts() -> None:
    import yaml

    spec = yaml.safe_load((ROOT / "action.yml").read_text())
    assert spec["runs"]["using"] == "composite"
    assert set(spec["inputs"]) >= {"config", "profiles", "format", "baseline", "fail-on-regression"}
    passed = {v for step in spec["runs"]["steps"] for v in (step.get("env") or {}).values()}
    scripts = (ROOT / "action" / "check.sh").read_text() + (ROOT / "action" / "install.sh").read_text()
    for name in spec["inputs"]:
        if name == "artifact-name":
            continue
        assert "${{ inputs." + name + " }}" in passed, name
        assert f"INPUT_{name.upper().replace('-', '_')}" in scripts, name


# ---------------------------------------------------------------------------------------------
# the pre-commit hook

def test_the_pre_commit_hook_checks_the_changed_budget_files(tmp_path: Path, example: Path) -> None:
    """As pre-commit calls it: the hook's entry with the changed files that match its `files` pattern;
    a pyproject.toml without budgets is skipped; a broken budget fails the commit."""
    import yaml

    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    pattern = re.compile(hook["files"])
    changed = ["pyproject.toml", "broken-budgets.toml", "src/smolchat/chat.py", "tools/pyproject.toml"]
    (example / "tools").mkdir()
    (example / "tools" / "pyproject.toml").write_text('[project]\nname = "tools"\n')
    matched = [f for f in changed if pattern.search(f)]
    assert matched == ["pyproject.toml", "tools/pyproject.toml"]
    entry = hook["entry"].split()
    assert entry[0] == "fitplan"
    done = fitplan(*entry[1:], *matched, cwd=example)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "11 limits, 0 failing" in done.stdout
    (example / "fitplan.toml").write_text((example / "broken-budgets.toml").read_text())
    assert pattern.search("fitplan.toml")
    failed = fitplan(*entry[1:], "pyproject.toml", "fitplan.toml", cwd=example)
    assert failed.returncode == 1 and "fitplan.toml: 1 limits, 1 failing" in failed.stdout
    skipped = fitplan(*entry[1:], "tools/pyproject.toml", cwd=example)
    assert skipped.returncode == 0 and "no budgets" in skipped.stdout


# ---------------------------------------------------------------------------------------------
# fitplan check: what the action and the hook rely on

def test_paths_in_a_budgets_file_are_read_from_its_folder(tmp_path: Path, example: Path) -> None:
    """--config sub/pyproject.toml from elsewhere reads profiles/workstation.toml beside it; the report and
    the baseline keys keep the path as written; a missing one is named where it was looked for."""
    done = fitplan("check", "--config", str(example / "pyproject.toml"), "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    keys = {r["key"] for r in json.loads(done.stdout)["results"]}
    assert "smolchat on small GPUs|profiles/workstation.toml|max_vram" in keys
    baseline = {r["key"] for r in json.loads((EXAMPLE / "fitplan-baseline.json").read_text())["results"]}
    assert keys == baseline
    (example / "profiles" / "workstation.toml").unlink()
    missing = fitplan("check", "--config", str(example / "pyproject.toml"), cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert str(example / "profiles" / "workstation.toml") in missing.stderr and len(missing.stderr.splitlines()) == 1


def test_profiles_replace_the_ones_each_entry_names(example: Path) -> None:
    done = fitplan("check", "--profiles", "rtx-3060-12gb,rtx-4090-24gb", "--format", "json", cwd=example)
    assert done.returncode == 0, done.stderr
    assert {r["profile"] for r in json.loads(done.stdout)["results"]} == {"rtx-3060-12gb", "rtx-4090-24gb"}
    for bad in ("", "a,a", ","):
        refused = fitplan("check", "--profiles", bad, cwd=example)
        assert refused.returncode == 2 and "bad --profiles" in refused.stderr


def test_several_files_give_one_report_each_and_not_in_one_json(example: Path) -> None:
    both = fitplan("check", "pyproject.toml", "broken-budgets.toml", cwd=example)
    assert both.returncode == 1 and both.stdout.count("fitplan check: ") == 2
    for args in (["--format", "json"], ["-o", "report.txt"], ["--config", "pyproject.toml"]):
        refused = fitplan("check", "pyproject.toml", "broken-budgets.toml", *args, cwd=example)
        assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, args
    assert not (example / "report.txt").exists()


def test_the_markdown_report_reads_in_a_terminal_and_is_replaced_only_if_ours(example: Path) -> None:
    """The verdict first, one row per limit with the change against the baseline, the columns aligned;
    -o writes it with fitplan's marker (an HTML comment) and replaces only such a file."""
    done = fitplan("check", "--format", "markdown", "--baseline", "fitplan-baseline.json", cwd=example)
    lines = done.stdout.splitlines()
    assert lines[0] == "**fitplan check: passed, all 11 limits hold in pyproject.toml**"
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 11 and len({len(line) for line in table}) == 1  # aligned for a terminal
    assert all(line.count("|") == 9 for line in table)
    assert fitplan("check", "--format", "markdown", "-o", "summary.md", cwd=example).returncode == 0
    assert (example / "summary.md").read_text().startswith("<!-- fitplan-check-report:")
    assert fitplan("check", "--format", "markdown", "-o", "summary.md", cwd=example).returncode == 0
    (example / "NOTES.md").write_text("# notes\n")
    refused = fitplan("check", "--format", "markdown", "-o", "NOTES.md", cwd=example)
    assert refused.returncode == 2 and (example / "NOTES.md").read_text() == "# notes\n"


def test_a_crash_is_never_read_as_a_broken_budget(tmp_path: Path, example: Path) -> None:
    """check.sh against an executable that fails as a crash would (exit 1, a traceback, no annotation):
    the step says so in an error annotation and exits 2, with the traceback in the log, never ok=false
    as if a budget broke. (A stand-in for fitplan: no input makes the real one crash.)"""
    crash = tmp_path / "fitplan"
    crash.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho 'KeyError: x' >&2\nexit 1\n")
    crash.chmod(0o755)
    env_bin = {"FITPLAN_BIN": str(crash)}
    gh = tmp_path / "github"
    gh.mkdir()
    env = {**ENV, **env_bin, "RUNNER_TEMP": str(gh), "GITHUB_OUTPUT": str(gh / "output")}
    done = subprocess.run(["bash", str(ROOT / "action" / "check.sh")], capture_output=True, text=True, env=env,
                          cwd=example, timeout=60)
    assert done.returncode == 2
    assert "::error title=fitplan check::KeyError: x" in done.stdout and "Traceback" in done.stderr
    assert not (gh / "output").exists()


def test_a_budget_name_cannot_act_as_a_workflow_command(tmp_path: Path, example: Path) -> None:
    """A pull request controls the budget names; the log's text report is fenced by ::stop-commands::."""
    text = (example / "pyproject.toml").read_text()
    (example / "pyproject.toml").write_text(text.replace('name = "smolchat on the CI runner"',
                                                         'name = "::add-mask::x"', 1))
    done, _ = action(tmp_path, example, format="text")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("::stop-commands::"))
    token = lines[start].split("::")[2]
    end = lines.index(f"::{token}::")
    assert len(token) == 32 and any("::add-mask::x" in line for line in lines[start + 1:end])
    assert not any("::add-mask::x" in line for line in lines[:start] + lines[end:])


def test_a_broken_limit_says_broken_even_when_it_also_regressed(tmp_path: Path, example: Path) -> None:
    """--no-fail-on-regression lets a worsened prediction pass; one that is also over its limit still fails,
    and every report says it is broken, not only worse."""
    base = json.loads((example / "fitplan-baseline.json").read_text())
    for r in base["results"]:
        r["predicted"] *= 0.5 if r["metric"] == "max_vram" else 1
    (example / "old.json").write_text(json.dumps(base))
    text = (example / "pyproject.toml").read_text()
    (example / "pyproject.toml").write_text(text.replace('max_vram = "1.5GB"', 'max_vram = "800MB"'))
    done = fitplan("check", "--format", "markdown", "--baseline", "old.json", "--no-fail-on-regression", cwd=example)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == ("**fitplan check: FAILED, 2 of 11 limits broken, 3 worsened beyond the "
                                           "baseline tolerance (allowed) in pyproject.toml**")
    rows = [line for line in done.stdout.splitlines() if "max_vram" in line and line.startswith("|")]
    assert [row.split("|")[-2].strip() for row in rows] == ["BROKEN", "BROKEN", "REGRESSED (allowed)"]
    assert all("+100.0% worse" in row for row in rows)
    github = fitplan("check", "--format", "github", "--baseline", "old.json", "--no-fail-on-regression", cwd=example)
    assert github.stdout.count("::error ") == 2 and "max_vram broken" in github.stdout
    assert github.stdout.count("::warning ") == 1 and "worsened beyond the baseline tolerance" in github.stdout


def test_a_baseline_that_matches_nothing_is_said_out_loud(example: Path) -> None:
    """--profiles (or a renamed budget) against a baseline made without it compares nothing: a warning."""
    done = fitplan("check", "--profiles", "rtx-3060-12gb", "--baseline", "fitplan-baseline.json", cwd=example)
    assert done.returncode == 0
    assert "no budget here matches one in --baseline fitplan-baseline.json" in done.stderr
    quiet = fitplan("check", "--baseline", "fitplan-baseline.json", cwd=example)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_every_file_skipped_is_one_line_with_o_or_json(example: Path) -> None:
    (example / "tools").mkdir()
    (example / "tools" / "pyproject.toml").write_text('[project]\nname = "tools"\n# tool.fitplan comes later\n')
    for args in (["-o", "r.md"], ["--format", "json"]):
        done = fitplan("check", "tools/pyproject.toml", *args, cwd=example)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, args
    assert not (example / "r.md").exists()
    text = fitplan("check", "tools/pyproject.toml", cwd=example)
    assert text.returncode == 0 and "no budgets" in text.stdout  # a comment naming tool.fitplan is not a table


def test_a_pipe_in_a_budget_name_stays_in_its_cell(example: Path) -> None:
    text = (example / "pyproject.toml").read_text()
    (example / "pyproject.toml").write_text(text.replace('name = "smolchat on the CI runner"',
                                                         'name = "CI | runner"', 1))
    done = fitplan("check", "--format", "markdown", cwd=example)
    rows = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert any("CI \\| runner" in row for row in rows)
    assert all(row.replace("\\|", "").count("|") == 9 for row in rows)


@pytest.mark.parametrize("written,opened", [
    ("smollm2-135m", "smollm2-135m"),                       # a catalog name
    ("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M"),  # a hub id: no such file beside it
    ("models/m.gguf", "{folder}/models/m.gguf"),            # looks like a file: beside the config, even if missing
    ("./here", "{folder}/here"),
    ("/abs/m.gguf", "/abs/m.gguf"),
])
def test_a_model_path_is_read_beside_the_budgets_file(tmp_path: Path, written: str, opened: str) -> None:
    from fitplan.advisor.budgets.budget_file import beside

    config = tmp_path / "sub" / "pyproject.toml"
    assert beside(str(config), written) == opened.format(folder=config.parent)
    assert beside("pyproject.toml", written) == written  # a config in the current folder: as written


def test_a_profile_path_keeps_its_multiplier(tmp_path: Path, example: Path) -> None:
    from fitplan.advisor.budgets.budget_file import load_budgets

    budgets = load_budgets(str(example / "pyproject.toml"))
    folder = example / "profiles"
    assert budgets.profile_path("profiles/workstation.toml") == str(folder / "workstation.toml")
    assert budgets.profile_path("2xprofiles/workstation.toml") == f"2x{folder / 'workstation.toml'}"
    assert budgets.profile_path("2xrtx-3090-24gb") == "2xrtx-3090-24gb"
    assert budgets.profile_path("rtx-4060-8gb") == "rtx-4060-8gb"
