"""ModelSpecs of hub repositories that are not in the catalog: config.json plus safetensors headers.

Only headers travel: each safetensors file costs two HTTP range requests (its 8-byte length, then the
header), never its tensor data. fitplan makes every request itself, with one HTTP client (httpx2 or
httpx, whichever huggingface_hub brought) and no retries; huggingface_hub only supplies its settings
(HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE, the timeouts) and the token (get_token), so none of its own
requests (telemetry, the agent-harness registry) and none of its retry chatter on stderr happen here.

Bounds, whatever the server sends:
- one deadline for the whole exchange: FITPLAN_HUB_TIMEOUT seconds (default 60), checked between the
  chunks of every body and used to cap every request's timeout; HF_HUB_ETAG_TIMEOUT (config.json) and
  HF_HUB_DOWNLOAD_TIMEOUT (the rest) stay per-request limits within it;
- every body is streamed against a cap: config.json MAX_CONFIG_BYTES, the shard index MAX_INDEX_BYTES,
  each header MAX_HEADER_BYTES and all headers together MAX_TOTAL_HEADER_BYTES; `Accept-Encoding:
  identity` is asked for and any other Content-Encoding is refused (a small gzip can inflate to GBs);
- at most MAX_SHARDS safetensors files, MAX_REDIRECTS redirects per request, and an X-Repo-Commit
  that is 40 hex digits (it names a cache file).
Every failure is one FitplanError line.

Cache (HF_HOME/fitplan/models--org--name/): `<commit>.json` holds a commit's config.json text and its
parsed-and-checked headers (a commit's files never change), `refs.json` maps revisions to commits. A
repeat call asks only for config.json (its headers tell the commit; a cached commit's body is not
read); HF_HUB_OFFLINE=1 after one online call needs no network, and an unreachable hub (refused,
silent, 429, 5xx) falls back to the cache. huggingface_hub and the HTTP client are imported inside
the functions only: importing them would slow every CLI start.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from fitplan.advisor.models.architectures import spec_from_config
from fitplan.advisor.models.model_files import MAX_CONFIG_BYTES, attach_stored, parse_config, tensor_limit
from fitplan.advisor.models.safetensors_header import MAX_HEADER_BYTES, parse_header, strict_json
from fitplan.errors import BadValueError, FitplanError, HubError, ModelFileError, ModelNotFoundError
from fitplan.model_spec import ModelSpec

Headers = dict[str, tuple[str, tuple[int, ...], int]]
RawHeaders = dict[str, tuple[str, int]]  # file name -> (header JSON text, bytes of its data section)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
MAX_INDEX_BYTES = 64 * 2**20  # the largest real indexes (hundreds of thousands of tensors) are ~10 MB
MAX_SHARDS = 256  # the most sharded real models: Llama-3.1-405B 191 files, DeepSeek-V3 163
MAX_TOTAL_HEADER_BYTES = 64 * 2**20  # all headers of a commit, as for a local folder; DeepSeek-V3's take ~10 MB
MAX_REDIRECTS = 5  # the hub redirects a file at most twice (renamed repository, then its storage)
DEFAULT_TIMEOUT_S = 60.0
TIMEOUT_ENV = "FITPLAN_HUB_TIMEOUT"
_WORKERS = 8  # safetensors files read at once: 191 shards one by one cost 382+ round trips in a row
_GRACE_S = 1.0  # the caller's backstop after the deadline, for what no timeout covers (DNS, trickled headers)
_INSTEAD = "pass a local folder with config.json, a .gguf file, or a catalog name ('fitplan models' lists them)"
_SHARD_NAME = re.compile(r"[\w.\-/]+\.safetensors")
_REPO_ID = re.compile(r"\w(?:[\w.\-]*\w)?/\w(?:[\w.\-]*\w)?")  # huggingface_hub's validate_repo_id
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_REF_NAME = re.compile(r"[\w.\-]+(?:/[\w.\-]+)*")
_HUB_DOWN = (429, 500, 502, 503, 504)  # answers after which the cache is used, as for an unreachable hub


def hub_spec(repo_id: str, *, revision: str | None = None) -> ModelSpec:
    """The spec of a hub repository; its stored bytes are exact where it holds safetensors files."""
    import huggingface_hub

    if int(huggingface_hub.__version__.split(".")[0]) < 1:  # the ONNX environment's transformers 4.57 pins < 1.0
        raise HubError(f"reading hub models needs huggingface_hub >= 1.0; this environment has "
                       f"{huggingface_hub.__version__}: run advise from fitplan's main environment")
    from huggingface_hub import constants

    label = repo_id if revision is None else f"{repo_id}@{revision}"
    if not _is_repo_id(repo_id):
        raise ModelNotFoundError(_message(label, "not a hub id such as 'org/name'"))
    if revision is not None and (not revision or len(revision) > 256 or not revision.isprintable()):
        raise ModelNotFoundError(_message(label, "not a revision name"))
    cached = _lookup(repo_id, revision) if revision is not None and _COMMIT.fullmatch(revision) else None
    if cached is None and constants.is_offline_mode():
        cached = _lookup(repo_id, revision)
        if cached is None:
            raise HubError(_message(label, "offline: HF_HUB_OFFLINE=1; its config and safetensors headers "
                                           "are not cached"))
    if cached is not None:  # a commit never changes: no network
        spec, headers = _from_files(repo_id, *cached, label)
    else:
        seconds, http = _deadline_s(), _http_module()
        if http is None:
            raise HubError(_message(label, "reading hub models needs httpx2 or httpx, which huggingface_hub "
                                           "installs; reinstall fitplan"))
        exchange = _Exchange(http, seconds, label, constants.ENDPOINT)  # the clock starts here
        spec, headers = exchange.run(lambda: _online(exchange, repo_id, revision, label))
    return attach_stored(spec, headers, repo_id)


def _deadline_s() -> float:
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 86400:
        raise BadValueError(f"{TIMEOUT_ENV}={text!r}: expected the seconds a hub exchange may take, "
                            f"such as {DEFAULT_TIMEOUT_S:g}")
    return value


def _is_repo_id(repo_id: str) -> bool:
    """org/name as the hub spells them (what huggingface_hub's validate_repo_id accepts), safe in a URL and a path."""
    return (len(repo_id) <= 96 and _REPO_ID.fullmatch(repo_id) is not None and ".." not in repo_id
            and "--" not in repo_id and not repo_id.endswith(".git"))


# ---- the exchange ----------------------------------------------------------------------------------

class _Cancelled(Exception):
    """Raised in a worker whose sibling failed or whose caller gave up; never reaches the user."""


class _HubDown(Exception):
    """config.json answered 429 or 5xx: use the cache if it can, else report the status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _Exchange:
    """One client, one deadline and one header budget for every request of one hub_spec call."""

    def __init__(self, http: Any, seconds: float, label: str, endpoint: str) -> None:
        self.http = http
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.label = label
        self.endpoint = endpoint.rstrip("/")
        self.cancelled = threading.Event()
        self.client: Any = None
        self._lock = threading.Lock()
        self._header_bytes = 0

    def run(self, work: Callable[[], Any]) -> Any:
        """work() in a daemon thread, given up on at the deadline whatever it is blocked in."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = self._with_client(work)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
                box["error"] = exc

        thread = threading.Thread(target=target, name="fitplan-hub", daemon=True)
        thread.start()
        try:
            thread.join(max(0.0, self.end - time.monotonic()) + _GRACE_S)
        finally:
            if thread.is_alive():
                self.cancelled.set()  # it stops at its next chunk or timeout; nothing it still does is kept
        if thread.is_alive():
            raise self.expired()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _with_client(self, work: Callable[[], Any]) -> Any:
        from huggingface_hub import get_token

        headers = {"User-Agent": "fitplan", "Accept-Encoding": "identity"}
        try:
            token = get_token()
        except Exception as exc:  # noqa: BLE001 - an OIDC exchange that failed (HF_OIDC_RESOURCE set)
            raise HubError(_message(self.label, f"cannot get a hub token: {_one_line(exc)}")) from None
        if token:
            headers["Authorization"] = f"Bearer {token}"  # dropped on redirects to another host
        self.client = self.http.Client(headers=headers, follow_redirects=True, max_redirects=MAX_REDIRECTS,
                                       trust_env=True)
        try:
            return work()
        finally:
            self.client.close()

    def left(self) -> float:
        """Seconds left before the deadline; raises once it has passed or the exchange was cancelled."""
        if self.cancelled.is_set():
            raise _Cancelled()
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.expired()
        return left

    def expired(self) -> HubError:
        return HubError(_message(self.label, f"no complete answer from {self.endpoint} in time: the whole "
                                             f"exchange may take {TIMEOUT_ENV}={self.seconds:g} s; a slow "
                                             "network can raise it"))

    def url(self, repo_id: str, revision: str, file: str) -> str:
        return f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(file)}"

    @contextmanager
    def get(self, url: str, per_request_s: float, headers: dict[str, str] | None = None) -> Iterator[Any]:
        """A streamed GET whose every wait (connect, each read) ends by the deadline."""
        seconds = min(float(per_request_s), self.left())
        with self.client.stream("GET", url, headers=headers, timeout=self.http.Timeout(seconds)) as response:
            yield response

    def body(self, response: Any, cap: int, too_big: Callable[[], FitplanError]) -> bytes:
        """The raw body, read chunk by chunk against `cap` bytes and the deadline."""
        self.check_encoding(response)
        length = response.headers.get("Content-Length", "").strip()
        if length.isdigit() and int(length) > cap:
            raise too_big()
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if len(body) > cap:
                raise too_big()
            self.left()
        return bytes(body)

    def check_encoding(self, response: Any) -> None:
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
        if encoding != "identity":
            reason = (f"{_short(str(response.url))} came with Content-Encoding {_short(encoding)}, which fitplan "
                      "did not ask for")
            raise HubError(_message(self.label, reason))

    def reserve(self, count: int, where: str) -> None:
        """Count `count` more header bytes against MAX_TOTAL_HEADER_BYTES."""
        with self._lock:
            self._header_bytes += count
            if self._header_bytes > MAX_TOTAL_HEADER_BYTES:
                raise ModelFileError(f"{where}: the safetensors headers add up to more than the "
                                     f"{MAX_TOTAL_HEADER_BYTES} bytes fitplan reads")

    def transport_error(self, exc: BaseException) -> HubError:
        """One line for an HTTP client exception (timeouts, refused connections, broken answers)."""
        if isinstance(exc, self.http.TimeoutException):
            if self.end - time.monotonic() <= 0.05:
                return self.expired()
            return HubError(_message(self.label, f"no answer from {self.endpoint} in time; a slow network can "
                                                 "raise HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT"))
        if isinstance(exc, self.http.TooManyRedirects):
            return HubError(_message(self.label, f"{self.endpoint} redirected more than {MAX_REDIRECTS} times"))
        if isinstance(exc, getattr(self.http, "ProtocolError", ())):
            return HubError(_message(self.label, f"{self.endpoint} sent a broken HTTP answer: {_one_line(exc)}"))
        return HubError(_message(self.label, f"cannot reach {self.endpoint}: {_one_line(exc)}"))

    def errors(self) -> tuple[type[BaseException], ...]:
        return (self.http.HTTPError, self.http.InvalidURL)


