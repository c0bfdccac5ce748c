"""Hardware what-if: 2025-26 profiles, backends, profile files with several (and unequal) GPUs, the
split over unequal cards, unified memory, `advise --compare` and `fitplan hardware --for`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_bad_input import ENV, assert_ok, assert_user_error

from fitplan.advisor.models.catalog import catalog_spec
from fitplan.advisor.planner.solver import Request, advise
from fitplan.errors import ProfileError
from fitplan.profiles.named import load_profile, profile_names
from fitplan.strategies.runtimes.llamacpp.cost import layer_counts
from fitplan.strategies.runtimes.llamacpp.session import llama_kwargs
from fitplan.strategies.speed_terms import terms_for

GIB = 2**30
CPU_AND_RAM = '[cpu]\nname = "host"\ncores = 8\nthreads = 16\n[ram]\ntotal_bytes = 68719476736\n'
# an RTX 3090 and an RTX 3060 in one box (a common build): figures of the shipped profiles' cards
MIXED = ('name = "box-3090-3060"\n'
         '[[gpu]]\nname = "NVIDIA GeForce RTX 3090"\nmemory_bytes = 25769803776\nmemory_bandwidth_GB_per_s = 936.2\n'
         'fp16_tflops = 71.0\ncompute_capability = "8.6"\n'
         '[[gpu]]\nname = "NVIDIA GeForce RTX 3060"\nmemory_bytes = 12884901888\nmemory_bandwidth_GB_per_s = 360.0\n'
         'fp16_tflops = 25.5\ncompute_capability = "8.6"\n' + CPU_AND_RAM)


def run_fitplan(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fitplan.advisor.cli.commands", *map(str, args)],
                          capture_output=True, text=True, env=ENV, cwd=cwd, timeout=120)


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    path = tmp_path / "box.toml"
    path.write_text(MIXED)
    return path


# ---------------------------------------------------------------------------------------------
# profiles

NEW_PROFILES = ("rtx-5060ti-16gb", "rtx-5070-12gb", "rtx-5070ti-16gb", "rtx-5080-16gb", "rtx-pro-6000-96gb",
                "b200-180gb", "mi300x-192gb", "rx-7900xtx-24gb", "rx-9070xt-16gb", "arc-b580-12gb",
                "apple-m3-ultra-512gb", "apple-m4-pro-64gb", "apple-m4-max-128gb", "dgx-spark-128gb",
                "ryzen-ai-max-395-128gb", "jetson-agx-orin-64gb", "a10g-24gb", "l4-24gb", "a100-40gb", "h100-80gb")


def test_the_2025_26_machines_have_profiles_with_sources_and_a_backend() -> None:
    """Each machine the issue names loads, cites a source and runs its vendor's backend."""
    expected = {"nvidia": "CUDA", "amd": "ROCm", "apple": "Metal", "intel": "SYCL"}
    for name in NEW_PROFILES:
        hw = load_profile(name)
        assert hw.sources and hw.gpus, name
        assert all(g.backend == expected[g.vendor] for g in hw.gpus), name


def test_unified_profiles_keep_the_working_set_within_the_pool() -> None:
    """On unified memory, memory_bytes is the GPU's working set: never more than the RAM it comes out of."""
    unified = [load_profile(n) for n in profile_names() if load_profile(n).unified]
    assert {"apple-m3-ultra-512gb", "dgx-spark-128gb", "ryzen-ai-max-395-128gb"} <= {h.name for h in unified}
    for hw in unified:
        assert sum(g.memory_bytes for g in hw.gpus) <= hw.ram_bytes, hw.name


def test_a_price_is_dated_and_sourced(tmp_path: Path) -> None:
    """A profile's price_usd needs price_date and price_source; the shipped ones that have one do."""
    assert load_profile("dgx-spark-128gb").price_usd == 3999 and load_profile("dgx-spark-128gb").price_date
    path = tmp_path / "priced.toml"
    path.write_text('name = "x"\nprice_usd = 999\n' + CPU_AND_RAM)
    with pytest.raises(ProfileError, match="price_date"):
        load_profile(str(path))


def test_a_mixed_profile_file_holds_each_card(mixed: Path) -> None:
    """`[[gpu]]` tables: one GPU each (count 1), vendor nvidia and backend CUDA by default."""
    hw = load_profile(str(mixed))
    assert [g.name for g in hw.gpus] == ["NVIDIA GeForce RTX 3090", "NVIDIA GeForce RTX 3060"]
    assert [g.memory_bytes for g in hw.gpus] == [24 * GIB, 12 * GIB]
    assert {g.vendor for g in hw.gpus} == {"nvidia"} and {g.backend for g in hw.gpus} == {"CUDA"}


