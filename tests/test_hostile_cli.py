"""The hostile-input corpus: what a user can throw at every command, each answered in one line.

Every case runs a real command (`advise`, `fitplan run|export|verify|check|profile|strategies`,
`pytest` with fitplan's plugin) in a child process forked from one warm runner
(tests/hostile_runner.py) with a 4 GiB address-space limit, in its own folder, offline. Each asserts:
exit code 2 (pytest's own 1 or 4 for the plugin's cases), exactly one error line, no traceback,
peak RSS under 1 GiB, no hang (a generous guard, never a speed check), and that no file that
existed before the command changed. Model files and the hub have their own corpora
(test_hostile_model_files.py, test_hub_hostile.py).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

RUNNER = Path(__file__).with_name("hostile_runner.py")
AS_LIMIT = 4 * 2**30
MAX_RSS = 2**30
HANG_GUARD_S = 120  # a hang fails the case; how fast a refusal comes is not asserted (CI shares its machine)
ESC = "\x1b]0;pwned\x07\x1b[2J"
Setup = Callable[[Path], None]


@dataclass
class Case:
    id: str
    argv: list[str]
    setup: list[Setup] = field(default_factory=list)
    needle: str = ""  # a text the error line must contain
    kind: str = "cli"  # "cli": exit 2, one stderr line; "pytest-usage": exit 4; "pytest-item": exit 1
    env: dict[str, str] = field(default_factory=dict)
    block: list[str] = field(default_factory=list)  # modules the child sees as not installed


# ---------------------------------------------------------------------------------------------
# setting up the folder a case runs in


def fifo(name: str) -> Setup:
    return lambda d: os.mkfifo(d / name)


def folder(name: str, *inside: str) -> Setup:
    def make(d: Path) -> None:
        (d / name).mkdir(parents=True)
        for sub in inside:
            (d / name / sub).mkdir()
    return make


def dangling(name: str) -> Setup:
    return lambda d: os.symlink(d / "nowhere" / "gone", d / name)


def text(name: str, content: str | bytes) -> Setup:
    def make(d: Path) -> None:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        (d / name).write_bytes(data)
    return make


def sparse(name: str, size: int) -> Setup:
    def make(d: Path) -> None:
        with open(d / name, "wb") as handle:
            handle.truncate(size)
    return make


# ---------------------------------------------------------------------------------------------
# the cases


ADVISE = ["advise", "llama-3.1-8b", "--hardware", "rtx-4090-24gb"]
BAD_COUNTS = ["", "x", "-1", "1.5", "0x10", "1e3", "nan", "inf", "99999999999999999999999999", "1" * 5000,
              "12GB", ESC]
BAD_SIZES = ["12", "", "-1GB", "12XB", "1e400GB", "nanGB", "infGB", "1" * 400 + "GB", "0.0.1GB", "GB", "12 G B",
             ESC + "12GB", "12GB;rm -rf /"]


def advise_value_cases() -> Iterator[Case]:
    bounds = {"--context": "16777217", "--batch": "4097", "--threads": "4097"}
    for option in ("--context", "--batch", "--threads", "--top", "--disk-layers"):
        values = BAD_COUNTS + ([bounds[option], "0"] if option in bounds else [])
        for i, value in enumerate(values):
            yield Case(f"advise{option}-{i}", [*ADVISE, option, value], needle=option)
    for i, value in enumerate(["0", "65", "-1", "x", "1" * 5000]):
        yield Case(f"advise--draft-tokens-{i}", [*ADVISE, "--draft", "prompt-lookup", "--draft-tokens", value],
                   needle="--draft-tokens")
    for option in ("--max-vram", "--max-ram", "--ram", "--reserve"):
        for i, value in enumerate(BAD_SIZES):
            yield Case(f"advise{option}-{i}", [*ADVISE, option, value], needle=option)
    numbers = {"--min-tokens-per-s": ["0", "-1", "x", "inf", "nan", "1e400", "", "1" * 400],
               "--max-ttft": ["2", "-1s", "x", "infs", "1" * 400 + "s", "", "1h2"],
               "--max-ppl-increase": ["-1", "nan", "inf", "x", "1e7", ""]}
    for option, values in numbers.items():
        for i, value in enumerate(values):
            yield Case(f"advise{option}-{i}", [*ADVISE, option, value], needle=option)
    for i, value in enumerate(["1", "1.5", "-0.1", "nan", "x", ""]):
        yield Case(f"advise--acceptance-{i}", [*ADVISE, "--draft", "prompt-lookup", "--acceptance", value],
                   needle="--acceptance")
    names = {"--kv-cache": ["f64", "", "q2", ESC, "F16 "], "--weights": ["Q9_K", "", "../etc", ESC, "Q4_K_M;x",
                                                                         "q4_k_m" * 100],
             "--runtime": ["torch", "", "llama.cpp;rm", ESC], "--objective": ["fast", "", ESC],
             "--prune": ["3:4", "unstructured:1.5", "x", "unstructured:nan", "", "2:4:8", "unstructured:-0.1"]}
    for option, values in names.items():
        for i, value in enumerate(values):
            yield Case(f"advise{option}-{i}", [*ADVISE, option, value])
    for i, (value, setup) in enumerate([("no-such-model", None), ("/dev/zero", None), ("d.gguf", fifo("d.gguf")),
                                        ("d.gguf", folder("d.gguf")), ("d.gguf", dangling("d.gguf"))]):
        yield Case(f"advise--draft-{i}", [*ADVISE, "--draft", value], [setup] if setup else [])


def model_argument_cases() -> Iterator[Case]:
    models: list[tuple[str, list[Setup]]] = [
        ("", []), ("no-such-model", []), ("../../etc/passwd", []), ("/dev/zero", []), ("m.gguf", [fifo("m.gguf")]),
        ("m.gguf", [folder("m.gguf")]), ("m.gguf", [dangling("m.gguf")]), ("org/name", []), ("a/b/c", []),
        (ESC, []), ("x" * 5000, []), ("/etc/passwd", []), ("empty-folder", [folder("empty-folder")]),
        ("m.gguf", [text("m.gguf", b"")]), ("m.gguf", [text("m.gguf", b"GGUF")]),
    ]
    commands = {"advise": ["advise", "{}", "--hardware", "rtx-4090-24gb"],
                "verify": ["fitplan", "verify", "{}", "--gen-tokens", "2", "--repeat", "1"],
                "run": ["fitplan", "run", "{}", "--prompt", "hi", "--max-tokens", "2"]}
    for name, template in commands.items():
        for i, (model, setup) in enumerate(models):
            yield Case(f"model-{name}-{i}", [model if a == "{}" else a for a in template], setup)


PNG_NOT_OURS = b"\x89PNG\r\n\x1a\n" + b"\0\0\0\rIHDR" + bytes(17) + b"\0\0\0\0IEND\xaeB`\x82"
SVG_NOT_OURS = '<?xml version="1.0"?>\n<!-- fitplan advise --plot? no: drawn by hand -->\n<svg/>\n'


def output_cases() -> Iterator[Case]:
    targets: list[tuple[str, list[Setup]]] = [
        ("notes.json", [text("notes.json", "my notes about fitplan advise -o\n")]),
        ("out", [folder("out")]), ("p.json", [fifo("p.json")]), ("p.json", [dangling("p.json")]),
        ("/proc/fitplan-plan.json", []), ("/sys/fitplan-plan.json", []), ("no/such/folder/p.json", []),
    ]
    for i, (target, setup) in enumerate(targets):
        yield Case(f"advise-o-{i}", [*ADVISE, "-o", target], setup)
    plots: list[tuple[str, list[Setup]]] = [
        ("fig.png", [text("fig.png", b"holiday photo")]), ("fig.png", [text("fig.png", PNG_NOT_OURS)]),
        ("fig.svg", [text("fig.svg", SVG_NOT_OURS)]), ("fig.png", [folder("fig.png")]), ("fig.png", [fifo("fig.png")]),
        ("fig.jpg", []), ("/proc/fitplan.png", []), ("/sys/fitplan.png", []), ("fig", []),
    ]
    for i, (target, setup) in enumerate(plots):
        yield Case(f"advise--plot-{i}", [*ADVISE, "--plot", target], setup, needle="--plot")
    reports: list[tuple[str, list[Setup]]] = [
        ("NOTES.md", [text("NOTES.md", "# Notes\nrun fitplan check before release\n")]),
        (".github/workflows/ci.yml", [text(".github/workflows/ci.yml", "steps:\n  - run: fitplan check\n")]),
        ("fitplan.toml", []),  # the budgets file itself
        ("old.json", [text("old.json", json.dumps({"tool": "fitplan check", "results": []}))]),
        ("plan.json", [text("plan.json", json.dumps({"kind": "fitplan-plan"}))]),
        ("second.txt", [text("second.txt", "mine\nfitplan-check-report: written by fitplan check (a rerun with -o "
                                           "replaces it)\n")]),
        ("out", [folder("out")]), ("r.txt", [fifo("r.txt")]), ("/proc/fitplan-r.txt", []), ("/sys/fitplan-r.txt", []),
    ]
    for fmt in ("text", "json", "junit", "github"):
        for i, (target, setup) in enumerate(reports):
            yield Case(f"check-o-{fmt}-{i}", ["fitplan", "check", "--format", fmt, "-o", target],
                       [write_budgets(VALID_BUDGET), *setup])


def write_budgets(body: str, name: str = "fitplan.toml") -> Setup:
    return text(name, body)


VALID_BUDGET = '[[budget]]\nmodel = "llama-3.1-8b"\nhardware = ["rtx-4090-24gb"]\nmax_vram = "24GB"\n'


def budget(extra: str = "", *, model: str = '"llama-3.1-8b"', hardware: str = '["rtx-4090-24gb"]',
           limit: str = 'max_vram = "24GB"') -> str:
    return f"[[budget]]\nmodel = {model}\nhardware = {hardware}\n{limit}\n{extra}\n"


PROFILE = ('name = "box"\n[cpu]\nname = "cpu"\ncores = 8\nthreads = 16\nmemory_bandwidth_GB_per_s = 50\n'
           '[ram]\ntotal_bytes = 32000000000\n')
PROFILE_GPU = PROFILE + '[gpu]\nname = "gpu"\nmemory_bytes = 24000000000\nmemory_bandwidth_GB_per_s = 1000\n'


def hostile_profiles() -> dict[str, str | bytes]:
    return {
        "nested-arrays": "x = " + "[" * 5000 + "]" * 5000 + "\n" + PROFILE,
        "nested-inline": "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n" + PROFILE,
        "cores-5000": PROFILE.replace("cores = 8", "cores = 5000"),
        "threads-0": PROFILE.replace("threads = 16", "threads = 0"),
        "no-cpu": 'name = "box"\n[ram]\ntotal_bytes = 1\n',
        "cpu-not-a-table": 'name = "box"\ncpu = "x"\n[ram]\ntotal_bytes = 1\n',
        "gpu-not-a-table": 'gpu = 5\n' + PROFILE,
        "gpu-memory-negative": PROFILE_GPU.replace("memory_bytes = 24000000000", "memory_bytes = -1"),
        "no-ram": PROFILE.split("[ram]")[0],
        "ram-a-string": PROFILE.replace("total_bytes = 32000000000", 'total_bytes = "32GB"'),
        "name-a-number": PROFILE.replace('name = "box"', "name = 5", 1),
        "binary": bytes(range(256)) * 4,
        "not-utf8": b'name = "\xff\xfe"\n',
        "two-megabytes": PROFILE + "#" * (2 * 2**20) + "\n",
        "bandwidth-nan": PROFILE.replace("memory_bandwidth_GB_per_s = 50", "memory_bandwidth_GB_per_s = nan"),
        "bandwidth-inf": PROFILE_GPU.replace("memory_bandwidth_GB_per_s = 1000", "memory_bandwidth_GB_per_s = inf"),
        "unknown-key": PROFILE.replace("[cpu]", "[cpu]\nturbo = true"),
        "empty": "",
        "duplicate-key": 'name = "again"\n' + PROFILE,
        "memory-2**70": PROFILE_GPU.replace("memory_bytes = 24000000000", "memory_bytes = 1180591620717411303424"),
    }


def hardware_cases() -> Iterator[Case]:
    names: list[tuple[str, list[Setup]]] = [
        ("rtx-9999", []), ("0xrtx-4090-24gb", []), ("65xrtx-4090-24gb", []), ("/dev/zero", []),
        ("missing.toml", []), ("p.toml", [folder("p.toml")]), ("p.toml", [fifo("p.toml")]),
        ("p.toml", [dangling("p.toml")]), ("x" * 5000, []), ("", []), (ESC, []), ("2x/dev/zero", []),
    ]
    names += [("p.toml", [text("p.toml", content)]) for content in hostile_profiles().values()]
    commands = {"advise": [*ADVISE[:2], "--hardware", "{}"], "profile": ["fitplan", "profile", "{}"],
                "strategies": ["fitplan", "strategies", "--hardware", "{}"]}
    for name, template in commands.items():
        for i, (value, setup) in enumerate(names):
            yield Case(f"hardware-{name}-{i}", [value if a == "{}" else a for a in template], setup)


def plan_variants(base: dict[str, Any]) -> dict[str, tuple[list[Setup], str]]:
    """Hostile plan files (setups writing plan.json, or plan.json as something else) and a needle."""
    def edited(change: Callable[[dict[str, Any]], None]) -> list[Setup]:
        doc = json.loads(json.dumps(base))
        change(doc)
        return [text("plan.json", json.dumps(doc))]

    def setitem(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
        def change(doc: dict[str, Any]) -> None:
            *parents, last = path.split(".")
            target = doc
            for key in parents:
                target = target[key]
            target[last] = value
        return change

    return {
        "fifo": ([fifo("plan.json")], "FIFO"), "folder": ([folder("plan.json")], "folder"),
        "dangling": ([dangling("plan.json")], "dangling"), "missing": ([], "plan.json"),
        "empty": ([text("plan.json", "")], "plan.json"), "null": ([text("plan.json", "null")], "plan.json"),
        "list": ([text("plan.json", "[]")], "plan.json"), "not-utf8": ([text("plan.json", b"\xff\xfe{}")], "plan.json"),
        "nan": ([text("plan.json", json.dumps(base).replace('"fits": true', '"fits": NaN'))], "NaN"),
        "duplicate-keys": ([text("plan.json", '{"kind": "fitplan-plan", "kind": "x"}')], "twice"),
        "deep": ([text("plan.json", "[" * 100000 + "]" * 100000)], "plan.json"),
        "five-megabytes": ([text("plan.json", json.dumps(base) + " " * (5 * 2**20))], "plan.json"),
        "kind": (edited(setitem("kind", "fitplan-check-report")), "plan.json"),
        "schema-2": (edited(setitem("schema_version", 2)), "schema"),
        "unknown-field": (edited(setitem("plan.turbo", True)), "turbo"),
        "runtime-code": (edited(setitem("plan.runtime", "__import__('os').system('id')")), "runtime"),
        "context-huge": (edited(setitem("plan.context", 20000000)), "context"),
        "threads-5000": (edited(setitem("plan.threads", 5000)), "threads"),
        "batch-5000": (edited(setitem("plan.batch", 5000)), "batch"),
        "draft-tokens-65": (edited(setitem("plan.speculative", {"draft": "prompt-lookup", "draft_tokens": 65,
                                                                 "acceptance": 0.5})), "draft_tokens"),
        "no-fingerprint-passwd": (edited(lambda d: (setitem("model.fingerprint", None)(d),
                                                    setitem("model.location", "/etc/passwd")(d))), "fingerprint"),
        "no-fingerprint": (edited(setitem("model.fingerprint", None)), "fingerprint"),
        "changed-weights": (edited(setitem("model.fingerprint", "sha256-ends:" + "0" * 64)), "changed"),
        "location-fifo": ([fifo("w.gguf"), *edited(setitem("model.location", "w.gguf"))], "w.gguf"),
        "location-folder-with-dir": ([folder("weights", "sub.gguf"),
                                      *edited(lambda d: (setitem("model.location", "weights")(d),
                                                         setitem("model.source", "folder")(d)))], "weights"),
        "location-dev-zero": (edited(setitem("model.location", "/dev/zero")), "/dev/zero"),
        "weights-unknown": (edited(setitem("plan.weights", "Q9_K")), "Q9_K"),
        "gpu-layers-negative": (edited(setitem("plan.gpu_layers", -1)), "gpu_layers"),
        "placement": (edited(setitem("plan.placement", "moon")), "placement"),
        "layers-0": (edited(setitem("model.layers", 0)), "layers"),
        "source": (edited(setitem("model.source", "evil")), "source"),
        "kv-q8-without-flash": (edited(lambda d: (setitem("plan.kv_cache", "q8_0")(d),
                                                  setitem("plan.flash_attn", False)(d))), "flash_attn"),
    }


def plan_cases(base: dict[str, Any]) -> Iterator[Case]:
    commands = {"run": ["fitplan", "run", "plan.json", "--prompt", "hi", "--max-tokens", "2"],
                "export-python": ["fitplan", "export", "plan.json", "--to", "python"],
                "export-shell": ["fitplan", "export", "plan.json", "--to", "shell"],
                "verify": ["fitplan", "verify", "plan.json", "--gen-tokens", "2", "--repeat", "1"]}
    for variant, (setup, needle) in plan_variants(base).items():
        for name, argv in commands.items():
            yield Case(f"plan-{name}-{variant}", argv, setup, needle=needle)
    good = [text("plan.json", json.dumps(base))]
    for i, to in enumerate(["", "rust", "python;rm"]):
        yield Case(f"export--to-{i}", ["fitplan", "export", "plan.json", "--to", to], good, needle="--to")
    for i, value in enumerate(["0", "x", "1e400", "20000000"]):
        yield Case(f"export--max-tokens-{i}", ["fitplan", "export", "plan.json", "--max-tokens", value], good)
    run = ["fitplan", "run", "plan.json", "--max-tokens", "2"]
    prompts: list[list[Setup]] = [[fifo("p.txt")], [folder("p.txt")], [], [text("p.txt", b"\xff\xfe")],
                                  [sparse("p.txt", 20 * 2**20)], [dangling("p.txt")]]
    for i, setup in enumerate(prompts):
        yield Case(f"run--prompt-file-{i}", [*run, "--prompt-file", "p.txt"], [*good, *setup], needle="--prompt-file")
    yield Case("run-prompt-twice", [*run, "--prompt", "a", "--prompt-file", "p.txt"], [*good, text("p.txt", "b")])
    yield Case("run-no-prompt", run, good, needle="prompt")
    yield Case("run-prompt-dev-zero", [*run, "--prompt-file", "/dev/zero"], good, needle="/dev/zero")
    for i, value in enumerate(["0", "x", "-1", "99999999999"]):
        yield Case(f"run--max-tokens-{i}", ["fitplan", "run", "plan.json", "--prompt", "hi", "--max-tokens", value],
                   good, needle="--max-tokens")
    for i, value in enumerate(["0", "70000", "x"]):
        yield Case(f"run--port-{i}", ["fitplan", "run", "plan.json", "--serve", "--port", value], good,
                   needle="--port")
    yield Case("run--server", ["fitplan", "run", "plan.json", "--serve", "--server", "evil"], good, needle="evil")
    yield Case("run-pin-on-plan", [*run, "--prompt", "hi", "--runtime", "llama.cpp"], good, needle="--runtime")
    yield Case("run--serve-without-server", ["fitplan", "run", "plan.json", "--serve"], good,
               needle="pip install", block=["llama_cpp", "uvicorn"])


def check_cases() -> Iterator[Case]:
    configs: dict[str, tuple[list[Setup], str]] = {
        "fifo": ([fifo("b.toml")], "FIFO"), "folder": ([folder("b.toml")], "folder"),
        "dangling": ([dangling("b.toml")], "dangling"), "missing": ([], "b.toml"),
        "not-utf8": ([text("b.toml", b"\xff\xfe[[budget]]")], "UTF-8"),
        "not-toml": ([text("b.toml", "[[budget]\nmodel = ")], "TOML"),
        "nested-arrays": ([text("b.toml", budget("x = " + "[" * 5000 + "]" * 5000))], "deeply"),
        "nested-inline": ([text("b.toml", budget("x = " + "{a = " * 3000 + "1" + "}" * 3000))], "deeply"),
        "twenty-megabytes": ([text("b.toml", budget() + "#" * (20 * 2**20))], "larger"),
        "empty": ([text("b.toml", "")], "no [[budget]]"),
        "bad-size": ([text("b.toml", budget(limit='max_vram = "12"'))], "max_vram"),
        "unknown-field": ([text("b.toml", budget("quant = 4"))], "quant"),
        "no-limit": ([text("b.toml", budget(limit=""))], "limit"),
        "unknown-profile": ([text("b.toml", budget(hardware='["rtx-9999"]'))], "rtx-9999"),
        "profile-dev-zero": ([text("b.toml", budget(hardware='["/dev/zero"]'))], "/dev/zero"),
        "profile-fifo": ([fifo("p.toml"), text("b.toml", budget(hardware='["p.toml"]'))], "FIFO"),
        "profile-nested": ([text("p.toml", hostile_profiles()["nested-arrays"]),
                            text("b.toml", budget(hardware='["p.toml"]'))], "deeply"),
        "hardware-not-a-list": ([text("b.toml", budget(hardware='"rtx-4090-24gb"'))], "hardware"),
        "hardware-empty": ([text("b.toml", budget(hardware="[]"))], "hardware"),
        "ppl-inf": ([text("b.toml", budget(limit="max_ppl_increase = inf"))], "max_ppl_increase"),
        "ppl-nan": ([text("b.toml", budget(limit="max_ppl_increase = nan"))], "max_ppl_increase"),
        "decode-inf": ([text("b.toml", budget(limit="min_decode_tokens_per_s = inf"))], "min_decode"),
        "ttft-inf": ([text("b.toml", budget(limit='max_ttft = "' + "9" * 400 + 's"'))], "max_ttft"),
        "context-huge": ([text("b.toml", budget("context = 20000000"))], "context"),
        "threads-5000": ([text("b.toml", budget("threads = 5000"))], "threads"),
        "batch-0": ([text("b.toml", budget("batch = 0"))], "batch"),
        "context-string": ([text("b.toml", budget('context = "x"'))], "context"),
        "threads-bool": ([text("b.toml", budget("threads = true"))], "threads"),
        "offload-number": ([text("b.toml", budget("offload = 5"))], "offload"),
        "weights-number": ([text("b.toml", budget("weights = 5"))], "weights"),
        "runtime-number": ([text("b.toml", budget("runtime = 5"))], "runtime"),
        "model-empty": ([text("b.toml", budget(model='""'))], "model"),
        "model-dev-zero": ([text("b.toml", budget(model='"/dev/zero"'))], "/dev/zero"),
        "model-fifo": ([fifo("m.gguf"), text("b.toml", budget(model='"m.gguf"'))], "m.gguf"),
        "model-unknown": ([text("b.toml", budget(model='"no-such-model"'))], "no-such-model"),
        "gpu-layers-negative": ([text("b.toml", budget("gpu_layers = -1"))], "gpu_layers"),
        "weights-unknown": ([text("b.toml", budget('weights = "Q9_K"'))], "Q9_K"),
    }
    for variant, (setup, needle) in configs.items():
        for fmt in ("text", "json"):
            yield Case(f"check-config-{fmt}-{variant}", ["fitplan", "check", "--config", "b.toml", "--format", fmt],
                       setup, needle=needle)
    good = [write_budgets(VALID_BUDGET)]
    for i, fmt in enumerate(["", "xml", "JSON", ESC]):
        yield Case(f"check--format-{i}", ["fitplan", "check", "--format", fmt], good, needle="--format")
    baselines: list[list[Setup]] = [
        [fifo("base.json")], [folder("base.json")], [], [dangling("base.json")], [text("base.json", "not json")],
        [text("base.json", '{"results": [{"key": "a", "predicted": NaN}]}')], [text("base.json", '{"results": 5}')],
        [text("base.json", "[]")], [text("base.json", '{"results": [], "results": []}')],
        [text("base.json", "[" * 100000 + "]" * 100000)], [sparse("base.json", 20 * 2**20)],
    ]
    for i, setup in enumerate(baselines):
        yield Case(f"check--baseline-{i}", ["fitplan", "check", "--baseline", "base.json"], [*good, *setup],
                   needle="base.json")
    yield Case("check--baseline-dev-zero", ["fitplan", "check", "--baseline", "/dev/zero"], good, needle="/dev/zero")
    for i, value in enumerate(["x", "-1", "nan", "inf", "1001", "", "5%%"]):
        yield Case(f"check--baseline-tolerance-{i}", ["fitplan", "check", "--baseline-tolerance", value], good,
                   needle="--baseline-tolerance")
    yield Case("check-pyproject-fifo", ["fitplan", "check"], [fifo("pyproject.toml")], needle="budgets")


TEST_FILE = "import pytest\n\n@pytest.mark.{kind}({limit}, model='llama-3.1-8b', hardware={hw}{pins})\ndef test_a():\n    pass\n"


def plugin_cases() -> Iterator[Case]:
    pins: dict[str, tuple[str, str, str]] = {  # id: (limit, hardware, pins)
        "hardware-number": ("'24GB'", "5", ""), "hardware-empty": ("'24GB'", "''", ""),
        "runtime-number": ("'24GB'", "'rtx-4090-24gb'", ", runtime=5"),
        "weights-number": ("'24GB'", "'rtx-4090-24gb'", ", weights=5"),
        "kv-cache-number": ("'24GB'", "'rtx-4090-24gb'", ", kv_cache=5"),
        "context-string": ("'24GB'", "'rtx-4090-24gb'", ", context='x'"),
        "context-huge": ("'24GB'", "'rtx-4090-24gb'", ", context=10**9"),
        "context-bool": ("'24GB'", "'rtx-4090-24gb'", ", context=True"),
        "batch-0": ("'24GB'", "'rtx-4090-24gb'", ", batch=0"),
        "threads-5000": ("'24GB'", "'rtx-4090-24gb'", ", threads=5000"),
        "offload-number": ("'24GB'", "'rtx-4090-24gb'", ", offload=5"),
        "gpu-layers-negative": ("'24GB'", "'rtx-4090-24gb'", ", gpu_layers=-1"),
        "weights-list": ("'24GB'", "'rtx-4090-24gb'", ", weights=['Q4_K_M']"),
        "unknown-pin": ("'24GB'", "'rtx-4090-24gb'", ", turbo=True"),
        "limit-bare-number": ("'12'", "'rtx-4090-24gb'", ""), "limit-int": ("12", "'rtx-4090-24gb'", ""),
        "limit-none": ("None", "'rtx-4090-24gb'", ""), "limit-escape": (repr(ESC), "'rtx-4090-24gb'", ""),
        "hardware-dev-zero": ("'24GB'", "'/dev/zero'", ""), "hardware-unknown": ("'24GB'", "'rtx-9999'", ""),
    }
    for kind in ("fits_vram", "min_tokens_per_s"):
        for variant, (limit, hw, extra) in pins.items():
            if kind == "min_tokens_per_s":
                if variant in ("limit-bare-number", "limit-int"):
                    continue  # a rate needs no unit: 12 and '12' are 12 tok/s
                limit = {"'24GB'": "'5 tok/s'"}.get(limit, limit)
            body = TEST_FILE.format(kind=kind, limit=limit, hw=hw, pins=extra)
            yield Case(f"plugin-{kind}-{variant}", ["pytest", "-q", "-p", "no:cacheprovider", "test_x.py"],
                       [text("test_x.py", body)], kind="pytest-item",
                       needle=f"@pytest.mark.{kind}" if "hardware-" not in variant else hw.strip("'"))
    simple = [text("test_x.py", "def test_a():\n    pass\n")]
    options: list[tuple[str, list[str], list[Setup], dict[str, str], str]] = [
        ("report-folder", ["--fitplan-report=tests"], [folder("tests")], {}, "tests"),
        ("report-proc", ["--fitplan-report=/proc/fitplan-x.json"], [], {}, "/proc/fitplan-x.json"),
        ("report-notes", ["--fitplan-report=notes.txt"], [text("notes.txt", "my notes\n")], {}, "notes.txt"),
        ("report-other-kind", ["--fitplan-report=r.json"], [text("r.json", '{"kind": "fitplan-check-report"}')], {},
         "r.json"),
        ("report-fifo", ["--fitplan-report=r.json"], [fifo("r.json")], {}, "FIFO"),
        ("hardware-dev-zero", ["--fitplan-hardware=/dev/zero"], [], {}, "/dev/zero"),
        ("hardware-fifo", ["--fitplan-hardware=p.toml"], [fifo("p.toml")], {}, "FIFO"),
        ("hardware-nested", ["--fitplan-hardware=p.toml"], [text("p.toml", hostile_profiles()["nested-arrays"])], {},
         "deeply"),
        ("hardware-unknown", ["--fitplan-hardware=rtx-9999"], [], {}, "rtx-9999"),
        ("env-dev-zero", [], [], {"FITPLAN_HARDWARE": "/dev/zero"}, "FITPLAN_HARDWARE"),
        ("env-fifo", [], [fifo("p.toml")], {"FITPLAN_HARDWARE": "p.toml"}, "FIFO"),
        ("env-nested", [], [text("p.toml", hostile_profiles()["nested-inline"])], {"FITPLAN_HARDWARE": "p.toml"},
         "deeply"),
        ("env-unknown", [], [], {"FITPLAN_HARDWARE": "rtx-9999"}, "FITPLAN_HARDWARE"),
        ("default-ram-bare", ["--fitplan-default-ram=12"], [], {}, "12"),
        ("default-vram-word", ["--fitplan-default-vram=lots"], [], {}, "lots"),
    ]
    for variant, args, setup, env, needle in options:
        yield Case(f"plugin-option-{variant}", ["pytest", "-q", "-p", "no:cacheprovider", *args, "test_x.py"],
                   [*simple, *setup], kind="pytest-usage", env=env, needle=needle)
    for variant, body, needle in (("nested", budget("x = " + "[" * 5000 + "]" * 5000), "deeply"),
                                  ("bad-size", budget(limit='max_vram = "12"'), "max_vram"),
                                  ("profile-fifo", budget(hardware='["p.toml"]'), "FIFO")):
        setup = [*simple, text("fitplan.toml", body), *([fifo("p.toml")] if "fifo" in variant else [])]
        yield Case(f"plugin-budgets-{variant}", ["pytest", "-q", "-p", "no:cacheprovider", "--fitplan-budgets", "."],
                   setup, kind="pytest-item" if "fifo" in variant else "pytest-collect", needle=needle)


def all_cases(base_plan: dict[str, Any]) -> list[Case]:
    cases = [*advise_value_cases(), *model_argument_cases(), *output_cases(), *hardware_cases(),
             *plan_cases(base_plan), *check_cases(), *plugin_cases()]
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases


# ---------------------------------------------------------------------------------------------
# running and judging


class Runner:
    """The warm process of tests/hostile_runner.py, fed one case at a time."""

    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FITPLAN_", "PYTEST_", "HF_"))}
        env["HF_HUB_OFFLINE"] = "1"
        self.proc = subprocess.Popen([sys.executable, str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=RUNNER.parent)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], block: list[str]) -> dict[str, Any]:
        home = cwd.parent / f".{cwd.name}-home"
        env = {"FITPLAN_CACHE_DIR": str(home / "cache"), "XDG_CACHE_HOME": str(home / "xdg"),
               "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **env}
        request = {"argv": argv, "cwd": str(cwd), "env": env, "timeout_s": HANG_GUARD_S, "as_limit_bytes": AS_LIMIT,
                   "block": block}
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under root: kind, mode, and the bytes' digest or the link's target (FIFOs never opened)."""
    out: dict[str, tuple[Any, ...]] = {}
    for folder_path, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder_path, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                out[path] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    out[path] = ("file", info.st_mode, hashlib.sha256(handle.read()).hexdigest())
            else:
                out[path] = ("other", info.st_mode)
    return out


