"""ModelSpecs of hub repositories that are not in the catalog: config.json plus safetensors headers.

Only headers travel: each safetensors file costs two HTTP range requests (its 8-byte length, then the
header), never its tensor data. The parsed-and-checked headers of a commit are cached under
HF_HOME/fitplan, so a repeat call (or HF_HUB_OFFLINE=1 after one online call) needs no network.
huggingface_hub is imported inside the functions only: importing it would slow every CLI start.
"""
from __future__ import annotations

import importlib
import json
import os
import re
import struct
import tempfile
from typing import Any

from fitplan.advisor.architectures import spec_from_config
from fitplan.advisor.model_files import attach_stored, read_config
from fitplan.advisor.safetensors_header import MAX_HEADER_BYTES, parse_header, strict_json
from fitplan.errors import FitplanError, HubError, ModelFileError, ModelNotFoundError
from fitplan.model_spec import ModelSpec

Headers = dict[str, tuple[str, tuple[int, ...], int]]
RawHeaders = dict[str, tuple[str, int]]  # file name -> (header JSON text, bytes of its data section)

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
MAX_INDEX_BYTES = 64 * 2**20  # the largest real indexes (hundreds of thousands of tensors) are ~10 MB
_INSTEAD = "pass a local folder with config.json, a .gguf file, or a catalog name ('fitplan models' lists them)"
_SHARD_NAME = re.compile(r"[\w.\-/]+\.safetensors")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_HUB_DOWN = (429, 500, 502, 503, 504)  # answers after which huggingface_hub falls back to its cache


def hub_spec(repo_id: str, *, revision: str | None = None) -> ModelSpec:
    """The spec of a hub repository; its stored bytes are exact where it holds safetensors files."""
    import huggingface_hub

    if int(huggingface_hub.__version__.split(".")[0]) < 1:  # the ONNX environment's transformers 4.57 pins < 1.0
        raise HubError(f"reading hub models needs huggingface_hub >= 1.0; this environment has "
                       f"{huggingface_hub.__version__}: run advise from fitplan's main environment")
    from huggingface_hub import constants
    from huggingface_hub.errors import HFValidationError

    label = repo_id if revision is None else f"{repo_id}@{revision}"
    offline = constants.is_offline_mode()
    try:
        config_path = _config_path(repo_id, revision, offline)
        if config_path is None:
            raise HubError(_message(label, "the repository has no config.json, so it is no transformers model"))
        spec = spec_from_config(read_config(config_path), name=repo_id, source="hub", location=repo_id,
                                hub_id=repo_id)
        commit = os.path.basename(os.path.dirname(config_path))  # the cache keeps snapshots/<commit>/config.json
        cache = _cache_path(repo_id, commit)
        raw = _load_cached(cache)
        if raw is None:
            if offline:
                raise HubError(_message(label, "offline: HF_HUB_OFFLINE=1; its safetensors headers are not cached"))
            raw = _fetch_raw_headers(repo_id, commit, label)
            headers = _parse_all(raw, repo_id)  # check before caching: the cache holds only good headers
            _store(cache, raw)
        else:
            headers = _parse_all(raw, repo_id)
    except FitplanError:
        raise
    except (OSError, HFValidationError, *_transport_errors()) as exc:
        raise _translate(exc, label) from None
    return attach_stored(spec, headers, repo_id)