def test_count_and_nx_multiply_a_file(tmp_path: Path, mixed: Path) -> None:
    """`count = 3` gives three alike cards; `2x<file>` doubles every card of the file."""
    path = tmp_path / "three.toml"
    path.write_text('name = "three"\n[[gpu]]\nname = "card"\ncount = 3\nmemory_bytes = 1000000000\n' + CPU_AND_RAM)
    assert len(load_profile(str(path)).gpus) == 3
    doubled = load_profile(f"2x{mixed}")
    assert doubled.name == "2xbox-3090-3060" and [g.memory_bytes for g in doubled.gpus] == [24 * GIB, 12 * GIB] * 2


def test_the_backend_is_named_or_follows_the_vendor(tmp_path: Path) -> None:
    """An AMD card runs ROCm unless the profile names Vulkan; HIP is ROCm; the speed terms follow it."""
    card = 'name = "AMD Radeon RX 7900 XTX"\nvendor = "amd"\nmemory_bytes = 25753026560\n'
    vulkan, hip = tmp_path / "vulkan.toml", tmp_path / "hip.toml"
    vulkan.write_text(f'name = "v"\n[gpu]\n{card}backend = "vulkan"\n' + CPU_AND_RAM)
    hip.write_text(f'name = "h"\n[gpu]\n{card}backend = "HIP"\n' + CPU_AND_RAM)
    assert load_profile(str(vulkan)).gpus[0].backend == "Vulkan"
    assert load_profile(str(hip)).gpus[0].backend == "ROCm"
    keys = {terms.key for hw in (load_profile("rx-7900xtx-24gb"), load_profile(str(vulkan)))
            if (terms := terms_for("llama.cpp", hw.gpus[0])) is not None}
    assert keys == {"llama.cpp/ROCm/*", "llama.cpp/Vulkan/*"}


BAD_GPUS = {
    "zero-memory": ('[gpu]\nname = "g"\nmemory_bytes = 0\n', ("gpu.memory_bytes",)),
    "negative-memory": ('[gpu]\nname = "g"\nmemory_bytes = -1\n', ("gpu.memory_bytes",)),
    "unknown-backend": ('[gpu]\nname = "g"\nmemory_bytes = 1000\nbackend = "glide"\n', ("gpu.backend", "glide")),
    "count-0": ('[[gpu]]\nname = "g"\nmemory_bytes = 1000\ncount = 0\n', ("gpu[0].count",)),
    "count-1000": ('[[gpu]]\nname = "g"\nmemory_bytes = 1000\ncount = 1000\n', ("gpu[0].count",)),
    "count-string": ('[[gpu]]\nname = "g"\nmemory_bytes = 1000\ncount = "two"\n', ("gpu[0].count",)),
    "mixed-not-a-table": ('gpu = [{name = "g", memory_bytes = 1000}, 5]\n', ("gpu[1]",)),
    "mixed-missing-memory": ('[[gpu]]\nname = "g"\nmemory_bytes = 1000\n[[gpu]]\nname = "h"\n', ("gpu[1].memory_bytes",)),
    "mixed-unknown-field": ('[[gpu]]\nname = "g"\nmemory_bytes = 1000\nmemroy = 5\n', ("gpu[0].memroy",)),
    "too-many-in-all": ('[[gpu]]\nname = "g"\nmemory_bytes = 1000\ncount = 40\n'
                        '[[gpu]]\nname = "h"\nmemory_bytes = 1000\ncount = 40\n', ("gpu", "64")),
}


@pytest.mark.parametrize("case", sorted(BAD_GPUS))
def test_a_bad_gpu_table_is_one_line_naming_file_and_field(tmp_path: Path, case: str) -> None:
    """Zero or negative memory, an unknown backend, a count of 0 or 1000, a malformed [[gpu]]: exit 2,
    one line that names the file and the field."""
    text, needles = BAD_GPUS[case]
    path = tmp_path / f"{case}.toml"
    path.write_text('name = "bad"\n' + text + CPU_AND_RAM)
    assert_user_error(run_fitplan("advise", "llama-3.2-1b", "--hardware", path, cwd=tmp_path), path, *needles)


def test_nx_of_a_file_beyond_64_gpus_is_refused(tmp_path: Path, mixed: Path) -> None:
    """40 x a two-card file is 80 GPUs: one line, exit 2."""
    assert_user_error(run_fitplan("advise", "llama-3.2-1b", "--hardware", f"40x{mixed}", cwd=tmp_path), "64")