def _http_module() -> Any:
    """The HTTP client huggingface_hub depends on: httpx2 in huggingface_hub 2.x, httpx in 1.x."""
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _online(ex: _Exchange, repo_id: str, revision: str | None, label: str) -> tuple[ModelSpec, Headers]:
    """config.json at `revision` (its answer names the commit), then that commit's headers; cached after."""
    from huggingface_hub import constants

    unreachable: tuple[type[BaseException], ...] = (_HubDown, *ex.errors())
    try:
        with ex.get(ex.url(repo_id, revision or "main", "config.json"), constants.HF_HUB_ETAG_TIMEOUT) as response:
            if response.status_code in _HUB_DOWN:
                raise _HubDown(response.status_code)
            if response.status_code != 200:
                raise _status_error(response, label) or HubError(_message(
                    label, "the repository has no config.json, so it is no transformers model"))
            commit = _commit_of(response, revision, label)
            cached = _load_cached(repo_id, commit)
            if cached is None:
                config_text = _utf8(ex.body(response, MAX_CONFIG_BYTES, lambda: ModelFileError(
                    f"config.json of {repo_id}: larger than the {MAX_CONFIG_BYTES} bytes fitplan reads")),
                    f"config.json of {repo_id}")
    except unreachable as exc:
        fallback = _lookup(repo_id, revision)
        if fallback is not None:  # the hub is down or unreachable: the cached commit of this revision
            return _from_files(repo_id, *fallback, label)
        if isinstance(exc, _HubDown):
            raise HubError(_message(label, f"the hub answered HTTP {exc.status}")) from None
        raise ex.transport_error(exc) from None
    if cached is not None:
        _store_ref(repo_id, revision, commit)
        return _from_files(repo_id, *cached, label)
    spec = _config_spec(repo_id, config_text)  # an unusable config costs no header requests
    try:
        raw = _fetch_raw_headers(ex, repo_id, commit, label)
    except ex.errors() as exc:
        raise ex.transport_error(exc) from None
    headers = _parse_all(raw, repo_id, spec)  # check before caching: the cache holds only good headers
    _store(_cache_path(repo_id, commit), {"config": config_text, "files": {
        file: {"header": text, "data_bytes": size} for file, (text, size) in raw.items()}})
    _store_ref(repo_id, revision, commit)
    return spec, headers


