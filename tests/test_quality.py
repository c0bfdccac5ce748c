"""`fitplan quality` on the real SmolLM2-135M GGUF: each format written by llama.cpp's own quantizer,
scored against the file over the same tokens, cached, and every bad input one line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="needs the llamacpp extra")

from fitplan.advisor.planner.quality import measure  # noqa: E402
from fitplan.strategies.runtimes.llamacpp.kld import N_CTX  # noqa: E402

FITPLAN = str(Path(sys.executable).with_name("fitplan"))
LADDER = ["Q8_0", "Q4_K_M", "Q3_K_M", "Q2_K"]
TOKENS = 255  # one chunk of 512: its second half


@pytest.fixture(scope="module")
def ladder(smollm2_gguf: str, module_cache: Path):
    """One measurement of the ladder, shared by the tests that read it."""
    return measure(smollm2_gguf, LADDER, tokens=TOKENS, threads=2)


@pytest.mark.slow
def test_kld_rises_as_the_format_loses_bits(ladder) -> None:
    """Over Q8_0, Q4_K_M, Q3_K_M and Q2_K of one model and one text, the mean KL divergence from the
    reference rises, and the files shrink."""
    rows = {f.format: f for f in ladder.formats}
    klds = [rows[f].kld_mean for f in LADDER]
    assert klds == sorted(klds) and len(set(klds)) == len(klds), klds
    assert [rows[f].bytes for f in LADDER] == sorted((rows[f].bytes for f in LADDER), reverse=True)
    assert all(0 < rows[f].top1_agreement <= 1 and rows[f].kld_p99 >= rows[f].kld_mean for f in LADDER)
    assert ladder.reference["tokens_scored"] == TOKENS == N_CTX // 2 - 1


@pytest.mark.slow
def test_the_quantized_reference_and_the_narrow_row_fallback_are_said(ladder) -> None:
    """SmolLM2 ships as Q4_1, so the reference is quantized; its 576-wide rows cannot hold K-quants'
    256-weight blocks, so llama.cpp writes those tensors in Q5_0 / Q8_0 instead."""
    assert ladder.reference["quantized"] and ladder.reference["format"] == "Q4_1"
    assert any("requantized" in note for note in ladder.notes)
    fallback = {f.format: f.fallback for f in ladder.formats}
    assert fallback["Q8_0"] == {} and set(fallback["Q4_K_M"]) <= {"Q5_0", "Q5_1", "Q8_0", "Q4_0"} and fallback["Q4_K_M"]


@pytest.mark.slow
def test_a_second_run_answers_from_the_cache_and_a_cut_cache_is_rebuilt(smollm2_gguf: str, module_cache: Path,
                                                                         ladder) -> None:
    again = measure(smollm2_gguf, LADDER, tokens=TOKENS, threads=2)
    assert all(f.cached for f in again.formats)
    assert [f.kld_mean for f in again.formats] == [f.kld_mean for f in ladder.formats]
    (cache,) = (module_cache / "quality").glob("*.json")
    cache.write_text(cache.read_text()[:100])  # cut short, as a killed writer would leave it
    rebuilt = measure(smollm2_gguf, ["Q8_0"], tokens=TOKENS, threads=2)
    assert not rebuilt.formats[0].cached and json.loads(cache.read_text())["formats"]["Q8_0"]


@pytest.mark.slow
def test_ctrl_c_keeps_the_formats_that_finished(smollm2_gguf: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path))

    def progress(what: str, done: int, steps: int) -> None:
        if what.startswith("Q4_0"):
            raise KeyboardInterrupt

    report = measure(smollm2_gguf, ["Q8_0", "Q4_0"], tokens=64, threads=2, progress=progress)
    assert report.interrupted and [f.format for f in report.formats] == ["Q8_0"]
    assert measure(smollm2_gguf, ["Q8_0"], tokens=64, threads=2).formats[0].cached


@pytest.mark.slow
def test_json_document(smollm2_gguf: str, module_cache: Path, ladder) -> None:
    run = subprocess.run([FITPLAN, "quality", smollm2_gguf, "--formats", ",".join(LADDER), "--tokens", str(TOKENS),
                          "--threads", "2", "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert {"file", "format", "ppl", "bytes", "tokens_scored"} <= set(doc["reference"])
    for row in doc["formats"]:
        assert {"format", "kld_mean", "kld_p99", "top1_agreement", "ppl", "ppl_ratio", "bytes",
                "decode_tokens_per_s"} <= set(row)
    assert [r["format"] for r in doc["formats"]] == LADDER


@pytest.mark.parametrize("args, says", [
    (["--text", "/nonexistent/words.txt"], "words.txt"),
    (["--formats", "IQ2_XXS"], "importance matrix"),
    (["--formats", "Q9_K"], "unknown format"),
    (["--reference", "/nonexistent/model-f16.gguf"], "model-f16.gguf does not exist"),
    (["--tokens", "0"], "--tokens"),
])
def test_bad_input_is_one_line_and_exit_2(smollm2_gguf: str, tmp_path: Path, args: list[str], says: str) -> None:
    run = subprocess.run([FITPLAN, "quality", smollm2_gguf, "--tokens", "32", *args], capture_output=True, text=True,
                         timeout=600, env={**os.environ, "FITPLAN_CACHE_DIR": str(tmp_path)})
    assert run.returncode == 2 and says in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_a_text_that_is_not_utf8_is_refused(smollm2_gguf: str, tmp_path: Path) -> None:
    binary = tmp_path / "words.txt"
    binary.write_bytes(b"\xff\xfe\x00abc" * 10)
    run = subprocess.run([FITPLAN, "quality", smollm2_gguf, "--text", str(binary)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "FITPLAN_CACHE_DIR": str(tmp_path)})
    assert run.returncode == 2 and "not UTF-8" in run.stderr, run.stderr


@pytest.fixture(scope="module")
def smollm2_f16(smollm2_gguf: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """SmolLM2 written as F16 by llama.cpp (from its Q4_1 file): a 16-bit GGUF to advise on."""
    from fitplan.strategies.runtimes.llamacpp.kld import quantize

    path = str(tmp_path_factory.mktemp("f16") / "smollm2-f16.gguf")
    quantize(smollm2_gguf, path, "F16", 2)
    return path


def test_a_measured_loss_worse_than_the_prior_changes_the_choice(smollm2_f16: str, tmp_path: Path, monkeypatch) -> None:
    """On a CPU the balanced answer is the fastest format within Q4_K_M's published loss. A stored
    measurement saying that format loses far more on this model moves the answer to another format, and
    the plan says its quality is measured."""
    from fitplan.advisor.models.model_files import gguf_spec
    from fitplan.advisor.planner.quality import SCHEMA, _save, stored_quality
    from fitplan.advisor.planner.solver import Request, advise
    from fitplan.profiles.named import load_profile
    from fitplan.user_files import weights_fingerprint

    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(tmp_path))
    spec, hw = gguf_spec(smollm2_f16), load_profile("laptop-cpu-16gb")
    prior = advise(spec, hw, Request()).chosen.fmt
    assert prior.family == "gguf" and prior.name != "F16" and not prior.quality_source.startswith("measured")
    row = {"format": prior.name, "kld_mean": 0.4, "kld_p99": 2.5, "top1_agreement": 0.7, "ppl": 19.0, "ppl_ratio": 1.39,
           "bytes": 1, "decode_tokens_per_s": 1.0, "fallback": {}, "measured_unix": 0.0}
    reference = {"file": smollm2_f16, "format": "F16", "quantized": False, "ppl": 13.7, "bytes": 1,
                 "decode_tokens_per_s": 1.0, "tokens_scored": 2047}
    _save(tmp_path / "quality" / "stored.json", {"schema": SCHEMA, "input": weights_fingerprint(smollm2_f16)},
          {"reference": reference, "formats": {prior.name: row}})
    measured = stored_quality(smollm2_f16)
    # weighed as a ratio on Llama-3-8B's scale (its F16 perplexity 6.23316), as the priors are
    assert measured[prior.name].ppl_increase == pytest.approx((19.0 / 13.7 - 1) * 6.23316)
    chosen = advise(spec, hw, Request(measured=measured)).chosen
    assert chosen.fmt.name != prior.name, (prior.name, chosen.fmt.name)
    print(f"prior choice {prior.name}, with the measurement {chosen.fmt.name}")
    kept = advise(spec, hw, Request(measured=measured, weights=prior.name)).chosen.fmt
    assert kept.quality_source.startswith("measured") and kept.kld_mean == 0.4
    refused = advise(spec, hw, Request(measured=measured, weights=prior.name, max_kld=0.1))
    assert not refused.fits and "KL divergence 0.4000 > --max-kld 0.1" in refused.chosen.reason


def test_probe_quality_needs_a_local_gguf() -> None:
    advise = str(Path(sys.executable).with_name("advise"))
    run = subprocess.run([advise, "llama-3.1-8b", "--hardware", "rtx-4090-24gb", "--probe-quality"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "--probe-quality measures a local GGUF file" in run.stderr, run.stderr


def test_advise_on_a_measured_file_says_its_quality_is_measured(smollm2_f16: str, tmp_path: Path) -> None:
    """A measurement in the cache (here one real run of two formats) reaches advise's plan and JSON."""
    env = {**os.environ, "FITPLAN_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([FITPLAN, "quality", smollm2_f16, "--formats", "Q4_K_M,Q5_K_S", "--tokens", "64", "--threads",
                          "2", "--json"], capture_output=True, text=True, timeout=600, env=env)
    assert run.returncode == 0, run.stderr
    advise = str(Path(sys.executable).with_name("advise"))
    doc = json.loads(subprocess.run([advise, smollm2_f16, "--hardware", "laptop-cpu-16gb", "--weights", "Q4_K_M", "--json"],
                                    capture_output=True, text=True, timeout=300, env=env).stdout)
    assert doc["quality"]["source"].startswith("measured: KLD") and doc["quality"]["kld_mean"] > 0