# ---------------------------------------------------------------------------------------------
# placing layers over unequal cards


def test_llama_cpp_shares_follow_tensor_split() -> None:
    """llama.cpp's split (load_tensors): the slots each GPU gets from the cumulative shares; a share of 0
    leaves a card empty; equal shares where the plan gives none."""
    assert layer_counts(80, 80, (2.0, 1.0)) == [54, 27]
    assert layer_counts(80, 80, (68.0, 13.0)) == [68, 13]
    assert layer_counts(32, 32, (33.0, 0.0)) == [33, 0]
    assert layer_counts(80, 80, (1.0, 1.0)) == [41, 40]


def test_a_3090_and_a_3060_get_a_split_that_fits(mixed: Path) -> None:
    """Llama-3.1-70B Q2_K (about 26 GB) fits neither card alone: split over both, each card within its own
    memory, the faster 3090 holding most layers, and decode bound by the card holding most of its time."""
    hw = load_profile(str(mixed))
    advice = advise(catalog_spec("llama-3.1-70b"), hw, Request(weights="Q2_K", runtime="llama.cpp"))
    c = advice.chosen
    assert advice.fits and c.placement == "gpu" and c.setup.gpus == 2 and c.setup.tensor_split
    reserve = GIB
    assert c.memory["gpu0"].total <= 24 * GIB - reserve and c.memory["gpu1"].total <= 12 * GIB - reserve
    share = layer_counts(80, c.setup.gpu_layers, c.setup.tensor_split)
    assert share[0] > share[1] > 0 and sum(share) == 81  # 80 blocks and the head
    assert c.split_by == "speed" and c.speed is not None and c.speed.decode_bound_by == "gpu0"
    by_memory = [a for a in advice.alternatives if a.fmt.name == "Q2_K" and a.split_by == "memory"]
    assert by_memory and by_memory[0].timed().decode_tokens_per_s < c.timed().decode_tokens_per_s
    kwargs = llama_kwargs("m.gguf", c.setup, layers=80)
    assert kwargs["tensor_split"] == list(c.setup.tensor_split)


def test_alike_cards_keep_equal_shares() -> None:
    """Two RTX 4090s: no tensor_split in the plan (equal shares, as before), no speed split."""
    advice = advise(catalog_spec("llama-3.1-70b"), load_profile("2xrtx-4090-24gb"), Request(weights="Q4_K_M"))
    assert advice.chosen.setup.tensor_split == () and not advice.chosen.split_by


def test_the_plan_file_carries_the_split(tmp_path: Path, mixed: Path) -> None:
    """advise -o writes tensor_split; the plan file validates one share per GPU; llama-server gets the flag."""
    plan = tmp_path / "plan.json"
    assert run_fitplan("advise", "llama-3.1-70b", "--hardware", mixed, "--weights", "Q2_K", "--runtime", "llama.cpp",
                       "-o", plan, cwd=tmp_path).returncode == 0
    doc = json.loads(plan.read_text())
    assert len(doc["plan"]["tensor_split"]) == 2
    proc = run_fitplan("export", plan, "--to", "llama-server", cwd=tmp_path)
    assert proc.returncode == 0 and "--tensor-split " + ",".join(f"{v:g}" for v in doc["plan"]["tensor_split"]) in proc.stdout
    doc["plan"]["tensor_split"] = [1.0]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    assert_user_error(run_fitplan("export", bad, "--to", "llama-server", cwd=tmp_path), "tensor_split")


def test_unified_memory_counts_gpu_and_cpu_against_one_pool(tmp_path: Path) -> None:
    """Half the blocks on a unified GPU, half on the CPU: each share fits its own budget (the working set,
    the RAM), both together do not fit the one pool they come out of, and the plan says so."""
    path = tmp_path / "unified.toml"
    path.write_text('name = "u"\n[gpu]\nname = "Apple M2 Max"\nvendor = "apple"\nmemory_bytes = 8589934592\n'
                    'memory_bandwidth_GB_per_s = 400.0\nfp16_tflops = 13.6\nunified_memory = true\n'
                    '[cpu]\nname = "Apple M2 Max"\ncores = 12\nthreads = 12\n[ram]\ntotal_bytes = 8589934592\n')
    hw = load_profile(str(path))
    request = Request(weights="Q8_0", runtime="llama.cpp", reserve=0, gpu_layers=16, context=2048)
    advice = advise(catalog_spec("llama-3.1-8b"), hw, request)
    memory = advice.chosen.memory
    assert memory["gpu0"].total <= 8 * GIB and memory["cpu"].total <= 8 * GIB
    assert memory["gpu0"].total + memory["cpu"].total > 8 * GIB
    assert not advice.fits and "cpu + gpu0" in advice.chosen.reason and "unified memory" in advice.chosen.reason


