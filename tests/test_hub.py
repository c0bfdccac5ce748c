"""Tests for fitplan.advisor.models.hub against a loopback imitation of the Hugging Face Hub.

The fake hub answers as the Hugging Face Hub does for these files: HEAD and GET on
/{org}/{name}/resolve/{revision}/{file} with ETag, X-Repo-Commit and Content-Length, 206 answers
with Content-Range to Range requests, and X-Error-Code (RepoNotFound / EntryNotFound) on 404s;
`answer` makes it refuse every file with a given status and X-Error-Code.
hub_spec runs in a subprocess because huggingface_hub reads HF_ENDPOINT, HF_HOME and
HF_HUB_OFFLINE once, at import.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "tiny-org/tiny-llama"
CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 128, "vocab_size": 256, "tie_word_embeddings": True,
    "max_position_embeddings": 2048, "torch_dtype": "bfloat16",
}


def llama_shapes() -> dict[str, list[int]]:
    """The tensors transformers saves for CONFIG (tied: no lm_head)."""
    shapes = {"model.embed_tokens.weight": [256, 64], "model.norm.weight": [64]}
    for i in range(2):
        p = f"model.layers.{i}."
        shapes.update({
            p + "input_layernorm.weight": [64], p + "post_attention_layernorm.weight": [64],
            p + "self_attn.q_proj.weight": [64, 64], p + "self_attn.k_proj.weight": [32, 64],
            p + "self_attn.v_proj.weight": [32, 64], p + "self_attn.o_proj.weight": [64, 64],
            p + "mlp.gate_proj.weight": [128, 64], p + "mlp.up_proj.weight": [128, 64],
            p + "mlp.down_proj.weight": [64, 128],
        })
    return shapes


PARAMETERS = sum(math.prod(s) for s in llama_shapes().values())


def safetensors_bytes(shapes: dict[str, list[int]], *, missing: int = 0, claim: int | None = None) -> bytes:
    """A BF16 safetensors file of zeros; `missing` cuts data bytes off, `claim` overrides the length prefix."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = math.prod(shape) * 2
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text) if claim is None else claim) + text + bytes(offset - missing)


def header_end(data: bytes) -> int:
    """The first byte after a safetensors file's header."""
    return 8 + struct.unpack("<Q", data[:8])[0]


