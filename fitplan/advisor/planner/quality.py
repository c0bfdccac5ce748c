"""`fitplan quality`: what each GGUF format costs this model in quality, measured with llama.cpp on the
user's own file and text, and what it saves in bytes and gains in speed here.

Every format is written from the best source at hand (the reference file if one is given, else the input)
by llama.cpp's own quantizer, scored against the reference over the same tokens (strategies/runtimes/
llamacpp/kld.py), and its figures cached by the input's fingerprint, the reference, the text and the
token count: a second run answers from the cache, a run cut short keeps the formats it finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fitplan.errors import BadValueError, ModelFileError, ModelNotFoundError, RuntimeMissingError
from fitplan.strategies.runtimes.llamacpp import kld  # stdlib-only at import: numpy and llama_cpp load when run

if TYPE_CHECKING:
    import numpy as np

    from fitplan.model_spec import ModelSpec

SCHEMA = 1
DEFAULT_FORMATS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
DEFAULT_TOKENS = 2048
MAX_TOKENS = 65536
Progress = Callable[[str, int, int], None]  # (what is running, steps done, steps in all)


@dataclass
class FormatQuality:
    format: str
    kld_mean: float
    kld_p99: float
    top1_agreement: float
    ppl: float
    ppl_ratio: float
    bytes: int
    decode_tokens_per_s: float
    fallback: dict[str, int] = field(default_factory=dict)  # type -> tensors llama.cpp gave it in place of the format's
    measured_unix: float = 0.0
    cached: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QualityReport:
    reference: dict[str, Any]
    formats: list[FormatQuality]
    text: dict[str, Any]
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "formats": [f.as_dict() for f in self.formats], "text": self.text,
                "interrupted": self.interrupted, "notes": self.notes}


@dataclass(frozen=True)
class MeasuredQuality:
    """A format's measured loss as the solver weighs it: its perplexity's ratio to the reference's on the
    measured text, on the priors' scale (quality_prior.on_anchor_scale), and the KL divergence."""

    ppl_increase: float
    kld_mean: float
    source: str


