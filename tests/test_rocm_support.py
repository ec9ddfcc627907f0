"""Does the AMD headline plan really run? (issue 21, "Kernel paths assumed but not stated"): DeepSeek-V4-Pro has no
vLLM path on gfx942 (vLLM's own V4-Pro recipe rates MI300X/MI325X unsupported, MI355X verified), ModelOpt NVFP4
has no vLLM MoE path on any AMD GPU (rocm.py lists no modelopt quantization; petit_nvfp4 quantizes linear layers
only), MXFP4 experts on gfx942 state AITER's Triton W4A16 kernel, and the exported ROCm command sets the AITER
switch vLLM's V4 recipe sets for AMD. Sources: optimizer/solver/support.py (MODEL_GAPS, FORMAT_GAPS),
optimizer/estimate/speed.py (VLLM_ROCM_MXFP4_SRC), optimizer/export/vllm.py (ROCM_V4_ENV)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from optimizer.catalog.models import resolve_model
from optimizer.cli import app
from optimizer.export import ExportError
from optimizer.solver.candidates import enumerate_candidates
from optimizer.solver.query import Query
from optimizer.solver.support import format_unsupported, unsupported

runner = CliRunner()


def test_v4_pro_has_no_vllm_path_on_gfx942_but_flash_and_gfx950_do():
    for key in ("deepseek-v4-pro", "deepseek-v4-pro-base", "deepseek-v4-pro-nvfp4"):
        pro = resolve_model(key).spec
        why = unsupported("vllm", pro, "gfx942")
        assert why and "DeepSeek-V4-Pro" in why and "0159550e68b545023a2d1c1bf59fc5088f9d6e89" in why, key
        assert unsupported("vllm", pro, "gfx950") is None, key    # the recipe verifies MI355X
        assert unsupported("vllm", pro, "sm90") is None, key
    flash = resolve_model("deepseek-v4-flash").spec
    assert unsupported("vllm", flash, "gfx942") is None         # recipes PR #830: V4-Flash verified on MI300X


def test_no_vllm_candidate_for_v4_pro_on_mi300x():
    m = resolve_model("deepseek-v4-pro")
    q = Query(model="deepseek-v4-pro", context=393216, gpus=["mi300x"], engines=["vllm"])
    assert not [c for c in enumerate_candidates(q, m) if c.engine == "vllm"]


def test_cheapest_headline_is_not_vllm_v4_pro_on_mi300x(tmp_path):
    out = tmp_path / "plan.json"
    r = runner.invoke(app, ["cheapest", "deepseek-v4-pro", "--context", "384K", "--tok-s", "20", "--out", str(out)])
    assert r.exit_code == 0, r.output
    plan = json.loads(out.read_text())
    acc = plan["hardware"]["accelerator"]
    assert not (plan["engine"] == "vllm" and acc.startswith(("mi300x", "mi325x"))), (plan["engine"], acc)
    # nor among the printed alternatives
    for line in r.output.splitlines():
        if "│ vllm" in line:
            assert "mi300x" not in line and "mi325x" not in line, line
            assert "nvfp4" not in line or "mi3" not in line, line


def test_estimate_warns_for_vllm_v4_pro_on_mi300x():
    r = runner.invoke(app, ["estimate", "deepseek-v4-pro", "--gpu", "mi300x", "--gpus", "8", "--engine", "vllm",
                            "--context", "384K"])
    assert "WARNING: vllm does not run DeepSeek-V4-Pro on gfx942" in " ".join(r.output.split())


def test_export_refuses_vllm_v4_pro_on_mi300x_and_sets_aiter_on_mi355x(tmp_path):
    out = tmp_path / "plan.json"
    r = runner.invoke(app, ["cheapest", "deepseek-v4-pro", "--context", "384K", "--tok-s", "20", "--gpus", "mi355x",
                            "--engine", "vllm", "--out", str(out)])
    assert r.exit_code == 0, r.output
    plan = json.loads(out.read_text())
    assert plan["engine"] == "vllm" and plan["hardware"]["accelerator"] == "mi355x"
    r = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    script = (tmp_path / "exp" / "launch-node0.sh").read_text()
    assert "export VLLM_ROCM_USE_AITER=1" in script and "vllm serve deepseek-ai/DeepSeek-V4-Pro" in script
    # a ROCm build reports '0.33.0+rocm...': the version check compares the release part and names the ROCm build
    assert 'vllm.__version__.split("+")[0]' in script and "ROCm build" in script and "pip install vllm" not in script
    bad = tmp_path / "bad.json"
    bad.write_text(out.read_text().replace('"mi355x', '"mi300x'))
    r = runner.invoke(app, ["export", str(bad), "--out", str(tmp_path / "bad")])
    assert r.exit_code != 0 and isinstance(r.exception, ExportError)   # the console script prints `error:`, exit 2
    assert "DeepSeek-V4-Pro on gfx942" in str(r.exception)
    assert not (tmp_path / "bad" / "launch-node0.sh").exists()


def exported_script(tmp_path, model: str, context: str, gpu: str, engine: str) -> str:
    """The head node's launch script of `cheapest MODEL --context C --tok-s 20 --gpus G --engine E`'s plan."""
    out = tmp_path / "plan.json"
    r = runner.invoke(app, ["cheapest", model, "--context", context, "--tok-s", "20", "--gpus", gpu,
                            "--engine", engine, "--out", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(out), "--out", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    return (tmp_path / "exp" / "launch-node0.sh").read_text()


def test_nvidia_v4_plan_gets_no_rocm_env(tmp_path):
    script = exported_script(tmp_path, "deepseek-v4-flash", "32K", "h200-sxm", "vllm")
    assert "VLLM_ROCM_USE_AITER" not in script and "pip install vllm==" in script and "ROCm" not in script


def test_nvfp4_has_no_vllm_moe_path_on_amd():
    for arch in ("gfx942", "gfx950", "gfx1100"):
        why = format_unsupported("vllm", arch, {"nvfp4", "fp8-block128"})
        assert why and "petit" in why and "001eda31e3d032e9dc864e97f3630358b2ff8b5a" in why, arch
        assert format_unsupported("vllm", arch, {"mxfp4", "fp8-block128"}) is None, arch  # rocm.py lists mxfp4
    assert format_unsupported("vllm", "sm100", {"nvfp4"}) is None
    flash_nvfp4 = resolve_model("deepseek-v4-flash-nvfp4").spec
    assert unsupported("vllm", flash_nvfp4, "gfx950", {"nvfp4", "fp8-block128"})
    m = resolve_model("deepseek-v4-flash")
    q = Query(model="deepseek-v4-flash", context=32768, gpus=["mi300x", "mi355x"], engines=["vllm"])
    cands = [c for c in enumerate_candidates(q, m) if c.engine == "vllm"]
    assert cands and not [c for c in cands if c.quant == "nvfp4"]


def test_mxfp4_experts_on_gfx942_state_the_aiter_kernel_path():
    from optimizer.catalog.hardware import load_hardware
    from optimizer.estimate.speed import expert_kernel_path
    mi300x = load_hardware().accelerators["mi300x"]
    assert not mi300x.native_fp4 and mi300x.vendor == "amd"
    note = expert_kernel_path("vllm", {"mxfp4"}, mi300x.native_fp4, mi300x.bf16_flops,
                              mi300x.fp8_flops, mi300x.vendor)
    assert note is not None and "AITER" in note and "Marlin" not in note
    assert f"{mi300x.bf16_flops / 1e12:,.0f} TFLOP/s" in note      # BF16 math: W4A16, no FP4 MFMA on gfx942
    h200 = load_hardware().accelerators["h200-sxm"]
    nv = expert_kernel_path("vllm", {"mxfp4"}, h200.native_fp4, h200.bf16_flops, h200.fp8_flops, h200.vendor)
    assert nv is not None and "Marlin" in nv and "AITER" not in nv


def test_sglang_does_not_run_v4_pro_on_gfx942_either():
    """sgl-project/sglang #27890 (open) and AMD's gfx942 matrix: no SGLang V4-Pro on MI300X/MI325X; Flash and
    gfx950 are untouched, and cheapest never plans SGLang V4-Pro on gfx942."""
    pro, flash = resolve_model("deepseek-v4-pro").spec, resolve_model("deepseek-v4-flash").spec
    assert "#27890" in (unsupported("sglang", pro, "gfx942") or "")
    assert unsupported("sglang", flash, "gfx942") is None or "#27890" not in unsupported("sglang", flash, "gfx942")
    assert unsupported("sglang", pro, "gfx950") is None
    r = runner.invoke(app, ["cheapest", "deepseek-v4-pro", "--context", "384K", "--tok-s", "20", "--top", "8",
                            "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    plans = [d["plan"], *d.get("alternatives", [])]
    for p in plans:
        acc = p["hardware"]["accelerator"]
        assert not (p["engine"] in ("sglang", "vllm") and acc in ("mi300x", "mi325x")), (p["engine"], acc)


def test_sglang_plan_on_amd_names_a_rocm_build(tmp_path):
    script = exported_script(tmp_path, "deepseek-v4-pro", "384K", "mi355x", "sglang")
    assert 'sglang.__version__.split("+")[0]' in script and "ROCm build" in script
    assert "pip install sglang" not in script
