"""Machine probes: one cheap real probe, the per-machine cache (atomic, corrupt-proof), robustness."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fitplan.errors import BadValueError
from fitplan.hardware_spec import HardwareSpec
from fitplan.profiles import probes
from fitplan.profiles.detect import detect
from fitplan.profiles.named import load_profile
from fitplan.profiles.probes import (
    MachineProbes,
    ProbeValue,
    cache_path,
    fingerprint,
    load_cached,
    probes_or_cached,
    run_probes,
    write_cache,
)

CHEAP = "host_copy_1thread"  # ~1 s: one numpy copy of 256 MiB, a few times


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty cache folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("FITPLAN_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def cpu_box() -> HardwareSpec:
    """A GPU-less profile: its fingerprint is a cache key, and it adds no GPU probe to the default set."""
    return load_profile("laptop-cpu-16gb")


@pytest.fixture
def cheap_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shrink the default set to one cheap probe, so cache-rebuild tests take ~1 s."""
    monkeypatch.setattr(probes, "DEFAULT_PROBES", (CHEAP,))


def test_one_cheap_probe_is_measured_and_cached() -> None:
    """A real host copy gives a positive GB/s, and load_cached reads the same figure back."""
    hw = detect()
    result = run_probes(hw, only=[CHEAP], progress=False)
    copy = result.host_copy_GB_per_s_1thread
    assert copy is not None and copy.value > 0 and copy.unit == "GB/s" and copy.seconds > 0
    assert result.errors == {} and result.total_seconds() == pytest.approx(copy.seconds)
    assert cache_path(fingerprint(hw)).is_file()
    assert load_cached(hw) == result


def test_unknown_probe_name_is_refused() -> None:
    """A typo in `only` is one line naming the probe, not a silent empty run."""
    with pytest.raises(BadValueError, match="unknown probe 'host_cpy'"):
        run_probes(detect(), only=["host_cpy"], progress=False)


_WRITER = textwrap.dedent("""
    import sys
    from fitplan.profiles.probes import MachineProbes, ProbeValue, write_cache

    disks = {f"/models/m{i}.gguf": ProbeValue(value=1 + i, unit="GB/s", seconds=0.1) for i in range(3000)}
    doc = MachineProbes(fingerprint=sys.argv[1], created_unix=0, disk_read_GB_per_s=disks)
    write_cache(doc)
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        write_cache(doc.model_copy(update={"created_unix": n}))
""")


def test_cache_write_is_atomic_under_sigkill(cpu_box: HardwareSpec, cache_dir: Path) -> None:
    """30 SIGKILLs at random points of a write loop: the cache is always whole, temp files stay bounded."""
    fp, kills, rng = fingerprint(cpu_box), 30, random.Random(3)
    for _ in range(kills):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, fp], stdout=subprocess.PIPE)
        assert writer.stdout is not None and writer.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0, 0.05))
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        cached = load_cached(cpu_box)  # the file exists since the first write finished
        assert cached is not None and len(cached.disk_read_GB_per_s) == 3000
    temps = list(cache_dir.glob(".probes-*.tmp"))
    assert len(temps) <= kills  # at most one per killed writer
    old = time.time() - 120
    for temp in temps:
        os.utime(temp, (old, old))
    write_cache(MachineProbes(fingerprint=fp, created_unix=1))
    assert list(cache_dir.glob(".probes-*.tmp")) == []  # stale ones are swept by the next writer


def _valid_json(fp: str, **changes: object) -> bytes:
    doc = MachineProbes(fingerprint=fp, created_unix=1, host_copy_GB_per_s_1thread=ProbeValue(
        value=20.0, unit="GB/s", seconds=1.0))
    return doc.model_copy(update=changes).model_dump_json().encode()


@pytest.mark.parametrize("corrupt", ["garbage", "truncated", "other fingerprint", "schema 2", "negative rate"])
def test_corrupt_cache_is_ignored_and_rebuilt(corrupt: str, cpu_box: HardwareSpec, cheap_defaults: None) -> None:
    """Garbage, a cut file, another machine's or a future schema's document: None, then rebuilt by a run."""
    fp = fingerprint(cpu_box)
    data = {
        "garbage": b"\x00\xff\xfeNOT JSON" * 100,
        "truncated": _valid_json(fp)[:-40],
        "other fingerprint": _valid_json("0123456789abcdef"),
        "schema 2": _valid_json(fp, schema_version=2),
        "negative rate": _valid_json(fp).replace(b'"value":20.0', b'"value":-20.0'),
    }[corrupt]
    path = cache_path(fp)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    assert load_cached(cpu_box) is None
    rebuilt = probes_or_cached(cpu_box, progress=False)
    assert rebuilt.host_copy_GB_per_s_1thread is not None and rebuilt.host_copy_GB_per_s_1thread.value > 0
    assert load_cached(cpu_box) == rebuilt