# ---------------------------------------------------------------------------------------------
# advise --compare and fitplan hardware --for


def test_compare_answers_each_profile_side_by_side(tmp_path: Path, mixed: Path) -> None:
    """`--compare A,B,C --json`: {"compare": [{"hardware": NAME, ...advise document, summary}]} in the order
    given, each with format, placement, the longest context that fits, rates, headroom and what limits it."""
    doc = assert_ok(run_fitplan("advise", "llama-3.1-70b", "--compare",
                                f"rtx-5090-32gb,2xrtx-3090-24gb,apple-m3-ultra-512gb,dgx-spark-128gb,{mixed}",
                                "--json", cwd=tmp_path))
    names = [e["hardware"] for e in doc["compare"]]
    assert names == ["rtx-5090-32gb", "2xrtx-3090-24gb", "apple-m3-ultra-512gb", "dgx-spark-128gb", "box-3090-3060"]
    for e in doc["compare"]:
        s = e["summary"]
        assert e["plan"]["runtime"] and e["machine"]["name"] == e["hardware"] and s["limit"]
        if s["fits"]:
            assert s["max_context"] >= s["context"] and s["headroom_bytes"] >= 0 and s["decode_tokens_per_s"] > 0
    spark = doc["compare"][3]["summary"]
    assert spark["prefill_tokens_per_s"] is None and "GB10" in spark["notes"][0]  # no FP16 figure: not guessed
    text = run_fitplan("advise", "llama-3.1-70b", "--compare", "rtx-4090-24gb,2xrtx-4090-24gb", cwd=tmp_path)
    assert text.returncode == 0 and "2xrtx-4090-24gb" in text.stdout and "headroom" in text.stdout


@pytest.mark.parametrize("value", ["rtx-4090-24gb", "rtx-4090-24gb,rtx-4090-24gb", "rtx-4090-24gb,", "a,no-such"])
def test_a_bad_compare_list_is_one_line(tmp_path: Path, value: str) -> None:
    """One profile, a repeat, an empty name or an unknown one: exit 2, one line."""
    assert_user_error(run_fitplan("advise", "llama-3.1-8b", "--compare", value, cwd=tmp_path))


def test_compare_refuses_options_that_mean_one_machine(tmp_path: Path) -> None:
    assert_user_error(run_fitplan("advise", "llama-3.1-8b", "--compare", "rtx-4090-24gb,l4-24gb", "--hardware",
                                  "rtx-3060-12gb", cwd=tmp_path), "--compare")


def test_hardware_for_ranks_every_profile(tmp_path: Path) -> None:
    """`hardware --for qwen3-30b-a3b --min-tokens-per-s 20`: every named profile once; those that meet it
    first, smallest first; the cheapest priced one that meets it named; the ones that miss say why."""
    doc = assert_ok(run_fitplan("hardware", "--for", "qwen3-30b-a3b", "--min-tokens-per-s", "20", "--json",
                                cwd=tmp_path))
    rows = doc["profiles"]
    assert sorted(r["hardware"] for r in rows) == profile_names()
    meets = [r["meets"] for r in rows]
    assert meets == sorted(meets, reverse=True) and any(meets) and not all(meets)
    sizes = [r["size_bytes"] for r in rows if r["meets"]]
    assert sizes == sorted(sizes) and doc["smallest"] == rows[0]["hardware"]
    priced = [r for r in rows if r["meets"] and r["price_usd"]]
    assert doc["cheapest"]["price_usd"] == min(r["price_usd"] for r in priced)
    assert all(r["limit"] for r in rows if not r["meets"])
    assert all(r["decode_tokens_per_s"] >= 20 for r in rows if r["meets"])


def test_hardware_for_with_a_tight_quality_bound(tmp_path: Path) -> None:
    """--max-ppl-increase 0.01 allows Q8_0 alone: every plan that meets it is Q8_0."""
    doc = assert_ok(run_fitplan("hardware", "--for", "llama-3.1-8b", "--max-ppl-increase", "0.01", "--json",
                                cwd=tmp_path))
    assert {r["format"] for r in doc["profiles"] if r["meets"]} == {"Q8_0"}


