"""The hub corpus: a misbehaving loopback hub against the real `advise` command.

Each case points HF_ENDPOINT at a HostileHub that serves the tiny llama of test_hub.py except for
one misbehaving answer, and runs `advise tiny-org/tiny-llama --hardware rtx-4090-24gb` with the
users' defaults (telemetry not disabled, no HF_HUB_OFFLINE), HF_HOME and FITPLAN_CACHE_DIR in
tmp_path and a short whole-exchange deadline (FITPLAN_HUB_TIMEOUT). Each asserts: exit code 2, one
line on stderr naming what was refused, no traceback, peak RSS under 1 GiB (wait4's rusage, under a
4 GiB RLIMIT_AS), no hang (a generous guard, never a speed check), no file that existed before
changed, nothing cached from the hostile answer, and that only the repository's own files were
asked for: /api/agent-harnesses (an endless body here) never.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from test_hub import COMMIT, REPO, single_repo

DEADLINE_S = 4  # FITPLAN_HUB_TIMEOUT of every case
HANG_GUARD_S = DEADLINE_S + 30  # fails a hang; how fast a refusal comes is not asserted (CI shares its machine)
AS_LIMIT = 4 * 2**30
MAX_RSS = 2**30
ADVISE = str(Path(sys.executable).with_name("advise"))
CHUNK = b"\0" * 65536

Behaviour = Callable[["_Handler", bytes], None]


class HostileHub:
    """A ThreadingHTTPServer on 127.0.0.1: REPO's files, each answered normally or by a behaviour."""

    def __init__(self, files: dict[str, bytes], behaviours: dict[str, Behaviour]) -> None:
        self.files = files
        self.behaviours = behaviours
        self.paths: list[str] = []  # every request's path, whatever it asks for
        self.closing = threading.Event()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = _Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.closing.set()  # hanging and trickling answers end
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is what the cases expect
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    hub: HostileHub
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_POST(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = urlsplit(self.path).path
        self.hub.paths.append(path)
        try:
            if path == "/api/agent-harnesses":
                return endless(self, b"")
            prefix = f"/{REPO}/resolve/"
            if not path.startswith(prefix) or path.count("/") < 5:
                return self._error("RepoNotFound")
            file = unquote(path[len(prefix):].split("/", 1)[1])
            behaviour = self.hub.behaviours.get(file) if body else None  # HEAD: the file's true headers
            if behaviour is not None:
                return behaviour(self, self.hub.files.get(file, b""))
            if file not in self.hub.files:
                return self._error("EntryNotFound")
            self.serve(self.hub.files[file], body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def serve(self, data: bytes, body: bool = True, commit: str = COMMIT) -> None:
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get("Range")
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end, status = int(first), min(int(last or end), len(data) - 1), 206
        self.begin(status, commit)
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if body:
            self.wfile.write(data[start:end + 1])

    def begin(self, status: int, commit: str = COMMIT) -> None:
        """The status line and the headers every hub answer carries."""
        self.send_response(status)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{commit[:32]}"')

    def _error(self, code: str) -> None:
        self.send_response(404)
        self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


# ---- behaviours ----------------------------------------------------------------------------------

def hang_after_headers(h: _Handler, data: bytes) -> None:
    h.begin(200)
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.flush()
    h.hub.closing.wait(HANG_GUARD_S)


def trickle(h: _Handler, data: bytes) -> None:
    """The config, one byte a second (a body that never stalls long enough for a read timeout)."""
    h.begin(200)
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    for byte in data:
        h.wfile.write(bytes([byte]))
        h.wfile.flush()
        if h.hub.closing.wait(1):
            return


def trickle_headers(h: _Handler, data: bytes) -> None:
    """A status line, then one endless header line at a byte a second: no read timeout ever fires."""
    h.wfile.write(b"HTTP/1.1 200 OK\r\nX-Repo-Commit: " + COMMIT.encode() + b"\r\nX-Pad: ")
    h.wfile.flush()
    while not h.hub.closing.wait(1):
        h.wfile.write(b"x")
        h.wfile.flush()


def endless(h: _Handler, data: bytes, *, status: int = 200, headers: dict[str, str] | None = None,
            chunked: bool = True) -> None:
    """Zeros forever: chunked, or delimited by closing the connection."""
    h.begin(status)
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    if chunked:
        h.send_header("Transfer-Encoding", "chunked")
    else:
        h.send_header("Connection", "close")
        h.close_connection = True
    h.end_headers()
    frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if chunked else CHUNK
    while not h.hub.closing.is_set():
        h.wfile.write(frame)


def endless_range(h: _Handler, data: bytes) -> None:
    """A well-formed 206 for the range asked for, then more bytes than it, forever."""
    first, _, last = (h.headers.get("Range") or "bytes=0-7").removeprefix("bytes=").partition("-")
    endless(h, data, status=206, headers={"Content-Range": f"bytes {first}-{last}/{10**12}"}, chunked=False)


def huge_length(h: _Handler, data: bytes) -> None:
    """Content-Length 10 GB, a KiB a second."""
    h.begin(200)
    h.send_header("Content-Length", str(10 * 10**9))
    h.end_headers()
    while not h.hub.closing.wait(1):
        h.wfile.write(CHUNK[:1024])
        h.wfile.flush()


_BOMB = gzip.compress(b" " * (200 * 10**6), compresslevel=9)  # ~200 KB that inflate to 200 MB


def gzip_bomb(h: _Handler, data: bytes) -> None:
    h.begin(200)
    h.send_header("Content-Encoding", "gzip")
    h.send_header("Content-Length", str(len(_BOMB)))
    h.end_headers()
    h.wfile.write(_BOMB)


def bad_commit(h: _Handler, data: bytes) -> None:
    h.serve(data, commit="../../etc")


def redirect_loop(h: _Handler, data: bytes) -> None:
    h.begin(302)
    h.send_header("Location", h.path)
    h.send_header("Content-Length", "0")
    h.end_headers()


def many_shards() -> dict[str, bytes]:
    files = single_repo()
    weight_map = {f"model.layers.{i}.w": f"model-{i + 1:05d}-of-00300.safetensors" for i in range(300)}
    files["model.safetensors.index.json"] = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
    return files


# ---- the cases -----------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    behaviours: dict[str, Behaviour]
    needle: str  # a text the error line must contain
    files: Callable[[], dict[str, bytes]] = single_repo
    exit_code: int = 2


CASES = [
    Case("config-hangs-after-headers", {"config.json": hang_after_headers}, "in time"),
    Case("config-trickled", {"config.json": trickle}, "in time"),
    Case("config-headers-trickled", {"config.json": trickle_headers}, "in time"),
    Case("config-endless-chunked", {"config.json": endless}, "larger than the 4194304 bytes"),
    Case("index-endless", {"model.safetensors.index.json": lambda h, d: endless(h, d, chunked=False)},
         "model.safetensors.index.json of tiny-org/tiny-llama: larger than"),
    Case("config-10GB-content-length", {"config.json": huge_length}, "larger than the 4194304 bytes"),
    Case("config-gzip-bomb", {"config.json": gzip_bomb}, "Content-Encoding gzip"),
    Case("x-repo-commit-traversal", {"config.json": bad_commit}, "X-Repo-Commit '../../etc'"),
    Case("config-redirect-loop", {"config.json": redirect_loop}, "redirected more than"),
    Case("index-300-shards", {}, "names 300 safetensors files", files=many_shards),
    Case("range-endless", {"model.safetensors": endless_range}, "more bytes than the range"),
    Case("agent-harnesses-endless", {}, "", exit_code=0),  # a good repo: the endless registry is never asked
]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """HF_HOME with a cache entry of another model and a file of the user's, to prove nothing changes."""
    other = tmp_path / "hf" / "fitplan" / "models--other-org--other"
    other.mkdir(parents=True)
    (other / f"{COMMIT}.json").write_text('{"config": "{}", "files": {}}')
    (tmp_path / "hf" / "user-file.txt").write_text("mine")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "user-file.txt").write_text("mine too")
    return tmp_path


def snapshot(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


# A one-thread launcher forks advise under the address-space limit and reports its peak RSS (wait4): a
# child spawned from this process directly (vfork) would count this process's own peak, and
# preexec_fn is unsafe with the server's threads here.
_LAUNCH = f"""
import json, os, resource, signal, sys
pid = os.fork()
if pid == 0:
    resource.setrlimit(resource.RLIMIT_AS, ({AS_LIMIT}, {AS_LIMIT}))
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    json.dump({{"rss": usage.ru_maxrss * 1024}}, report)
if os.WIFSIGNALED(status):
    os.kill(os.getpid(), os.WTERMSIG(status))
sys.exit(os.WEXITSTATUS(status))
"""


def run_advise(endpoint: str, root: Path) -> dict[str, Any]:
    """`advise REPO` as a user runs it, with its peak RSS and a kill after HANG_GUARD_S."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("HF_", "HUGGINGFACE")) and "PROXY" not in k.upper()
           and k.upper() not in ("DISABLE_TELEMETRY", "DO_NOT_TRACK", "TRANSFORMERS_OFFLINE")}
    env.update({"HF_ENDPOINT": endpoint, "HF_HOME": str(root / "hf"), "FITPLAN_CACHE_DIR": str(root / "cache"),
                "NO_PROXY": "127.0.0.1,localhost", "FITPLAN_HUB_TIMEOUT": str(DEADLINE_S)})
    report = root / "rusage.json"
    argv = [sys.executable, "-I", "-S", "-c", _LAUNCH, str(report), ADVISE, REPO, "--hardware", "rtx-4090-24gb"]
    with open(root / "stdout", "w+b") as out, open(root / "stderr", "w+b") as err:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=root,
                                start_new_session=True)
        try:
            proc.wait(HANG_GUARD_S)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed = True
        seconds = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        rss = json.loads(report.read_text())["rss"] if report.exists() else -1
        return {"rc": proc.returncode, "stdout": out.read().decode(errors="replace"),
                "stderr": err.read().decode(errors="replace"), "seconds": seconds, "rss": rss, "killed": killed}


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[tuple[Case, HostileHub]]:
    case: Case = request.param
    hub = HostileHub(case.files(), case.behaviours)
    yield case, hub
    hub.stop()


@pytest.mark.parametrize("hostile", CASES, ids=[c.id for c in CASES], indirect=True)
def test_hostile_hub_is_one_line_within_the_deadline(hostile: tuple[Case, HostileHub], home: Path) -> None:
    case, hub = hostile
    before = snapshot(home)
    result = run_advise(hub.url, home)
    print(f"{case.id}: {result['seconds']:.2f} s, peak RSS {result['rss'] / 2**20:.0f} MiB: "
          f"{result['stderr'].strip()[:160]}")  # shown with -s
    shown = f"{case.id}: rc={result['rc']} stderr={result['stderr'][-2000:]!r} stdout={result['stdout'][-500:]!r}"
    assert not result["killed"], "hung: " + shown
    assert result["seconds"] < DEADLINE_S + 15, shown  # the deadline held (hang guard, not a speed check)
    assert result["rc"] == case.exit_code, shown
    assert "Traceback" not in result["stderr"], shown
    lines = result["stderr"].strip().splitlines()
    if case.exit_code == 2:
        assert len(lines) == 1 and lines[0].startswith("advise: error: ") and REPO in lines[0], shown
        assert case.needle in lines[0], shown
    else:
        assert lines == [], shown  # no library chatter either
        first = result["stdout"].splitlines()[0] if result["stdout"] else ""
        assert first.startswith(f"{REPO} (") and first.endswith("on rtx-4090-24gb"), shown  # the plan
    assert 0 < result["rss"] < MAX_RSS, shown
    after = snapshot(home)
    assert {p: d for p, d in after.items() if p in before} == before, "a file that existed changed"
    new_in_hf = sorted(p for p in after if p not in before and p.startswith(str(home / "hf")))
    if case.exit_code == 2:
        assert new_in_hf == [], new_in_hf  # nothing of a hostile answer is cached
    else:
        assert all("models--tiny-org--tiny-llama" in p for p in new_in_hf), new_in_hf
    asked = set(hub.paths)
    assert "/api/agent-harnesses" not in asked, asked
    assert all(p.startswith(f"/{REPO}/resolve/") for p in asked), asked
    if case.id == "index-300-shards":
        assert not any(p.endswith("-of-00300.safetensors") for p in asked), asked  # refused before any request