def _commit_of(response: Any, revision: str | None, label: str) -> str:
    """The commit the hub resolved the revision to (X-Repo-Commit), refusing anything but 40 hex digits."""
    for answer in (*response.history, response):
        value = answer.headers.get("X-Repo-Commit")
        if value is not None:
            if _COMMIT.fullmatch(value.strip()):
                return value.strip()
            raise HubError(_message(label, f"the hub sent X-Repo-Commit {_short(value)!r}, not a commit hash"))
    if revision is not None and _COMMIT.fullmatch(revision):
        return revision
    raise HubError(_message(label, f"{_short(str(response.url))} came without X-Repo-Commit: is HF_ENDPOINT a "
                                   "Hugging Face hub?"))


def _status_error(response: Any, label: str) -> FitplanError | None:
    """The error for a non-2xx answer, as huggingface_hub reads the hub's X-Error-Code; None for EntryNotFound."""
    status = response.status_code
    code = response.headers.get("X-Error-Code", "")
    if code == "EntryNotFound":
        return None
    if code == "RevisionNotFound":
        return ModelNotFoundError(_message(label, "no such revision"))
    if code == "GatedRepo":
        return ModelNotFoundError(_message(label, "gated: accept its terms on the hub, then run 'hf auth login'"))
    if response.headers.get("X-Error-Message") == "Access to this resource is disabled.":
        return ModelNotFoundError(_message(label, "access to it is disabled on the hub"))
    if code == "RepoNotFound" or status == 401:
        return ModelNotFoundError(_message(label, "no such repository, or a private one: check the id or "
                                                  "run 'hf auth login'"))
    error = ModelNotFoundError if status == 404 else HubError
    return error(_message(label, f"the hub answered HTTP {status}"))


