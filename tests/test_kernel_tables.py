"""Measured kernel tables (hardware/kernels/*.json, derived by bench/aic_tables.py from aiconfigurator-core 0.12.0)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tomllib
from itertools import pairwise
from pathlib import Path

import pytest
from pydantic import ValidationError

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.kernel_tables import KernelTables, available_systems, kernels_dir, load_kernel_tables, parse
from optimizer.catalog.paths import data_dir
from optimizer.errors import CatalogError
from optimizer.estimate import kernels as K

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {"h100-sxm", "h200-sxm", "b200", "b300", "gb200", "gb300", "l40s", "rtx-pro-6000", "a100-80gb-sxm"}


def _bench():
    spec = importlib.util.spec_from_file_location("aic_tables", ROOT / "bench" / "aic_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # the module imports pandas/the package only inside its functions
    return mod


# ---------------------------------------------------------------- shipped files

def test_shipped_files_validate_and_cover_the_aic_systems():
    assert set(available_systems()) == EXPECTED
    accels = load_hardware().accelerators
    for key in EXPECTED:
        t = load_kernel_tables(key)
        assert isinstance(t, KernelTables)
        assert t.system == key and key in accels
        assert t.source.package == "aiconfigurator-core" and t.source.version == "0.12.0"
        assert t.license == "Apache-2.0" and "NVIDIA CORPORATION" in t.notice
        assert t.generated_by == "bench/aic_tables.py"
        # peaks are rigopt's own (efficiency x rigopt peak reproduces the measured time)
        a = accels[key]
        assert t.peaks.bf16_flops_per_s == a.bf16_flops and t.peaks.hbm_bw_bytes_per_s == a.memory_bw_bytes_per_s
        assert t.gemm and t.decode_attention and t.context_attention and t.moe and t.allreduce


def test_shipped_files_are_compact():
    total = sum(p.stat().st_size for p in kernels_dir().glob("*.json"))
    assert total < 1.5e6, total


def test_wheel_ships_kernel_tables_where_the_loader_looks():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    force = py["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force["hardware"] == "optimizer/_data/hardware"  # the whole folder, kernels/ included
    assert kernels_dir() == data_dir("hardware") / "kernels"
    assert (ROOT / "hardware" / "kernels").is_dir()


def test_unknown_system_has_no_tables():
    assert load_kernel_tables("rtx-4090") is None
    assert K.gemm_efficiency("rtx-4090", "bf16", 64) is None
    assert K.gemm_bw_efficiency("mi300x", "bf16", 1) is None
    assert K.decode_attention_bw_efficiency("rtx-4090", 4096, 8) is None
    assert K.context_attention_efficiency("rtx-4090", 4096) is None
    assert K.moe_efficiency("rtx-4090", "bf16", 4.0) is None
    assert K.allreduce_time_s("rtx-4090", 1 << 20, 8) is None
    assert K.alltoall_time_s("rtx-4090", 1 << 20, 8) is None
    assert K.mla_decode_bw_efficiency("rtx-4090", 4096, 8) is None


def test_dtype_and_peak_missing_answer_none():
    assert K.gemm_efficiency("h100-sxm", "nvfp4", 64) is None      # Hopper: no FP4 tensor cores, no table
    assert K.gemm_efficiency("a100-80gb-sxm", "fp8", 64) is None   # Ampere: no FP8
    assert K.gemm_efficiency("b200", "fp4", 4096) is not None      # alias of nvfp4


# ---------------------------------------------------------------- schema rejects bad tables

def _raw(key: str = "h100-sxm") -> dict:
    return json.loads((kernels_dir() / f"{key}.json").read_text(encoding="utf-8"))


def test_schema_rejects_efficiency_above_range():
    raw = _raw()
    raw["gemm"][0]["flop_efficiency_median"][-1] = 1.2
    raw["gemm"][0]["flop_efficiency_p75"][-1] = 1.3
    with pytest.raises(ValidationError, match="less than or equal to 1.05"):
        KernelTables.model_validate(raw)


def test_schema_rejects_non_monotone_grid_and_extra_fields(tmp_path):
    raw = _raw()
    ms = raw["gemm"][0]["m_tokens"]
    ms[3], ms[4] = ms[4], ms[3]
    with pytest.raises(ValidationError, match="strictly increasing"):
        KernelTables.model_validate(raw)
    raw = _raw()
    raw["allreduce"][0]["rows"][0]["latency_us"][-1] = 0.001
    with pytest.raises(ValidationError, match="nondecreasing"):
        KernelTables.model_validate(raw)
    raw = _raw()
    raw["moe"][0]["speedup"] = 2
    p = tmp_path / "h100-sxm.json"
    p.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(CatalogError, match="speedup"):
        parse(p)


def test_schema_rejects_file_named_for_another_system(tmp_path):
    p = tmp_path / "h200-sxm.json"
    p.write_text(json.dumps(_raw("h100-sxm")), encoding="utf-8")
    with pytest.raises(CatalogError, match="file name"):
        parse(p)


# ---------------------------------------------------------------- interpolation (hand-computed)

def test_interp_primitives():
    assert K.interp_loglin([1, 4], [0.1, 0.3], 2) == pytest.approx(0.2)     # log2(2)/log2(4) = 1/2
    assert K.interp_loglin([1, 4], [0.1, 0.3], 0.5) == 0.1                   # clamped below
    assert K.interp_loglin([1, 4], [0.1, 0.3], 9) == 0.3                     # clamped above
    assert K.interp_loglog_time([100, 400], [2.0, 8.0], 200) == pytest.approx(4.0)
    assert K.interp_loglog_time([100, 400], [2.0, 8.0], 10) == 2.0           # latency floor
    assert K.interp_loglog_time([100, 400], [2.0, 8.0], 800) == pytest.approx(16.0)  # last bandwidth


def test_gemm_interpolation_at_and_between_grid_points():
    # hardware/kernels/h100-sxm.json, gemm vllm bf16: M=257 -> 0.476, M=512 -> 0.746 (median flop efficiency)
    assert K.gemm_efficiency("h100-sxm", "bf16", 512, backend="vllm") == pytest.approx(0.746)
    assert K.gemm_efficiency("h100-sxm", "bf16", 257, backend="vllm") == pytest.approx(0.476)
    t = math.log(362 / 257) / math.log(512 / 257)
    assert K.gemm_efficiency("h100-sxm", "bf16", 362, backend="vllm") == pytest.approx(0.476 + t * (0.746 - 0.476))
    g = next(g for g in load_kernel_tables("h100-sxm").gemm if g.backend == "vllm" and g.dtype == "bf16")
    assert K.gemm_efficiency("h100-sxm", "bf16", 0.5, backend="vllm") == g.flop_efficiency_median[0]
    assert K.gemm_efficiency("h100-sxm", "bf16", 10 ** 6, backend="vllm") == g.flop_efficiency_median[-1]


def test_decode_attention_bilinear_in_log_kv_and_log_batch():
    # h100-sxm decode_attention vllm bf16 KV: batch 32 row kv 1024 -> 0.5551, 2048 -> 0.6912;
    # batch 64 row kv 1024 -> 0.6079, 2048 -> 0.7734
    assert K.decode_attention_bw_efficiency("h100-sxm", 2048, 64, backend="vllm") == pytest.approx(0.7734)
    tk = math.log(1448 / 1024) / math.log(2)
    r32 = 0.5551 + tk * (0.6912 - 0.5551)
    r64 = 0.6079 + tk * (0.7734 - 0.6079)
    tb = math.log(45 / 32) / math.log(2)
    got = K.decode_attention_bw_efficiency("h100-sxm", 1448, 45, backend="vllm")
    assert got == pytest.approx(r32 + tb * (r64 - r32))


def test_allreduce_time_log_log_with_floor_and_bandwidth_tail():
    # h100-sxm allreduce nccl 2.27.3, 8 GPUs: 512 B -> 15.46 us, 1024 B -> 15.62 us, 536870912 B -> 2111 us
    f = lambda b: K.allreduce_time_s("h100-sxm", b, 8, impl="nccl")  # noqa: E731
    assert f(1024) == pytest.approx(15.62e-6)
    assert f(64) == pytest.approx(15.46e-6)
    t = math.log(724 / 512) / math.log(2)
    assert f(724) == pytest.approx(math.exp(math.log(15.46) + t * (math.log(15.62) - math.log(15.46))) * 1e-6)
    assert f(2 * 536870912) == pytest.approx(2 * 2111e-6)
    assert K.allreduce_time_s("h100-sxm", 1 << 20, 1) == 0.0
    assert K.allreduce_time_s("h100-sxm", 1 << 20, 16) is None  # no measurement beyond one 8-GPU node
    a4, a8 = (K.allreduce_time_s("h100-sxm", 1 << 20, n, impl="nccl") for n in (4, 8))
    tn = math.log(6 / 4) / math.log(2)
    assert K.allreduce_time_s("h100-sxm", 1 << 20, 6, impl="nccl") == pytest.approx(
        math.exp(math.log(a4) + tn * (math.log(a8) - math.log(a4))))


def test_default_backend_skips_suspect_tables():
    b200 = load_kernel_tables("b200")
    vllm_fp8b = next(g for g in b200.gemm if g.backend == "vllm" and g.dtype == "fp8_block")
    assert vllm_fp8b.suspect and vllm_fp8b.notes
    assert K.gemm_efficiency("b200", "fp8_block", 1) == K.gemm_efficiency("b200", "fp8_block", 1, backend="sglang")
    assert K.gemm_efficiency("b200", "bf16", 1) == K.gemm_efficiency("b200", "bf16", 1, backend="vllm")


# ---------------------------------------------------------------- properties of the measured data

def test_gemm_efficiency_rises_with_m_until_saturation():
    """On every shipped GEMM curve, efficiency rises strictly from one power-of-two M to the next until it
    reaches 90% of the curve's best (the tile/launch-bound regime), and saturates well below peak."""
    n = 0
    for key in EXPECTED:
        for g in load_kernel_tables(key).gemm:
            e = dict(zip(g.m_tokens, g.flop_efficiency_median, strict=True))
            top = max(g.flop_efficiency_median)
            pts = [e[m] for m in (2 ** i for i in range(16)) if m in e]
            for a, b in pairwise(pts):
                if a >= 0.9 * top:
                    break
                assert b > a, (key, g.backend, g.dtype, pts)
            assert e[1] < 0.01 and 0.15 < top <= 1.0, (key, g.backend, g.dtype)
            n += 1
    assert n >= 50


