"""Facts about the repository itself that a reviewer would otherwise have to remember."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_citation_leaves_the_repository() -> None:
    """Code, data, docs and benches cite docs/evidence.md, never ../shared (a clone does not have it)."""
    files = [p for folder in ("fitplan", "docs", "bench") for p in (ROOT / folder).rglob("*") if p.is_file()
             and p.suffix in (".py", ".toml", ".md")] + [ROOT / "pyproject.toml", ROOT / "README.md"]
    citing = [str(p.relative_to(ROOT)) for p in files if "../shared" in p.read_text(encoding="utf-8")]
    assert citing == []


# Every parameter still typed `Any`, and why no narrower type fits (at most 20: issue 12).
ANY_ALLOWED = {
    "fitplan/__init__.py:load(pins)": "Request's pins, mixed types, passed through",
    "fitplan/advisor/plans/handle.py:load(pins)": "Request's pins, mixed types, passed through",
    "fitplan/advisor/plans/handle.py:resolve_plan(pins)": "Request's pins, mixed types",
    "fitplan/advisor/plans/verify_command.py:verify_plan(pins)": "default_setup's pins, mixed types",
    "fitplan/plugin/fixtures.py:plan(pins)": "a marker's pins, mixed types",
    "fitplan/plugin/fixtures.py:load(pins)": "a marker's pins, mixed types",
    "fitplan/plan_spec.py:with_(changes)": "any Setup field's value",
    "fitplan/advisor/models/model_files.py:_replace(changes)": "any ModelSpec field's value",
    "fitplan/plugin/budget_items.py:__init__(kwargs)": "pytest.Item's own keyword arguments",
    "fitplan/advisor/plans/handle.py:__exit__(exc)": "the context-manager protocol's exception triple",
    "fitplan/strategies/runtimes/transformers/session.py:__call__(kwargs)": "transformers' StoppingCriteria signature",
    "fitplan/advisor/cli/commands.py:_run(command)": "a click command of typer's vendored click (no public type)",
    "fitplan/advisor/cli/commands.py:_fill_help(command)": "a click command of typer's vendored click (no public type)",
    "fitplan/advisor/models/hub.py:__init__(http)": "the httpx or httpx2 module, whichever huggingface_hub uses",
    "fitplan/advisor/models/hub.py:body(response)": "a response of httpx or httpx2",
    "fitplan/advisor/models/hub.py:check_encoding(response)": "a response of httpx or httpx2",
    "fitplan/advisor/models/hub.py:_commit_of(response)": "a response of httpx or httpx2",
    "fitplan/advisor/models/hub.py:_status_error(response)": "a response of httpx or httpx2",
    "fitplan/advisor/models/model_files.py:_gguf_tensor(t)": "gguf-py's ReaderTensor (gguf ships no type information)",
}


def _any_parameters() -> set[str]:
    import ast

    found = set()
    for path in sorted((ROOT / "fitplan").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                a = node.args
                for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]:
                    ann = arg.annotation
                    if (isinstance(ann, ast.Name) and ann.id == "Any") or (isinstance(ann, ast.Attribute) and ann.attr == "Any"):
                        found.add(f"{path.relative_to(ROOT)}:{getattr(node, 'name', 'lambda')}({arg.arg})")
    return found


def test_few_parameters_are_typed_any_and_each_for_a_reason() -> None:
    """`Any` stands only where no narrower type exists (mixed pins, third-party objects without types);
    everywhere else a TYPE_CHECKING import names the type. A new `Any` parameter fails here."""
    found = _any_parameters()
    assert found - set(ANY_ALLOWED) == set(), "type these parameters, or say here why nothing narrower fits"
    assert set(ANY_ALLOWED) - found == set(), "typed since: remove them from ANY_ALLOWED"
    assert len(ANY_ALLOWED) <= 20 and found, len(found)


def test_bench_and_test_scripts_import_names_that_exist() -> None:
    """A moved or renamed module breaks a bench script only when it runs (often on a GPU machine):
    every `from fitplan... import name` in bench/ and tests/, inside functions too, must resolve."""
    import ast
    import importlib

    broken = []
    for path in sorted([*(ROOT / "bench").glob("*.py"), *(ROOT / "tests").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fitplan") and not node.level:
                module = importlib.import_module(node.module)
                for alias in node.names:
                    if not hasattr(module, alias.name):
                        try:
                            importlib.import_module(f"{node.module}.{alias.name}")
                        except ImportError:
                            broken.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}")
    assert broken == []


def test_ci_runs_the_readme_test_command_step_by_step() -> None:
    """.ci/run holds every step of the README's test command, in its order (quiet flags aside), so a step
    added to one and not the other (the example repository's, say) fails here."""
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = [block for block in re.findall(r"```bash\n(.*?)```", readme, re.S) if "pytest" in block][0]

    def words(step: str) -> list[str]:
        return [w for w in step.replace("HF_HUB_OFFLINE=1 ", "").split() if w != "-q"]

    steps = [words(s) for s in command.strip().split("&&")]
    lines = [words(line) for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    found = iter(lines)  # a step matches the start of a line (a comment may follow), each line after the last
    missing = [" ".join(step) for step in steps if not any(line[:len(step)] == step for line in found)]
    assert missing == [], "steps of the README's test command that .ci/run lacks (or runs out of order)"