def single_repo(**kwargs: Any) -> dict[str, bytes]:
    weights = safetensors_bytes(llama_shapes(), **kwargs)
    return {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": weights}


def sharded_repo() -> dict[str, bytes]:
    names = list(llama_shapes())
    parts = {"model-00001-of-00002.safetensors": names[:9], "model-00002-of-00002.safetensors": names[9:]}
    files = {"config.json": json.dumps(CONFIG).encode()}
    weight_map = {}
    for file, part in parts.items():
        files[file] = safetensors_bytes({n: llama_shapes()[n] for n in part})
        weight_map.update(dict.fromkeys(part, file))
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


class FakeHub:
    """A ThreadingHTTPServer on 127.0.0.1 serving repos {repo id: {file name: bytes}}."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # method, file path, Range header
        self.ignore_range = False
        self.answer: tuple[int, str] | None = None  # (status, X-Error-Code) for every file, when set
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        rng = self.headers.get("Range")
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", urlsplit(self.path).path)
        if match is None or match[1] not in self.hub.repos:
            return self._error("RepoNotFound")
        files, file = self.hub.repos[match[1]], unquote(match[3])
        self.hub.requests.append((self.command, file, rng))
        if self.hub.answer is not None:
            return self._error(self.hub.answer[1], self.hub.answer[0])
        if file not in files:
            return self._error("EntryNotFound")
        data = files[file]
        start, end, status = 0, len(data) - 1, 200
        if rng and not self.hub.ignore_range:
            asked = re.fullmatch(r"bytes=(\d+)-(\d*)", rng)
            assert asked is not None, rng
            start, end, status = int(asked[1]), min(int(asked[2] or len(data) - 1), len(data) - 1), 206
        self.send_response(status)
        self.send_header("ETag", f'"{hashlib.sha1(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if send_body:
            try:
                self.wfile.write(data[start:end + 1])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading, as it should when a range is ignored

    def _error(self, code: str, status: int = 404) -> None:
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    server = FakeHub()
    yield server
    server.stop()


_RUN = """
import json, sys, time
from fitplan.advisor.models.hub import hub_spec
from fitplan.errors import FitplanError
start = time.perf_counter()
try:
    spec = hub_spec(sys.argv[1])
    out = {"parameters": spec.parameters, "stored_bytes": spec.stored_bytes, "dtype": spec.native_dtype,
           "source": spec.source, "hub_id": spec.hub_id, "stored": len(spec.stored_tensors)}
except FitplanError as exc:
    out = {"error": type(exc).__name__, "message": str(exc)}
out["seconds"] = time.perf_counter() - start
print(json.dumps(out))
"""


def run_hub_spec(repo_id: str, endpoint: str, hf_home: Path, **env: str) -> dict[str, Any]:
    """hub_spec(repo_id) in a fresh interpreter pointed at the fake hub; its result or error as a dict."""
    clean = {k: v for k, v in os.environ.items()
             if not k.upper().startswith(("HF_", "HUGGINGFACE")) and "PROXY" not in k.upper()}
    clean.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "NO_PROXY": "127.0.0.1,localhost",
                  "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                  "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5", **env})
    proc = subprocess.run([sys.executable, "-c", _RUN, repo_id], env=clean, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("files", [single_repo(), sharded_repo()], ids=["single", "sharded"])
def test_parameters_and_bytes_come_from_the_headers(hub: FakeHub, tmp_path: Path, files: dict[str, bytes]) -> None:
    """config.json and the safetensors headers give the exact parameter count and stored bytes."""
    hub.repos[REPO] = files
    out = run_hub_spec(REPO, hub.url, tmp_path)
    assert out["parameters"] == PARAMETERS == 90432
    assert out["stored_bytes"] == 2 * PARAMETERS
    assert out["stored"] == len(llama_shapes())
    assert (out["source"], out["hub_id"], out["dtype"]) == ("hub", REPO, "bf16")


def test_second_call_needs_no_network(hub: FakeHub, tmp_path: Path) -> None:
    """After one online call, hub_spec works with the server gone, and under HF_HUB_OFFLINE=1."""
    hub.repos[REPO] = single_repo()
    first = run_hub_spec(REPO, hub.url, tmp_path)
    assert list(Path(tmp_path, "fitplan").rglob(f"{COMMIT}.json"))
    hub.stop()
    for env in ({}, {"HF_HUB_OFFLINE": "1"}):
        again = run_hub_spec(REPO, hub.url, tmp_path, **env)
        assert {k: again[k] for k in first if k != "seconds"} == {k: first[k] for k in first if k != "seconds"}


def test_offline_without_cache_fails_fast_in_one_line(hub: FakeHub, tmp_path: Path) -> None:
    """HF_HUB_OFFLINE=1 with nothing cached: one-line HubError, and not one request."""
    hub.repos[REPO] = single_repo()
    out = run_hub_spec(REPO, hub.url, tmp_path, HF_HUB_OFFLINE="1")
    assert out["error"] == "HubError"
    assert "\n" not in out["message"]
    assert "HF_HUB_OFFLINE=1" in out["message"] and "fitplan models" in out["message"]
    assert hub.requests == []


def test_unreachable_hub_without_cache_fails_fast(hub: FakeHub, tmp_path: Path) -> None:
    """A hub that refuses connections, with nothing cached, gives a one-line HubError at once: with the
    deadline at 600 s, a client that retried would run into run_hub_spec's hang guard."""
    hub.stop()
    out = run_hub_spec(REPO, hub.url, tmp_path, FITPLAN_HUB_TIMEOUT="600")
    assert out["error"] == "HubError" and "cannot reach" in out["message"] and "\n" not in out["message"]


def test_silent_hub_times_out(tmp_path: Path) -> None:
    """A hub that accepts connections but never answers gives HubError after HF_HUB_ETAG_TIMEOUT (the
    per-request timeout: the 600 s deadline would run into run_hub_spec's hang guard)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        out = run_hub_spec(REPO, url, tmp_path, HF_HUB_ETAG_TIMEOUT="1", HF_HUB_DOWNLOAD_TIMEOUT="1",
                           FITPLAN_HUB_TIMEOUT="600")
    assert out["error"] == "HubError" and "in time" in out["message"]


def test_missing_repo_is_model_not_found(hub: FakeHub, tmp_path: Path) -> None:
    """A repository the hub answers 404 RepoNotFound for gives a one-line ModelNotFoundError."""
    out = run_hub_spec("nobody/no-such-model", hub.url, tmp_path)
    assert out["error"] == "ModelNotFoundError"
    assert "\n" not in out["message"] and "'nobody/no-such-model'" in out["message"]


@pytest.mark.parametrize("kwargs", [{"missing": 2}, {"claim": 10**6}], ids=["tensor-beyond-file", "header-beyond-file"])
def test_header_claiming_more_than_the_file_is_refused(
    hub: FakeHub, tmp_path: Path, kwargs: dict[str, int],
) -> None:
    """A header whose tensors, or whose own length, run past the file's size gives ModelFileError."""
    hub.repos[REPO] = single_repo(**kwargs)
    out = run_hub_spec(REPO, hub.url, tmp_path)
    assert out["error"] == "ModelFileError"
    assert "model.safetensors of tiny-org/tiny-llama" in out["message"]


@pytest.mark.parametrize("files", [single_repo(), sharded_repo()], ids=["single", "sharded"])
def test_only_header_bytes_are_requested(hub: FakeHub, tmp_path: Path, files: dict[str, bytes]) -> None:
    """Every request for a safetensors file is a GET with a Range ending inside its header."""
    hub.repos[REPO] = files
    run_hub_spec(REPO, hub.url, tmp_path)
    seen = [(method, file, rng) for method, file, rng in hub.requests if file.endswith(".safetensors")]
    assert len(seen) == 2 * sum(f.endswith(".safetensors") for f in files)  # length, then header
    for method, file, rng in seen:
        asked = re.fullmatch(r"bytes=(\d+)-(\d+)", rng or "")
        assert method == "GET" and asked is not None, (method, file, rng)
        assert int(asked[2]) < header_end(files[file])


def test_server_ignoring_range_is_cut_off(hub: FakeHub, tmp_path: Path) -> None:
    """A server answering 200 with the whole file to a range request gives HubError, not a download."""
    hub.repos[REPO] = single_repo()
    hub.ignore_range = True
    out = run_hub_spec(REPO, hub.url, tmp_path)
    assert out["error"] == "HubError" and "byte range" in out["message"]


def test_headers_missing_a_tensor_disagree_with_config(hub: FakeHub, tmp_path: Path) -> None:
    """Safetensors holding fewer parameters than config.json describes give ModelFileError."""
    shapes = llama_shapes()
    del shapes["model.norm.weight"]
    hub.repos[REPO] = {"config.json": json.dumps(CONFIG).encode(), "model.safetensors": safetensors_bytes(shapes)}
    out = run_hub_spec(REPO, hub.url, tmp_path)
    assert out["error"] == "ModelFileError" and "shard missing" in out["message"]


def test_repo_without_safetensors_uses_the_config(hub: FakeHub, tmp_path: Path) -> None:
    """A repository with config.json but no safetensors gives the config's layout, no stored bytes."""
    hub.repos[REPO] = {"config.json": json.dumps(CONFIG).encode(), "pytorch_model.bin": b"\0" * 16}
    out = run_hub_spec(REPO, hub.url, tmp_path)
    assert out["parameters"] == PARAMETERS and out["stored_bytes"] is None


def test_import_does_not_load_huggingface_hub() -> None:
    """Importing fitplan.advisor.models.hub leaves huggingface_hub and its HTTP client unimported (CLI cold start)."""
    code = ("import sys, fitplan.advisor.models.hub; "
            "print(any(m in sys.modules for m in ('huggingface_hub', 'httpx', 'httpx2')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_fitplan_check_reads_a_hub_model_by_its_headers(hub: FakeHub, tmp_path: Path) -> None:
    """A budget naming a hub id is predicted from the repository's config and safetensors headers (no
    weights fetched); offline with an empty cache it is one line naming the budgets file and line."""
    hub.repos[REPO] = single_repo()
    (tmp_path / "fitplan.toml").write_text(f'[[budget]]\nmodel = "{REPO}"\nhardware = ["rtx-4090-24gb"]\n'
                                           'max_vram = "24GB"\n')
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("HF_", "HUGGINGFACE"))}
    env.update({"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf"), "NO_PROXY": "127.0.0.1,localhost",
                "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "5", "FITPLAN_CACHE_DIR": str(tmp_path / "c")})
    fitplan = str(Path(sys.executable).with_name("fitplan"))
    run = subprocess.run([fitplan, "check", "--format", "json"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)["results"][0]
    assert result["metric"] == "max_vram" and 0 < result["predicted"] < 24e9
    assert all(rng is not None for _, file, rng in hub.requests if file.endswith(".safetensors"))  # headers only
    offline = subprocess.run([fitplan, "check"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                             env={**env, "HF_HOME": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1",
                                  "FITPLAN_CACHE_DIR": str(tmp_path / "c2")})
    assert offline.returncode == 2 and len(offline.stderr.strip().splitlines()) == 1
    assert offline.stderr.startswith("fitplan: error: fitplan.toml:1: budget 1 on rtx-4090-24gb:"), offline.stderr


def test_repeat_call_asks_only_for_config(hub: FakeHub, tmp_path: Path) -> None:
    """Once a commit is cached, a call online asks for config.json alone (its answer names the commit)."""
    hub.repos[REPO] = sharded_repo()
    first = run_hub_spec(REPO, hub.url, tmp_path)
    hub.requests.clear()
    again = run_hub_spec(REPO, hub.url, tmp_path)
    assert [file for _, file, _ in hub.requests] == ["config.json"]
    assert again["stored_bytes"] == first["stored_bytes"] == 2 * PARAMETERS


@pytest.mark.parametrize("status", [429, 503])
def test_hub_down_falls_back_to_the_cache(hub: FakeHub, tmp_path: Path, status: int) -> None:
    """429 or 5xx after one good call: the cached commit of the revision, no error; nothing cached: one line."""
    hub.repos[REPO] = single_repo()
    hub.answer = (status, "")
    out = run_hub_spec(REPO, hub.url, tmp_path)
    assert out["error"] == "HubError" and f"HTTP {status}" in out["message"] and "\n" not in out["message"]
    hub.answer = None
    first = run_hub_spec(REPO, hub.url, tmp_path)
    hub.answer = (status, "")
    again = run_hub_spec(REPO, hub.url, tmp_path)
    assert again["stored_bytes"] == first["stored_bytes"] == 2 * PARAMETERS


@pytest.mark.parametrize(("status", "code", "error", "needle"), [
    (401, "GatedRepo", "ModelNotFoundError", "gated"),
    (403, "GatedRepo", "ModelNotFoundError", "gated"),
    (401, "", "ModelNotFoundError", "no such repository, or a private one"),
    (404, "RevisionNotFound", "ModelNotFoundError", "no such revision"),
    (404, "EntryNotFound", "HubError", "no config.json"),
    (403, "", "HubError", "HTTP 403"),
])
def test_hub_refusals_are_one_line(hub: FakeHub, tmp_path: Path, status: int, code: str, error: str,
                                   needle: str) -> None:
    """The hub's refusals (X-Error-Code) give the error a user can act on, in one line."""
    hub.repos[REPO] = single_repo()
    hub.answer = (status, code)
    out = run_hub_spec(REPO, hub.url, tmp_path)
    assert out["error"] == error and needle in out["message"] and "\n" not in out["message"], out


def test_cache_of_earlier_fitplan_still_serves_offline(hub: FakeHub, tmp_path: Path) -> None:
    """A cache written before config.json was kept in it (headers only, config.json and the ref in
    huggingface_hub's own cache, as hf_hub_download left them) still answers under HF_HUB_OFFLINE=1."""
    hub.repos[REPO] = single_repo()
    first = run_hub_spec(REPO, hub.url, tmp_path)
    folder = tmp_path / "fitplan" / "models--tiny-org--tiny-llama"
    entry = json.loads((folder / f"{COMMIT}.json").read_text())
    (folder / f"{COMMIT}.json").write_text(json.dumps({"files": entry["files"]}))
    (folder / "refs.json").unlink()
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-llama"
    (snapshot / "snapshots" / COMMIT).mkdir(parents=True)
    (snapshot / "snapshots" / COMMIT / "config.json").write_text(entry["config"])
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text(COMMIT)
    again = run_hub_spec(REPO, hub.url, tmp_path, HF_HUB_OFFLINE="1")
    assert again["stored_bytes"] == first["stored_bytes"] and again["parameters"] == PARAMETERS


@pytest.mark.parametrize("value", ["soon", "0", "-3", "nan"])
def test_bad_deadline_is_one_line(hub: FakeHub, tmp_path: Path, value: str) -> None:
    """FITPLAN_HUB_TIMEOUT must be a positive number of seconds."""
    hub.repos[REPO] = single_repo()
    out = run_hub_spec(REPO, hub.url, tmp_path, FITPLAN_HUB_TIMEOUT=value)
    assert out["error"] == "BadValueError" and "FITPLAN_HUB_TIMEOUT" in out["message"]
    assert hub.requests == []