def _no_measuring(*args: object, **kwargs: object) -> None:
    raise AssertionError("a probe ran although the cache covered it")


def test_cached_call_measures_nothing_and_adds_only_missing_model_files(
    cpu_box: HardwareSpec, cheap_defaults: None, smollm2_gguf: str,
) -> None:
    """A second call is answered from the cache, measuring nothing; a new model file runs only its disk probe."""
    first = probes_or_cached(cpu_box, progress=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(probes, "_run_and_cache", _no_measuring)
        assert probes_or_cached(cpu_box, progress=False) == first
    with_disk = probes_or_cached(cpu_box, model_files=[smollm2_gguf], progress=False)
    assert with_disk.host_copy_GB_per_s_1thread == first.host_copy_GB_per_s_1thread  # not measured again
    disk = with_disk.disk_read_GB_per_s[os.path.abspath(smollm2_gguf)]
    assert disk.value > 0 and "posix_fadvise" in disk.note
    assert probes_or_cached(cpu_box, model_files=[smollm2_gguf], progress=False) == with_disk


def test_crash_and_hang_are_errors_and_the_rest_still_run(cpu_box: HardwareSpec) -> None:
    """An aborting and a hanging probe each leave one line in errors; the probe after them measures."""
    result = run_probes(cpu_box, only=["crash", "hang", CHEAP], timeout_s=3.0, progress=False)
    assert result.errors["crash"] == "crashed (SIGABRT)"
    assert result.errors["hang"] == "timed out after 3 s"
    assert result.host_copy_GB_per_s_1thread is not None and result.host_copy_GB_per_s_1thread.value > 0


def test_missing_file_is_an_error_not_a_crash(cpu_box: HardwareSpec, tmp_path: Path) -> None:
    """A model file that vanished gets its reason in errors, keyed by probe and path."""
    missing = str(tmp_path / "gone.gguf")
    result = run_probes(cpu_box, model_files=[missing], only=["disk"], progress=False)
    assert result.disk_read_GB_per_s == {}
    assert "FileNotFoundError" in result.errors[f"disk:{missing}"]


def test_fingerprint_is_stable_and_tells_machines_apart(cpu_box: HardwareSpec) -> None:
    """Two detections agree (free memory ignored); two named profiles differ."""
    first, second = detect(), detect()
    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(first) == fingerprint(first.model_copy(update={"ram_available_bytes": 1, "disk_free_bytes": 1}))
    assert fingerprint(load_profile("rtx-4090-24gb")) != fingerprint(load_profile("rtx-3090-24gb"))
    assert fingerprint(load_profile("rtx-4090-24gb")) != fingerprint(cpu_box)


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """FITPLAN_CACHE_DIR wins, then XDG_CACHE_HOME/fitplan."""
    assert cache_path("ab") == tmp_path / "cache" / "probes-ab.json"
    monkeypatch.delenv("FITPLAN_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path("ab") == tmp_path / "xdg" / "fitplan" / "probes-ab.json"


def test_import_is_light() -> None:
    """Importing the probes module loads no numpy, torch or rich (they load when probes run)."""
    code = "import sys, fitplan.profiles.probes; print(sorted({'numpy', 'torch', 'rich'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.slow
def test_full_default_run_gives_each_figure_or_its_reason(smollm2_gguf: str) -> None:
    """Every default probe plus a disk read gives its figure or says why not (how long it takes is
    bench/probes.py's to report: CI shares its machine)."""
    result = run_probes(detect(), model_files=[smollm2_gguf], progress=False)
    for task, field_name in probes._HOST_FIELDS.items():  # a probe that timed out on a busy machine says so
        assert getattr(result, field_name) is not None or task in result.errors, result.errors
    for task, keys in probes._MATMUL_KEYS.items():
        assert task in result.errors or set(keys) <= set(result.matmul_GFLOP_per_s) | set(result.errors), result.errors
    assert all(value.value > 0 for value in result.matmul_GFLOP_per_s.values())
    assert len(result.disk_read_GB_per_s) == 1 or f"disk:{os.path.abspath(smollm2_gguf)}" in result.errors