def test_decode_attention_efficiency_rises_with_batch_at_long_context():
    for key in EXPECTED:
        lo = K.decode_attention_bw_efficiency(key, 8192, 1)
        hi = K.decode_attention_bw_efficiency(key, 8192, 64)
        assert hi > lo, key


# ---------------------------------------------------------------- one GEMM row by hand

# Raw row of aiconfigurator-core 0.12.0, aiconfigurator_core/systems/data/h100_sxm/gemm/vllm/0.24.0/gemm_perf.parquet:
#   framework VLLM, version 0.24.0, device "NVIDIA H100 80GB HBM3", op_name gemm,
#   kernel_source torch.nn.functional.linear, gemm_dtype bfloat16, m 4096, n 8192, k 8192, latency 0.697748 (ms)
#   (the fp8 row of the same shape: CutlassFP8ScaledMMLinearKernel, fp8, latency 0.496116 ms)
RAW_M, RAW_N, RAW_K, RAW_LATENCY_MS = 4096, 8192, 8192, 0.697748
H100_BF16, H100_FP8, H100_HBM = 989.0e12, 1979.0e12, 3.35e12  # hardware/accelerators.yaml h100-sxm


def test_gemm_row_efficiency_by_hand():
    by_hand = 2 * RAW_M * RAW_N * RAW_K / (RAW_LATENCY_MS / 1000) / H100_BF16
    assert by_hand == pytest.approx(0.79666, abs=5e-5)  # 5.4976e11 FLOP in 0.698 ms = 787.9 TFLOP/s of 989
    bw_by_hand = (RAW_N * RAW_K * 2 + 2 * RAW_M * RAW_K + 2 * RAW_M * RAW_N) / (RAW_LATENCY_MS / 1000) / H100_HBM
    g = next(g for g in load_kernel_tables("h100-sxm").gemm if g.backend == "vllm" and g.dtype == "bf16")
    a = g.anchor
    assert (a.m_tokens, a.n, a.k, a.kernel) == (RAW_M, RAW_N, RAW_K, "torch.nn.functional.linear")
    assert a.latency_us == pytest.approx(RAW_LATENCY_MS * 1000, rel=1e-6)
    assert a.flop_efficiency == pytest.approx(by_hand, rel=5e-4)  # 4 significant digits in the file
    assert a.bw_efficiency == pytest.approx(bw_by_hand, rel=5e-4)
    # the generator's own formulas give the same numbers
    b = _bench()
    assert b.gemm_flop_efficiency(RAW_M, RAW_N, RAW_K, RAW_LATENCY_MS, H100_BF16) == pytest.approx(by_hand)
    assert b.gemm_bw_efficiency(RAW_M, RAW_N, RAW_K, RAW_LATENCY_MS, 2.0, H100_HBM) == pytest.approx(bw_by_hand)
    assert b.gemm_flop_efficiency(RAW_M, RAW_N, RAW_K, 0.496116, H100_FP8) == pytest.approx(0.5600, abs=1e-4)