def _config_path(repo_id: str, revision: str | None, offline: bool) -> str | None:
    """config.json through the HF cache; None if the repository has none.

    One HEAD without retries comes first: were the hub unreachable, hf_hub_download would retry for
    23 s (refused) to minutes (dropped packets) before falling back to the cache; this falls back at once.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    if revision is not None and _COMMIT.fullmatch(revision):
        try:
            return _download(repo_id, "config.json", revision, offline=True)  # a commit never changes
        except LocalEntryNotFoundError:
            pass
    unreachable: BaseException | None = None
    if not offline:
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, "config.json", revision=revision))
        except EntryNotFoundError:
            return None
        except HfHubHTTPError as exc:
            if getattr(exc.response, "status_code", None) not in _HUB_DOWN:
                raise  # not found, gated, unauthorized: the hub's answer, not an outage
            unreachable = exc
        except _transport_errors() as exc:
            unreachable = exc
    try:
        return _download(repo_id, "config.json", revision, offline or unreachable is not None)
    except LocalEntryNotFoundError:
        if unreachable is None:
            raise
        raise unreachable from None  # report why the hub failed, not that the cache was empty


def _download(repo_id: str, filename: str, revision: str | None, offline: bool) -> str | None:
    """A small file through the normal HF cache (re-used when the hub is unreachable); None if absent."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return hf_hub_download(repo_id, filename, revision=revision, local_files_only=offline)
    except LocalEntryNotFoundError:
        raise  # not cached and not reachable: a network failure, not a missing file
    except EntryNotFoundError:
        return None


def _fetch_raw_headers(repo_id: str, commit: str, label: str) -> RawHeaders:
    """The header of every safetensors file of one commit: the index's shards, else model.safetensors."""
    index_path = _download(repo_id, INDEX_FILE, commit, offline=False)
    files = _shard_names(index_path, f"{INDEX_FILE} of {repo_id}") if index_path else [SINGLE_FILE]
    raw: RawHeaders = {}
    for file in files:
        header = _remote_header(repo_id, file, commit, label)
        if header is None and index_path:
            raise ModelFileError(f"{INDEX_FILE} of {repo_id}: names shard {file!r}, which the repository lacks")
        if header is not None:
            raw[file] = header
    return raw  # empty: no safetensors (e.g. only pytorch_model.bin), so the config alone describes it


def _shard_names(index_path: str, where: str) -> list[str]:
    """The files an index's weight_map points at, refusing names that could leave the repository."""
    if os.path.getsize(index_path) > MAX_INDEX_BYTES:
        raise ModelFileError(f"{where}: larger than the {MAX_INDEX_BYTES} bytes fitplan reads")
    with open(index_path, "rb") as handle:
        doc = strict_json(handle.read(), where)
    weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(map(_is_shard_name, weight_map.values())):
        raise ModelFileError(f"{where}: weight_map must map tensor names to .safetensors files of the repository")
    return sorted(set(weight_map.values()))


def _is_shard_name(name: Any) -> bool:
    return (isinstance(name, str) and _SHARD_NAME.fullmatch(name) is not None
            and not name.startswith("/") and ".." not in name.split("/"))


def _remote_header(repo_id: str, file: str, commit: str, label: str) -> tuple[str, int] | None:
    """(header text, data bytes) of one hub file by two range requests; None if the file is absent."""
    from huggingface_hub import hf_hub_url

    url = hf_hub_url(repo_id, file, revision=commit)
    where = f"{file} of {repo_id}"
    first = _get_range(url, 0, 8, label)
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
    second = _get_range(url, 8, length, label)
    if second is None or len(second[0]) != length:
        raise HubError(_message(label, f"the hub sent a short header for {file}"))
    try:
        return second[0].decode("utf-8"), size - 8 - length
    except UnicodeDecodeError:
        raise ModelFileError(f"{where}: safetensors header is not UTF-8 JSON") from None


def _get_range(url: str, start: int, count: int, label: str) -> tuple[bytes, int] | None:
    """Bytes start..start+count-1 of a file and the file's full size; None if the file is absent.

    Streams the answer so that a server ignoring Range is cut off instead of sending the whole file.
    """
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    headers = {**build_hf_headers(), "Range": f"bytes={start}-{start + count - 1}", "Accept-Encoding": "identity"}
    with get_session().stream("GET", url, headers=headers, timeout=constants.HF_HUB_DOWNLOAD_TIMEOUT) as response:
        try:
            hf_raise_for_status(response)
        except EntryNotFoundError:
            return None
        match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
        if response.status_code != 206 or match is None or int(match[1]) != start:
            reason = f"{url} answered HTTP {response.status_code} without the byte range asked for"
            raise HubError(_message(label, reason))
        body = bytearray()
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > count:
                raise HubError(_message(label, f"{url} sent more bytes than the range asked for"))
    return bytes(body), int(match[3])