def test_hardware_for_bad_input_is_one_line(tmp_path: Path) -> None:
    assert_user_error(run_fitplan("hardware", "--for", "no-such-model", cwd=tmp_path), "no-such-model")
    assert_user_error(run_fitplan("hardware", "--for", "llama-3.1-8b", "--min-tokens-per-s", "fast", cwd=tmp_path),
                      "--min-tokens-per-s")


# ---------------------------------------------------------------------------------------------
# serving capacity


def test_capacity_counts_the_sessions_each_context_holds(tmp_path: Path) -> None:
    """`advise llama-3.1-8b --hardware rtx-4090-24gb --batch 16 --context 8192 --json`: capacity per context
    is the most sessions whose plan fits (one more does not), the asked 16 among them at 8192, fewer at
    longer contexts; the aggregate rate grows with sessions while each session's falls."""
    from fitplan.advisor.planner.solver import fits_with

    doc = assert_ok(run_fitplan("advise", "llama-3.1-8b", "--hardware", "rtx-4090-24gb", "--batch", "16",
                                "--context", "8192", "--json", cwd=tmp_path))
    cap = doc["capacity"]
    by_context = {r["context"]: r["sessions"] for r in cap["contexts"]}
    assert by_context[8192] >= 16 and doc["plan"]["batch"] == 16
    assert list(by_context.values()) == sorted(by_context.values(), reverse=True)
    spec, hw = catalog_spec("llama-3.1-8b"), load_profile("rtx-4090-24gb")
    request = Request(batch=16, context=8192)
    chosen = advise(spec, hw, request).chosen
    for context, n in by_context.items():
        assert fits_with(spec, hw, request, chosen, context=context, batch=n)
        assert not fits_with(spec, hw, request, chosen, context=context, batch=n + 1)
    rates = [a for a in cap["aggregate"] if a["fits"]]
    assert [a["sessions"] for a in rates] == [1, 4, 16]
    assert [a["tokens_per_s"] for a in rates] == sorted(a["tokens_per_s"] for a in rates)
    assert [a["per_session_tokens_per_s"] for a in rates] == sorted((a["per_session_tokens_per_s"] for a in rates),
                                                                    reverse=True)
    assert cap["aggregate"][-1] == {"sessions": 64, "fits": False}
    vllm = cap["vllm"]
    assert all(r["sessions"] == vllm["kv_tokens"] // r["context"] for r in vllm["contexts"])
    text = run_fitplan("advise", "llama-3.1-8b", "--hardware", "rtx-4090-24gb", "--batch", "16", "--context", "8192",
                       cwd=tmp_path).stdout
    assert "serving capacity" in text and "aggregate decode" in text


def test_capacity_on_unified_memory_is_bounded_by_the_pool() -> None:
    """An M2 Ultra (144 GiB working set of 192 GiB): no vLLM pool (no vLLM on Metal), and the sessions of
    a 70B plan fit both the working set and the pool."""
    from fitplan.advisor.planner.capacity import capacity
    from fitplan.advisor.planner.solver import resized

    spec, hw = catalog_spec("llama-3.1-70b"), load_profile("apple-m2-ultra-192gb")
    request = Request()
    chosen = advise(spec, hw, request).chosen
    cap = capacity(spec, hw, request, chosen)
    assert "vllm" not in cap
    for row in cap["contexts"]:
        sized = resized(spec, hw, request, chosen, context=row["context"], batch=row["sessions"])
        assert sized.fits and sum(m.total for m in sized.memory.values()) <= hw.ram_bytes


def test_no_capacity_where_nothing_fits(tmp_path: Path) -> None:
    doc = assert_ok(run_fitplan("advise", "llama-3.1-70b", "--hardware", "rtx-3060-12gb", "--max-ram", "8GB",
                                "--json", cwd=tmp_path))
    assert not doc["fits"] and "capacity" not in doc


def test_a_spec_hashes_once_and_alike_specs_hash_alike() -> None:
    """ModelSpec caches its hash (the cost models' caches hash it on every call): equal specs still hash
    equal, and a changed field gives a spec that is neither equal nor served from the cache as the old one."""
    from dataclasses import replace

    spec = catalog_spec("llama-3.1-8b")
    twin = replace(spec)
    assert twin is not spec and twin == spec and hash(twin) == hash(spec)
    longer = replace(spec, max_context=spec.max_context * 2)
    assert longer != spec and {spec: 1, longer: 2}[longer] == 2
    assert hash(spec) == hash(tuple(getattr(spec, f) for f in spec.__dataclass_fields__))