def judge(case: Case, result: dict[str, Any]) -> None:
    shown = f"{case.id}: rc={result['rc']}\nstdout={result['stdout'][-3000:]!r}\nstderr={result['stderr'][-3000:]!r}"
    assert not result["timed_out"], "hung: " + shown
    assert result["max_rss_bytes"] < MAX_RSS, f"peak RSS {result['max_rss_bytes']:,} B: " + shown
    everything = result["stdout"] + result["stderr"]
    for bad in ("Traceback", "INTERNALERROR", "Error:\n", "\x1b]0;"):
        assert bad not in everything, shown
    if case.kind == "cli":
        assert result["rc"] == 2, shown
        assert result["stdout"] == "", shown
        lines = result["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith(("fitplan: error: ", "advise: error: ")), shown
        assert "\x1b" not in result["stderr"], shown
        error = lines[0]
    elif case.kind == "pytest-usage":
        assert result["rc"] == 4, shown
        errors = [line for line in result["stderr"].splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("ERROR: "), shown
        error = errors[0]
    else:  # a bad marker or budget: that item fails (1) or is a collection error (2), naming the value
        assert result["rc"] == (1 if case.kind == "pytest-item" else 2), shown
        error = result["stdout"]
    assert case.needle in error, f"{case.needle!r} not named: " + shown


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    warm = Runner()
    yield warm
    warm.close()


@pytest.fixture(scope="module")
def base_plan(runner: Runner, smollm2_gguf: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A valid plan for the real SmolLM2 GGUF, which every plan variant edits."""
    where = tmp_path_factory.mktemp("base-plan")
    result = runner.run(["advise", smollm2_gguf, "--hardware", "gha-ubuntu-4core", "-o", "plan.json"], where, {}, [])
    assert result["rc"] == 0, result
    return json.loads((where / "plan.json").read_text())


def _plan_for_ids() -> dict[str, Any]:
    """A stand-in with the base plan's shape, only to enumerate the case ids at collection."""
    return {"kind": "fitplan-plan", "fits": True, "model": {"fingerprint": "", "location": "", "source": "gguf"},
            "plan": {}, "schema_version": 1}


CASE_IDS = [c.id for c in all_cases(_plan_for_ids())]


def test_corpus_is_large() -> None:
    """The corpus holds at least 400 hostile cases (besides the model-file and hub corpora)."""
    assert len(CASE_IDS) >= 400, len(CASE_IDS)


@pytest.fixture(scope="module")
def cases(base_plan: dict[str, Any]) -> dict[str, Case]:
    return {c.id: c for c in all_cases(base_plan)}


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_hostile_input(case_id: str, runner: Runner, cases: dict[str, Case], tmp_path: Path) -> None:
    """One hostile input: one line, the right exit code, bounded memory, nothing of the user's changed."""
    case = cases[case_id]
    work = tmp_path / "work"
    work.mkdir()
    for setup in case.setup:
        setup(work)
    before = snapshot(work)
    result = runner.run(case.argv, work, case.env, case.block)
    after = snapshot(work)
    judge(case, result)
    changed = sorted(path for path, entry in before.items() if after.get(path) != entry)
    assert not changed, f"{case.id} changed {changed}"


# ---------------------------------------------------------------------------------------------
# what must keep working beside the refusals


def test_a_large_pyproject_is_read_whole(runner: Runner, tmp_path: Path) -> None:
    """A 4.48 MB pyproject.toml whose last budget is broken fails (exit 1): no prefix of it is judged."""
    ok = budget().replace("[[budget]]", "[[tool.fitplan.budget]]")
    broken = budget(model='"llama-3.1-70b"', limit='max_vram = "8GB"').replace("[[budget]]", "[[tool.fitplan.budget]]")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'm'\n" + ok + "#" * 4_480_000 + "\n" + broken)
    result = runner.run(["fitplan", "check"], tmp_path, {}, [])
    assert result["rc"] == 1 and "BROKEN" in result["stdout"], result


def test_reports_replace_their_own_and_write_through_links(runner: Runner, tmp_path: Path) -> None:
    """check -o replaces an earlier report of any format, writes through a symlink (the link stays),
    and --force replaces a file fitplan did not write."""
    (tmp_path / "fitplan.toml").write_text(VALID_BUDGET)
    for fmt in ("json", "text", "junit", "github", "json"):
        assert runner.run(["fitplan", "check", "--format", fmt, "-o", "r.out"], tmp_path, {}, [])["rc"] == 0
    assert json.loads((tmp_path / "r.out").read_text())["kind"] == "fitplan-check-report"
    os.symlink("r.out", tmp_path / "link.out")
    assert runner.run(["fitplan", "check", "-o", "link.out"], tmp_path, {}, [])["rc"] == 0
    assert os.readlink(tmp_path / "link.out") == "r.out"
    assert (tmp_path / "r.out").read_text().startswith("fitplan-check-report: ")
    (tmp_path / "notes.md").write_text("mine\n")
    assert runner.run(["fitplan", "check", "-o", "notes.md"], tmp_path, {}, [])["rc"] == 2
    assert runner.run(["fitplan", "check", "-o", "notes.md", "--force"], tmp_path, {}, [])["rc"] == 0
    assert "fitplan check" in (tmp_path / "notes.md").read_text()


@pytest.mark.parametrize("name", ["fig.png", "fig.svg"])
def test_a_plot_replaces_only_a_plot_fitplan_drew(runner: Runner, tmp_path: Path, name: str) -> None:
    """--plot draws, draws again over its own figure, and refuses a file of the user's until --force."""
    pytest.importorskip("matplotlib")
    for _ in range(2):
        assert runner.run([*ADVISE, "--plot", name], tmp_path, {}, [])["rc"] == 0
    (tmp_path / name).write_bytes(b"the user's figure")
    refused = runner.run([*ADVISE, "--plot", name], tmp_path, {}, [])
    assert refused["rc"] == 2 and (tmp_path / name).read_bytes() == b"the user's figure", refused
    assert runner.run([*ADVISE, "--plot", name, "--force"], tmp_path, {}, [])["rc"] == 0


def test_pytest_report_replaces_its_own_report(runner: Runner, tmp_path: Path) -> None:
    """--fitplan-report writes a JSON report with its kind, and a second run replaces it."""
    (tmp_path / "test_x.py").write_text("def test_a():\n    pass\n")
    argv = ["pytest", "-q", "-p", "no:cacheprovider", "--fitplan-report=r.json", "test_x.py"]
    for _ in range(2):
        assert runner.run(argv, tmp_path, {}, [])["rc"] == 0
    assert json.loads((tmp_path / "r.json").read_text())["kind"] == "fitplan-pytest-report"


@pytest.mark.parametrize("layers", [10, 20, 32])
def test_disk_layers_are_honoured_exactly(runner: Runner, tmp_path: Path, layers: int) -> None:
    """--disk-layers N keeps exactly the last N of 32 blocks on disk, on a GPU box and on a CPU runner."""
    for hardware in ("rtx-4090-24gb", "gha-ubuntu-4core"):
        result = runner.run(["advise", "llama-3.1-8b", "--hardware", hardware, "--disk-layers", str(layers), "--json"],
                            tmp_path, {}, [])
        assert result["rc"] == 0, result
        plan = json.loads(result["stdout"])["plan"]
        assert plan["disk_layers"] == layers and plan["placement"] == "disk", plan


def test_a_profile_name_cannot_steer_the_terminal(runner: Runner, tmp_path: Path) -> None:
    """A profile file whose name and CPU name hold terminal escapes is shown without them."""
    (tmp_path / "p.toml").write_text(PROFILE.replace('name = "box"', f"name = {json.dumps(ESC + 'box')}")
                                     .replace('name = "cpu"', f"name = {json.dumps(ESC + 'cpu')}"))
    for argv in ([*ADVISE[:2], "--hardware", "p.toml"], ["fitplan", "profile", "p.toml"]):
        result = runner.run(argv, tmp_path, {}, [])
        assert result["rc"] == 0 and "\x1b" not in result["stdout"] + result["stderr"], result
        assert "box" in result["stdout"]
