"""Accelerators added for issue 17 (H800, GH200, V100, Apple M1/M2 Ultra and M3/M4 Max configurations, RTX 4090 D,
the 48 GB modified RTX 4090, Gaudi 2, Radeon PRO W7900): schema, figures as their sources state them, `estimate`
on each, and engine support that keeps impossible plans out."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from optimizer.catalog.devices import nodes_for
from optimizer.catalog.hardware import get_accelerator, load_hardware
from optimizer.catalog.models import resolve_model
from optimizer.cli import app
from optimizer.solver.candidates import enumerate_candidates
from optimizer.solver.query import Owned, Query
from optimizer.solver.support import format_unsupported, unsupported

runner = CliRunner()

NEW = ["h800-sxm", "h800-pcie", "gh200-96gb", "gh200-144gb", "v100-sxm2-16gb", "v100-sxm2-32gb", "v100-pcie-16gb",
       "v100-pcie-32gb", "m1-ultra-64gb", "m1-ultra-128gb", "m2-ultra-64gb", "m2-ultra-128gb", "m3-max-36gb",
       "m3-max-96gb", "m3-max-48gb", "m3-max-64gb", "m3-max-128gb", "m4-max-36gb", "m4-max-48gb", "m4-max-64gb",
       "rtx-4090d", "rtx-4090-48gb", "gaudi2", "radeon-pro-w7900"]
# Same-vendor reference row for each (same runtime efficiency factors), to compare the bandwidth term against
REFERENCE = {"nvidia": "h100-sxm", "apple": "m4-max-128gb", "amd": "rx-7900-xtx", "intel": "gaudi3"}

# Figures as the sources on each row state them: (memory GB, bandwidth GB/s)
STATED = {
    "h800-sxm": (80, 3350), "gh200-96gb": (96, 4000), "gh200-144gb": (144, 4900),
    "v100-sxm2-16gb": (16, 900), "v100-sxm2-32gb": (32, 900), "v100-pcie-16gb": (16, 900), "v100-pcie-32gb": (32, 900),
    "m1-ultra-64gb": (64, 800), "m1-ultra-128gb": (128, 800), "m2-ultra-64gb": (64, 800), "m2-ultra-128gb": (128, 800),
    "m3-max-36gb": (36, 300), "m3-max-96gb": (96, 300), "m3-max-48gb": (48, 400), "m3-max-64gb": (64, 400),
    "m3-max-128gb": (128, 400), "m4-max-36gb": (36, 410), "m4-max-48gb": (48, 546), "m4-max-64gb": (64, 546),
    "rtx-4090d": (24, 1008), "rtx-4090-48gb": (48, 1008), "gaudi2": (96, 2450), "radeon-pro-w7900": (48, 864),
}


def test_new_rows_load_with_sources_and_nodes():
    hw = load_hardware()  # the pydantic schema (extra="forbid", units, source) validates every row
    for key in NEW:
        a = hw.accelerators[key]
        assert a.source.strip() and (not a.estimate or a.notes.strip()), key
        assert nodes_for(key), f"{key} has no node type (cheapest/--owned could not plan it)"


@pytest.mark.parametrize("key", sorted(STATED))
def test_stated_capacity_and_bandwidth(key):
    gb, gbs = STATED[key]
    a = get_accelerator(key)
    assert a.memory_bytes == gb * 10**9 and a.memory_bw_bytes_per_s == gbs * 10**9


def test_derived_figures():
    # RTX 4090 D: the 4090's dense BF16 (165 TFLOPS, FP32 accumulate) x 14,592 / 16,384 CUDA cores = 146.95
    assert get_accelerator("rtx-4090d").bf16_flops == pytest.approx(165e12 * 14592 / 16384, rel=0.001)
    # H800 NVLink: 400 GB/s bidirectional -> 200 GB/s per direction
    assert get_accelerator("h800-sxm").scaleup_bw_bytes_per_s == 400e9 / 2
    # 48 GB modified 4090: twice the 24 GB card's usable total (2 x 24,564 MiB)
    assert get_accelerator("rtx-4090-48gb").memory_usable_bytes == 2 * 24564 * 2**20
    # V100 32 GB usable as nvidia-smi reports it: 32,510 MiB
    assert get_accelerator("v100-sxm2-32gb").memory_usable_bytes == 32510 * 2**20


def _estimate(gpu: str) -> dict:
    r = runner.invoke(app, ["estimate", "qwen3-8b", "--gpu", gpu, "-c", "8K", "--json", "-q", "native"])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)["hardware"]


@pytest.mark.parametrize("key", NEW)
def test_estimate_on_each_new_accelerator(key):
    """`rigopt estimate` answers on each. The memory-bandwidth decode term is bytes read per token / (bandwidth x
    the vendor's efficiency): the bytes do not depend on the device, so term x bandwidth equals the same-vendor
    reference row's (hand relation: t = B / (bw * eff) -> t * bw = B / eff)."""
    a = get_accelerator(key)
    h = _estimate(key)
    assert h["accelerator"] == key and h["per_device"]["capacity_bytes"] == a.memory_usable_bytes
    ref_key = REFERENCE[a.vendor]
    ref = _estimate(ref_key)
    if a.kind == get_accelerator(ref_key).kind and h["engine"] == ref["engine"]:
        mine = h["decode"]["terms_s"]["gpu_memory"] * a.memory_bw_bytes_per_s
        theirs = ref["decode"]["terms_s"]["gpu_memory"] * get_accelerator(ref_key).memory_bw_bytes_per_s
        assert mine == pytest.approx(theirs, rel=1e-9)
    # qwen3-8b BF16 weights (16.4 GB) fit on everything but the 16 GB V100s
    assert h["per_device"]["fits"] is (a.memory_usable_bytes > 20e9)


def test_engine_support_rules():
    gqa = resolve_model("qwen3-8b").spec  # the rule takes the model's spec (family, architecture)
    assert unsupported("sglang", gqa, "sm70") and unsupported("vllm", gqa, "sm70") is None
    assert unsupported("llamacpp", gqa, "gaudi2") and unsupported("sglang", gqa, "gaudi2")
    assert unsupported("vllm", gqa, "gaudi2") is None
    assert format_unsupported("vllm", "sm70", {"bf16", "fp8-block128"})
    assert format_unsupported("vllm", "sm70", {"int4-g128", "bf16"}) is None  # GPTQ kernels run on Volta
    assert format_unsupported("vllm", "gaudi2", {"nvfp4"}) and format_unsupported("vllm", "gaudi2", {"fp8"}) is None
    assert format_unsupported("llamacpp", "sm70", {"q4_k"}) is None


def test_no_impossible_candidates_on_owned_v100_and_gaudi2():
    m = resolve_model("qwen3-8b")
    for key, n, engines, forbidden in (("v100-pcie-32gb", 1, {"vllm", "llamacpp"}, {"fp8", "nvfp4"}),
                                       ("v100-sxm2-32gb", 8, {"vllm", "llamacpp"}, {"fp8", "nvfp4"}),
                                       ("gaudi2", 8, {"vllm"}, {"nvfp4", "int4"})):
        q = Query(model="qwen3-8b", context=8192, gpus=[key], owned=Owned(accelerators={key: n}), max_nodes=1)
        cands = enumerate_candidates(q, m)
        assert cands, key
        assert {c.engine for c in cands} <= engines, key
        assert not {c.quant for c in cands if c.engine == "vllm"} & forbidden, key