# ---------------------------------------------------------------- the bench script reproduces the files

def _aic_python() -> str | None:
    if importlib.util.find_spec("aiconfigurator_core") is not None:
        return sys.executable
    p = os.environ.get("RIGOPT_AIC_PYTHON")
    if p and Path(p).exists():
        ok = subprocess.run([p, "-c", "import aiconfigurator_core, pandas, pyarrow, yaml"], capture_output=True)
        if ok.returncode == 0:
            return p
    return None


@pytest.mark.slow
def test_bench_script_reproduces_shipped_files_byte_for_byte(tmp_path):
    py = _aic_python()
    if py is None:
        pytest.skip("aiconfigurator-core 0.12.0 is not installed here (pip install aiconfigurator-core==0.12.0, "
                    "or set RIGOPT_AIC_PYTHON to a python that has it)")
    shipped = sorted(kernels_dir().glob("*.json"))
    date = json.loads(shipped[0].read_text(encoding="utf-8"))["date"]
    r = subprocess.run([py, str(ROOT / "bench" / "aic_tables.py"), "--out", str(tmp_path), "--date", date],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    fresh = sorted(tmp_path.glob("*.json"))
    assert [p.name for p in fresh] == [p.name for p in shipped]
    for a, b in zip(shipped, fresh, strict=True):
        assert a.read_bytes() == b.read_bytes(), f"{a.name} differs from a fresh run of bench/aic_tables.py"