def _fetch_raw_headers(ex: _Exchange, repo_id: str, commit: str, label: str) -> RawHeaders:
    """The header of every safetensors file of one commit: the index's shards, else model.safetensors."""
    from huggingface_hub import constants

    where = f"{INDEX_FILE} of {repo_id}"
    with ex.get(ex.url(repo_id, commit, INDEX_FILE), constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
        index: bytes | None = None
        if response.status_code == 200:
            index = ex.body(response, MAX_INDEX_BYTES, lambda: ModelFileError(
                f"{where}: larger than the {MAX_INDEX_BYTES} bytes fitplan reads"))
        else:
            error = _status_error(response, label)
            if error is not None:  # None: EntryNotFound, so a single model.safetensors (or none)
                raise error
    files = _shard_names(index, where) if index is not None else [SINGLE_FILE]
    found = _each(ex, files, lambda file: _remote_header(ex, repo_id, file, commit, label))
    raw: RawHeaders = {}
    for file in files:
        header = found[file]
        if header is None and index is not None:
            raise ModelFileError(f"{where}: names shard {file!r}, which the repository lacks")
        if header is not None:
            raw[file] = header
    return raw  # empty: no safetensors (e.g. only pytorch_model.bin), so the config alone describes it


def _each(ex: _Exchange, items: list[str], fetch: Callable[[str], Any]) -> dict[str, Any]:
    """fetch(item) for every item, _WORKERS at a time; the first failure cancels the rest and is raised."""
    if len(items) == 1:
        return {items[0]: fetch(items[0])}
    results: dict[str, Any] = {}
    failures: list[BaseException] = []
    pending = iter(items)
    lock = threading.Lock()
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            with lock:
                item = next(pending, None)
            if item is None:
                return
            try:
                results[item] = fetch(item)
            except _Cancelled:
                return
            except BaseException as exc:  # noqa: BLE001 - raised in the calling thread below
                with lock:
                    failures.append(exc)
                stop.set()
                ex.cancelled.set()  # the others stop at their next chunk: this exchange is over
                return

    threads = [threading.Thread(target=work, name="fitplan-hub-shard", daemon=True)
               for _ in range(min(_WORKERS, len(items)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # each ends at its next chunk once stopped, and every wait ends by the deadline
    if failures:
        raise failures[0]
    if ex.cancelled.is_set():
        raise _Cancelled()
    return results


def _shard_names(index: bytes, where: str) -> list[str]:
    """The files an index's weight_map points at, refusing names that could leave the repository."""
    doc = strict_json(index, where)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(map(_is_shard_name, weight_map.values())):
        raise ModelFileError(f"{where}: weight_map must map tensor names to .safetensors files of the repository")
    files = sorted(set(weight_map.values()))
    if len(files) > MAX_SHARDS:
        raise ModelFileError(f"{where}: names {len(files)} safetensors files; fitplan reads at most {MAX_SHARDS}")
    return files


def _is_shard_name(name: object) -> bool:
    return (isinstance(name, str) and len(name) <= 1024 and _SHARD_NAME.fullmatch(name) is not None
            and not name.startswith("/") and ".." not in name.split("/"))


def _remote_header(ex: _Exchange, repo_id: str, file: str, commit: str, label: str) -> tuple[str, int] | None:
    """(header text, data bytes) of one hub file by two range requests; None if the file is absent."""
    url = ex.url(repo_id, commit, file)
    where = f"{file} of {repo_id}"
    first = _get_range(ex, url, 0, 8, label)
    if first is None:
        return None
    prefix, size = first
    if len(prefix) < 8:
        raise ModelFileError(f"{where}: not a safetensors file (shorter than 8 bytes)")
    (length,) = struct.unpack("<Q", prefix)
    if not 0 < length <= MAX_HEADER_BYTES or 8 + length > size:
        raise ModelFileError(
            f"{where}: safetensors header claims {length} bytes; the file holds {size} "
            f"and fitplan reads at most {MAX_HEADER_BYTES}"
        )
    ex.reserve(length, where)
    second = _get_range(ex, url, 8, length, label)
    if second is None or len(second[0]) != length:
        raise HubError(_message(label, f"the hub sent a short header for {file}"))
    try:
        return second[0].decode("utf-8"), size - 8 - length
    except UnicodeDecodeError:
        raise ModelFileError(f"{where}: safetensors header is not UTF-8 JSON") from None


def _get_range(ex: _Exchange, url: str, start: int, count: int, label: str) -> tuple[bytes, int] | None:
    """Bytes start..start+count-1 of a file and the file's full size; None if the file is absent.

    Streams the answer so that a server ignoring Range is cut off instead of sending the whole file.
    """
    from huggingface_hub import constants

    headers = {"Range": f"bytes={start}-{start + count - 1}"}
    with ex.get(url, constants.HF_HUB_DOWNLOAD_TIMEOUT, headers) as response:
        if response.status_code >= 400:
            error = _status_error(response, label)
            if error is None:
                return None  # EntryNotFound
            raise error
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if response.status_code != 206 or match is None or int(match[1]) != start:
            reason = f"{_short(url)} answered HTTP {response.status_code} without the byte range asked for"
            raise HubError(_message(label, reason))
        body = ex.body(response, count, lambda: HubError(
            _message(label, f"{_short(url)} sent more bytes than the range asked for")))
    return body, int(match[3])


# ---- config and headers -----------------------------------------------------------------------------

def _from_files(repo_id: str, config_text: str, raw: RawHeaders, label: str) -> tuple[ModelSpec, Headers]:
    spec = _config_spec(repo_id, config_text)
    return spec, _parse_all(raw, repo_id, spec)


def _config_spec(repo_id: str, text: str) -> ModelSpec:
    """read_config's checks on config.json's text, then the spec."""
    config = parse_config(text, f"config.json of {repo_id}")
    return spec_from_config(config, name=repo_id, source="hub", location=repo_id, hub_id=repo_id)


def _parse_all(raw: RawHeaders, repo_id: str, spec: ModelSpec) -> Headers:
    """Every file's header, one after the other, never more tensors than the config allows (as for a folder)."""
    limit = tensor_limit(spec)
    headers: Headers = {}
    for file, (text, data_bytes) in sorted(raw.items()):
        shard = parse_header(text.encode("utf-8"), data_bytes, f"{file} of {repo_id}",
                             max_tensors=max(0, limit - len(headers)))
        twice = next((name for name in shard if name in headers), None)
        if twice is not None:
            raise ModelFileError(f"{repo_id}: tensor {_short(twice)!r} is stored in two safetensors files")
        headers.update(shard)
    return headers


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(f"{where}: not UTF-8 JSON") from None


# ---- cache ------------------------------------------------------------------------------------------

def _repo_folder(repo_id: str) -> str:
    from huggingface_hub import constants

    return os.path.join(constants.HF_HOME, "fitplan", "models--" + repo_id.replace("/", "--"))


def _cache_path(repo_id: str, commit: str) -> str:
    """HF_HOME/fitplan/models--org--name/<commit>.json: a commit's files never change, so neither does this."""
    return os.path.join(_repo_folder(repo_id), f"{commit}.json")


def _lookup(repo_id: str, revision: str | None) -> tuple[str, RawHeaders] | None:
    """(config text, headers) cached for a revision: a commit itself, else the commit refs.json names."""
    commit = revision if revision is not None and _COMMIT.fullmatch(revision) else _read_ref(repo_id, revision)
    return None if commit is None else _load_cached(repo_id, commit)


def _read_json(path: str, cap: int) -> Any:
    try:
        with open(path, "rb") as handle:
            data = handle.read(cap + 1)
        return None if len(data) > cap else strict_json(data, path)
    except (OSError, FitplanError):
        return None


def _read_ref(repo_id: str, revision: str | None) -> str | None:
    """The commit refs.json records for a revision; else the one huggingface_hub's own cache records."""
    from huggingface_hub import constants

    name = revision or "main"
    refs = _read_json(os.path.join(_repo_folder(repo_id), "refs.json"), 2**20)
    commit = refs.get(name) if isinstance(refs, dict) else None
    if commit is None and _REF_NAME.fullmatch(name) and ".." not in name.split("/"):  # hf_hub_download's refs
        try:
            ref = os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"), "refs", name)
            with open(ref, encoding="ascii") as handle:
                commit = handle.read(64).strip()
        except (OSError, ValueError):
            return None
    return commit if isinstance(commit, str) and _COMMIT.fullmatch(commit) else None


def _load_cached(repo_id: str, commit: str) -> tuple[str, RawHeaders] | None:
    """A commit's (config text, headers), or None when absent or not in the shape _store writes (then fetched again)."""
    from huggingface_hub import constants

    doc = _read_json(_cache_path(repo_id, commit), 2 * MAX_TOTAL_HEADER_BYTES + 2 * MAX_CONFIG_BYTES)
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        return None
    raw: RawHeaders = {}
    for file, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("header"), str)
                and type(entry.get("data_bytes")) is int):
            return None
        raw[file] = (entry["header"], entry["data_bytes"])
    config = doc.get("config")
    if not isinstance(config, str):  # written before config.json was cached here: huggingface_hub's copy
        snapshot = os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"), "snapshots",
                                commit, "config.json")
        try:
            with open(snapshot, "rb") as handle:
                data = handle.read(MAX_CONFIG_BYTES + 1)
            config = data.decode("utf-8") if len(data) <= MAX_CONFIG_BYTES else None
        except (OSError, UnicodeDecodeError):
            config = None
    return None if config is None else (config, raw)


def _store_ref(repo_id: str, revision: str | None, commit: str) -> None:
    name = revision or "main"
    if name == commit:
        return
    path = os.path.join(_repo_folder(repo_id), "refs.json")
    refs = _read_json(path, 2**20)
    refs = refs if isinstance(refs, dict) else {}
    if refs.get(name) != commit:
        _store(path, {**refs, name: commit})


def _store(path: str, doc: object) -> None:
    """Write a cache file atomically, so a concurrent reader never sees half of it."""
    from fitplan.atomic_file import write_atomic

    try:
        write_atomic(path, json.dumps(doc))
    except OSError:
        pass  # a read-only cache only costs the next call its requests


# ---- messages ---------------------------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def _short(text: str, limit: int = 120) -> str:
    from fitplan.user_files import printable

    text = printable(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _message(label: str, reason: str) -> str:
    return f"cannot fetch {label!r} from the hub ({' '.join(reason.split())}): {_INSTEAD}"