def stored_quality(location: str) -> dict[str, MeasuredQuality]:
    """What `fitplan quality` measured for this GGUF file (its fingerprint), from the cache: the run that
    scored the most tokens against the file itself or another file, by format; nothing if none."""
    from fitplan.cachedir import cache_dir
    from fitplan.strategies.quality_prior import on_anchor_scale
    from fitplan.user_files import weights_fingerprint

    folder = cache_dir("quality", create=False)
    if not folder.is_dir():
        return {}
    fingerprint = weights_fingerprint(location)
    best: dict[str, Any] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            key, ref, rows = data["key"], data["reference"], data["formats"]
            if key.get("input") != fingerprint or key.get("schema") != SCHEMA or not rows:
                continue
            tokens = int(ref["tokens_scored"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a corrupt or foreign file is no measurement
        if tokens > best.get("tokens", 0):
            best = {"tokens": tokens, "reference": ref, "rows": rows}
    if not best:
        return {}
    ref = best["reference"]
    out = {}
    for name, row in best["rows"].items():
        try:
            ppl, ref_ppl = float(row["ppl"]), float(ref["ppl"])
            out[name] = MeasuredQuality(on_anchor_scale(ppl, ref_ppl), float(row["kld_mean"]),
                                        f"measured: KLD {float(row['kld_mean']):.4f} mean, {float(row['kld_p99']):.4f} p99, "
                                        f"perplexity {ppl:.3f} against {ref_ppl:.3f} ({ref.get('format')}) over "
                                        f"{best['tokens']} tokens (fitplan quality); its ratio x{ppl / ref_ppl:.4f} is weighed "
                                        "on Llama-3-8B's scale")
        except (KeyError, TypeError, ValueError):
            continue
    return out


def builtin_text() -> tuple[str, dict[str, Any]]:
    """The shipped evaluation text and its source (strategies/data/evaluation_text.toml)."""
    from importlib.resources import files

    from fitplan.datafiles import load_table

    about = load_table("fitplan.strategies.data", "evaluation_text.toml")
    text = files("fitplan.strategies.data").joinpath("evaluation_text.txt").read_text(encoding="utf-8")
    return text, {"name": "built-in", "title": about["title"], "source": about["source"], "licence": about["licence"]}


def read_text(path: str) -> tuple[str, dict[str, Any]]:
    from fitplan.user_files import open_regular

    fd = open_regular(path, "text file (--text)", BadValueError)
    try:
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(64 * 2**20 + 1)
    except OSError as exc:
        raise BadValueError(f"cannot read --text {path}: {exc.strerror or exc}") from None
    if len(raw) > 64 * 2**20:
        raise BadValueError(f"--text {path} is over 64 MiB; fitplan quality scores at most {MAX_TOKENS} tokens of it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadValueError(f"--text {path} is not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise BadValueError(f"--text {path} is empty")
    return text, {"name": path}


def measure(model: str, formats: list[str] | None = None, *, reference: str | None = None, text_file: str | None = None,
            tokens: int = DEFAULT_TOKENS, threads: int | None = None, progress: Progress | None = None,
            use_cache: bool = True) -> QualityReport:
    """Measure every format of `model` (a local GGUF) against the reference. KeyboardInterrupt stops it
    between steps and returns what finished, marked interrupted."""
    from fitplan.advisor.models.model_files import gguf_spec
    from fitplan.cachedir import cache_dir
    from fitplan.user_files import weights_fingerprint

    _need_llama_cpp()
    source = _local_gguf(model, "MODEL")
    spec = gguf_spec(source)
    if not 1 <= tokens <= MAX_TOKENS:
        raise BadValueError(f"--tokens {tokens} is out of range (1 to {MAX_TOKENS})")
    threads = threads or _physical_cores()
    text, text_info = read_text(text_file) if text_file else builtin_text()
    wanted = _formats(formats, spec.native_dtype)
    ref_file = _local_gguf(reference, "--reference") if reference and not _is_format(reference) else None
    ref_format = reference.upper() if reference and ref_file is None else None
    quantize_from = ref_file or source
    key = {"schema": SCHEMA, "input": weights_fingerprint(source), "reference": ref_format or (
        weights_fingerprint(ref_file) if ref_file else "input"), "text": hashlib.sha256(text.encode()).hexdigest(),
        "tokens": tokens, "n_ctx": kld.N_CTX, "llama_cpp": _llama_cpp_version()}
    cache = _cache_path(key)
    stored = _load(cache, key) if use_cache else {}
    work = Path(tempfile.mkdtemp(prefix=".quality-", dir=cache_dir("quality")))
    report = QualityReport(reference={}, formats=[], text={**text_info, "tokens_scored": 0, "sha256": key["text"]})
    todo = [f for f in wanted if f not in stored.get("formats", {})]
    try:
        if todo:
            ref_path = quantize_from if ref_format is None else str(work / f"reference-{ref_format}.gguf")
            if ref_format is not None:
                _step(progress, f"writing the reference {ref_format}", 0, len(todo) + 1)
                kld.quantize(quantize_from, ref_path, ref_format, threads)
            job = _Job(spec, quantize_from, ref_path, ref_file, text, tokens, threads, work, cache, key, progress)
            job.run(todo, stored)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.reference = stored.get("reference") or {}
    report.formats = [_row(stored["formats"][f], cached=f not in todo) for f in wanted if f in stored.get("formats", {})]
    report.text["tokens_scored"] = report.reference.get("tokens_scored", 0)
    report.notes = _notes(report)
    return report


@dataclass
class _Job:
    """One run: the reference scored once, then each format written, scored and cached in turn."""

    spec: ModelSpec  # the input's
    quantize_from: str
    ref_path: str
    ref_file: str | None  # the reference, where it is a file the user named (not the input, not written here)
    text: str
    tokens: int
    threads: int
    work: Path
    cache: Path
    key: dict[str, Any]
    progress: Progress | None

    def run(self, todo: list[str], stored: dict[str, Any]) -> None:
        steps = len(todo) + 1
        _step(self.progress, "scoring the reference", 0, steps)
        ref = kld.Model(self.ref_path, self.threads)
        try:
            plan = kld.chunks(ref.tokenize(self.text), self.tokens)
            rows, vocab = sum(scored for _, _, scored in plan), ref.vocab
            with kld.reference_store(self.work, rows, vocab) as store:
                base = kld.score_reference(ref, plan, store)
                stored["reference"] = self._reference(base, ref.decode_rate())
                ref.close()
                for done, fmt in enumerate(todo, 1):
                    stored.setdefault("formats", {})[fmt] = self._measure(fmt, plan, store, vocab, base, done, steps)
                    _save(self.cache, self.key, stored)
        finally:
            ref.close()
        _step(self.progress, "done", steps, steps)

    def _reference(self, base: kld.Scored, rate: float) -> dict[str, Any]:
        from fitplan.advisor.models.model_files import gguf_spec

        ref_type = gguf_spec(self.ref_path).native_dtype
        return {"file": self.ref_file or (self.ref_path if self.ref_path == self.quantize_from else None),
                "format": ref_type, "quantized": ref_type not in ("F32", "F16", "BF16"), "ppl": base.ppl,
                "bytes": os.path.getsize(self.ref_path), "decode_tokens_per_s": rate, "tokens_scored": base.tokens}

    def _measure(self, fmt: str, plan: list[Any], store: np.ndarray, vocab: int, base: kld.Scored, done: int,
                 steps: int) -> dict[str, Any]:
        from fitplan.advisor.models.model_files import gguf_spec
        target = str(self.work / f"{fmt}.gguf")
        _step(self.progress, f"{fmt}: writing", done - 1, steps)
        kld.quantize(self.quantize_from, target, fmt, self.threads)
        _step(self.progress, f"{fmt}: scoring", done - 1, steps)
        model = kld.Model(target, self.threads)
        try:
            if model.vocab != vocab:
                raise BadValueError(f"{fmt} has {model.vocab} tokens and the reference {vocab}: not the same model")
            scored = kld.score_candidate(model, plan, store)
            rate = model.decode_rate()
        finally:
            model.close()
        row = FormatQuality(fmt, scored.kld_mean, scored.kld_p99, scored.top1_agreement, scored.ppl,
                            scored.ppl / base.ppl, os.path.getsize(target), rate,
                            _fallback(self.spec, gguf_spec(target), fmt), time.time())
        os.unlink(target)
        return row.as_dict()


def _fallback(source_spec: ModelSpec, written: ModelSpec, fmt: str) -> dict[str, int]:
    """Types llama.cpp wrote in place of the format's own for rows too narrow for its blocks."""
    from fitplan.strategies.gguf_recipe import RecipeTensor, fallback_tensors

    names = set(fallback_tensors([RecipeTensor(t.name, t.shape) for t in source_spec.tensors], fmt,
                                 arch=source_spec.architecture, n_expert=source_spec.experts,
                                 n_gqa=max(1, source_spec.heads // max(1, source_spec.kv_heads)), n_layer=source_spec.layers))
    counts: dict[str, int] = {}
    for t in written.tensors:
        if t.name in names and t.dtype:
            counts[t.dtype.upper()] = counts.get(t.dtype.upper(), 0) + 1
    return counts


def _notes(report: QualityReport) -> list[str]:
    notes = []
    ref = report.reference
    if ref.get("quantized"):
        notes.append(f"the reference is itself {ref['format']}: each format is requantized from it, which compounds "
                     "loss; pass --reference with an F16/BF16 file of the model for absolute figures")
    if report.interrupted:
        notes.append("interrupted: the formats that finished are shown and cached")
    return notes


def _row(data: dict[str, Any], *, cached: bool) -> FormatQuality:
    return FormatQuality(**{**data, "cached": cached})


def _step(progress: Progress | None, what: str, done: int, steps: int) -> None:
    if progress is not None:
        progress(what, done, steps)


def _formats(formats: list[str] | None, input_type: str) -> list[str]:
    """The formats asked for (default: six from Q8_0 to Q2_K, and the input's own type requantized), each a
    file type llama.cpp's quantizer writes."""
    known = _file_types()
    wanted = list(formats) if formats else [*DEFAULT_FORMATS, input_type]
    out: list[str] = []
    for name in wanted:
        canonical = known.get(name.strip().upper())
        if canonical is None or canonical == "F32":
            names = ", ".join(v for v in known.values() if v != "F32")
            raise BadValueError(f"unknown format {name!r} (--formats); known: {names}")
        if canonical not in out:
            out.append(canonical)
    return out


def _is_format(name: str) -> bool:
    return name.strip().upper() in _file_types()


def _file_types() -> dict[str, str]:
    """llama.cpp's file type names (gguf_file_types.toml), by their upper-case spelling."""
    from fitplan.datafiles import load_table

    return {name.upper(): name for name in load_table("fitplan.strategies.data", "gguf_file_types.toml").values()}


def _local_gguf(path: str | None, what: str) -> str:
    if path is None:
        raise BadValueError(f"{what}: give a GGUF file")
    if os.path.isdir(path):
        raise BadValueError(f"{what} {path} is a folder: fitplan quality measures a GGUF file; convert the folder with "
                            "llama.cpp's convert_hf_to_gguf.py first")
    if not os.path.exists(path):
        raise ModelNotFoundError(f"{what} {path} does not exist (fitplan quality measures a local GGUF file)")
    if not path.endswith(".gguf"):
        raise ModelFileError(f"{what} {path} is not a .gguf file")
    return path


def _need_llama_cpp() -> None:
    try:
        import llama_cpp  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        raise RuntimeMissingError("fitplan quality runs llama.cpp: pip install 'fitplan[llamacpp]'") from None


def _physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def _llama_cpp_version() -> str:
    from importlib.metadata import version

    return version("llama_cpp_python")


def _cache_path(key: dict[str, Any]) -> Path:
    from fitplan.cachedir import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir("quality") / f"{digest}.json"


def _load(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    """The cached figures for `key`, or nothing: a missing, corrupt, cut-short or foreign file is ignored
    (and rewritten by the next save)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("formats"), dict):
        return {}
    try:
        for row in data["formats"].values():
            _row(row, cached=True)
    except TypeError:
        return {}
    return {"reference": data.get("reference") or {}, "formats": data["formats"]}


def _save(path: Path, key: dict[str, Any], stored: dict[str, Any]) -> None:
    from fitplan.atomic_file import write_atomic

    write_atomic(path, json.dumps({"key": key, **stored}, indent=1))