def _parse_all(raw: RawHeaders, repo_id: str) -> Headers:
    headers: Headers = {}
    for file, (text, data_bytes) in sorted(raw.items()):
        headers.update(parse_header(text.encode("utf-8"), data_bytes, f"{file} of {repo_id}"))
    return headers


def _cache_path(repo_id: str, commit: str) -> str:
    """HF_HOME/fitplan/models--org--name/<commit>.json: a commit's files never change, so neither does this."""
    from huggingface_hub import constants

    return os.path.join(constants.HF_HOME, "fitplan", "models--" + repo_id.replace("/", "--"), f"{commit}.json")


def _load_cached(path: str) -> RawHeaders | None:
    """The cached headers, or None when absent or not in the shape _store writes (then they are fetched again)."""
    try:
        with open(path, "rb") as handle:
            doc = strict_json(handle.read(), path)
    except (OSError, FitplanError):
        return None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict):
        return None
    raw: RawHeaders = {}
    for file, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("header"), str)
                and type(entry.get("data_bytes")) is int):
            return None
        raw[file] = (entry["header"], entry["data_bytes"])
    return raw


def _store(path: str, raw: RawHeaders) -> None:
    """Write the cache atomically (temp file + os.replace), so a concurrent reader never sees half of it."""
    doc = {"files": {file: {"header": text, "data_bytes": size} for file, (text, size) in raw.items()}}
    folder = os.path.dirname(path)
    temp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(doc, handle)
        os.replace(temp, path)
        temp = None
    except OSError:
        pass  # a read-only cache only costs the next call its range requests
    finally:
        if temp is not None and os.path.exists(temp):
            os.remove(temp)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's own exception root: httpx2 in huggingface_hub 2.x, httpx in 1.x."""
    for name in ("httpx2", "httpx"):
        try:
            return (importlib.import_module(name).HTTPError,)
        except ImportError:
            continue
    return ()


def _translate(exc: BaseException, label: str) -> FitplanError:
    """One fitplan error, with a one-line message, for whatever huggingface_hub or the network raised."""
    from huggingface_hub import constants
    from huggingface_hub import errors as hf

    chain = _chain(exc)

    def find(kind: type[BaseException]) -> Any:
        return next((e for e in chain if isinstance(e, kind)), None)

    if constants.is_offline_mode() or find(hf.OfflineModeIsEnabled):
        return HubError(_message(label, "offline: HF_HUB_OFFLINE=1"))
    if find(hf.HFValidationError):
        return ModelNotFoundError(_message(label, "not a hub id such as 'org/name'"))
    if find(hf.GatedRepoError):
        return ModelNotFoundError(_message(label, "gated: accept its terms on the hub, then run 'hf auth login'"))
    if find(hf.RepositoryNotFoundError):
        return ModelNotFoundError(_message(label, "no such repository, or a private one: check the id or "
                                                  "run 'hf auth login'"))
    if find(hf.RevisionNotFoundError):
        return ModelNotFoundError(_message(label, "no such revision"))
    http = find(hf.HfHubHTTPError)
    if http is not None and getattr(http, "response", None) is not None:
        status = http.response.status_code
        error = ModelNotFoundError if status == 404 else HubError
        return error(_message(label, f"the hub answered HTTP {status}"))
    if any("Timeout" in type(e).__name__ for e in chain):
        return HubError(_message(label, f"no answer from {constants.ENDPOINT} in time; a slow network can raise "
                                        "HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT"))
    return HubError(_message(label, f"cannot reach {constants.ENDPOINT}: {_one_line(chain[-1])}"))


def _chain(exc: BaseException) -> list[BaseException]:
    """exc and its causes, outermost first (huggingface_hub wraps network errors in cache-miss errors)."""
    out: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in out:
        out.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__


def _message(label: str, reason: str) -> str:
    return f"cannot fetch {label!r} from the hub ({' '.join(reason.split())}): {_INSTEAD}"
