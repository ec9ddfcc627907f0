"""Ollama, LM Studio and MLX (mlx-lm) as engines: memory accounting by hand, the Apple-only rule for mlx, and
exports that parse (shlex) and use only allow-listed flags / Modelfile parameters / OLLAMA_* variables.

Hand figures use qwen3-32b's config.json (models/qwen3-32b/config.json: num_hidden_layers 64,
num_key_value_heads 8, head_dim 128, hidden_size 5120, vocab_size 151936).
"""

from __future__ import annotations

import math
import shlex
import subprocess
from pathlib import Path

import pytest

from optimizer.catalog.hardware import get_accelerator
from optimizer.catalog.models import resolve_model
from optimizer.engines import LMS_VERSION, MLX_LM_VERSION, OLLAMA_VERSION
from optimizer.errors import InputError
from optimizer.estimate.deployment import Deployment, Hardware, memory_of
from optimizer.estimate.kv import kv_estimate
from optimizer.estimate.runtimes import ollama_default_num_ctx
from optimizer.estimate.schemes import get_scheme
from optimizer.export import export_plan
from optimizer.export.common import ExportError
from optimizer.export.desktop import modelfile_parameters
from optimizer.layout import Parallel
from optimizer.solver.candidates import enumerate_candidates
from optimizer.solver.query import Query
from optimizer.solver.search import cheapest
from optimizer.units import GiB, MiB

FLAGS = Path(__file__).parent / "data" / "engine_flags"
KV_ROW_F16 = 2 * 8 * 128 * 2 * 64      # K+V x kv_heads x head_dim x 2 B x 64 layers = 262,144 B per token


def allow(name: str) -> dict[str, str]:
    out = {}
    for line in (FLAGS / name).read_text().splitlines():
        if line and not line.startswith("#"):
            k, typ, *_ = line.split("\t")
            out[k] = typ
    return out


def deployment(engine: str, acc: str, quant: str, context: int, concurrency: int = 1, kv: str | None = None,
               gpus: int = 1) -> Deployment:
    m = resolve_model("qwen3-32b")
    par = Parallel() if engine == "mlx" else Parallel(tp=1, pp=gpus)
    return Deployment(model=m, quant=quant, engine=engine, hardware=Hardware(get_accelerator(acc), None, 1, gpus),
                      parallel=par, context=context, concurrency=concurrency, kv_dtype=kv)


# ------------------------------------------------------------------------------------------------ memory
def test_ollama_kv_is_num_ctx_times_parallel():
    # ollama llm/llama_server.go: llama-server gets `-c NumCtx*numParallel -np numParallel`; the cache holds
    # num_ctx x OLLAMA_NUM_PARALLEL cells of 262,144 B (f16, the OLLAMA_KV_CACHE_TYPE default)
    one = memory_of(deployment("ollama", "rtx-5090", "q4_k_m", 8192, 1))
    four = memory_of(deployment("ollama", "rtx-5090", "q4_k_m", 8192, 4))
    assert one.kv_bytes == 8192 * KV_ROW_F16 == 2 * GiB
    assert four.kv_bytes == 4 * 8192 * KV_ROW_F16 == 8 * GiB
    # q8_0 (docs/faq.mdx): 34 bytes per 32 values (GGML block) instead of 2 bytes per value
    q8 = memory_of(deployment("ollama", "rtx-5090", "q4_k_m", 8192, 2, kv="q8_0"))
    assert q8.kv_bytes == pytest.approx(2 * 8192 * (KV_ROW_F16 / 2) * 34 / 32)


def test_ollama_runtime_and_budget_by_hand():
    # compute buffer: num_batch 512 (api/types.go DefaultOptions, passed as -b/-ub) x (4 B x vocab + 64 B x
    # hidden) + the 500 MiB CUDA context estimate; budget: usable memory less llama.cpp's 1 GiB --fit margin
    mem = memory_of(deployment("ollama", "rtx-5090", "q4_k_m", 8192))
    acc = get_accelerator("rtx-5090")
    assert mem.runtime_bytes == 512 * (4 * 151936 + 64 * 5120) + 500 * MiB
    assert mem.budget_bytes == acc.memory_usable_bytes - 1024 * MiB


def test_ollama_default_num_ctx_tiers():
    # server/routes.go: >= 47 GiB -> 262144, >= 23 GiB -> 32768, else 4096; capped at the training context
    assert ollama_default_num_ctx(16 * GiB) == 4096
    assert ollama_default_num_ctx(24 * GiB) == 32768
    assert ollama_default_num_ctx(48 * GiB) == 262144
    assert ollama_default_num_ctx(80 * GiB, train_ctx=40960) == 40960
    assert ollama_default_num_ctx(24 * GiB, gpu_overhead_bytes=2 * GiB) == 4096


def test_mlx_quant_bits_per_weight():
    # mlx_lm/utils.py quantize_model: affine group 64; one fp16 scale + one fp16 bias per group -> b + 0.5
    for name, bits in (("mlx4", 4.5), ("mlx8", 8.5), ("mlx3", 3.5), ("mlx6", 6.5)):
        assert get_scheme(name).bits("dense_ffn") == bits
        assert get_scheme(name).bits("embed") == bits            # nn.quantize quantizes Embedding too
    # mixed_4_6: down_proj (1/3 of an FFN) of half the layers at 6 bits -> 5/6 x 4.5 + 1/6 x 6.5
    assert get_scheme("mlx-mixed-4-6").bits("dense_ffn") == pytest.approx(5 / 6 * 4.5 + 1 / 6 * 6.5)


def test_mlx_memory_by_hand():
    m = resolve_model("qwen3-32b")
    mem = memory_of(deployment("mlx", "m4-max-128gb", "mlx4", 1000))
    # KV: mlx_lm/models/cache.py KVCache grows in steps of 256 -> 1000 tokens hold ceil(1000/256) x 256 = 1024 rows
    assert mem.kv_bytes == 1024 * KV_ROW_F16
    # weights: every parameter at 4.5 bits except the norms (bf16) and the lookup tables
    by = m.spec.params_by_class()
    want = sum(n * (16 if c == "norms" else 64 if c == "lookup" else 4.5) / 8 for c, n in by.items() if n)
    assert mem.weights_bytes == pytest.approx(want, rel=1e-9)
    # budget: the Metal wired limit = the catalogue's memory_usable_bytes (mlx_lm/server.py wires
    # max_recommended_working_set_size); runtime: one 2048-token prefill chunk x hidden x 32 B
    assert mem.budget_bytes == get_accelerator("m4-max-128gb").memory_usable_bytes
    assert mem.runtime_bytes == 2048 * 5120 * 32
    # quantized KV (QuantizedKVCache, --kv-bits 8, group 64): 1 B + 4 B per 64 values
    kv8 = kv_estimate(m.spec, "mlx", "mlx_q8")
    assert kv8.bytes_at(1000) == pytest.approx(1024 * KV_ROW_F16 / 2 * (1 + 4 / 64))
    assert math.isclose(kv8.bytes_at(256), 256 * KV_ROW_F16 / 2 * (1 + 4 / 64))


# ------------------------------------------------------------------------------------------------ mlx only on Apple
def test_mlx_never_on_non_apple_hardware():
    for acc in ("h100-sxm", "rtx-4090", "dgx-spark", "ryzen-ai-max-395-128gb"):
        with pytest.raises(InputError, match="only on Apple silicon"):
            deployment("mlx", acc, "mlx4", 4096)
    q = Query(model="qwen3-32b", context=4096, tok_s=0, engines=["mlx"])
    cands = enumerate_candidates(q, resolve_model("qwen3-32b"))
    assert cands, "mlx has Mac candidates"
    assert {get_accelerator(c.accelerator).vendor for c in cands} == {"apple"}
    # the other engines may still run on Macs, and mlx checkpoints are refused by llama.cpp-family engines
    with pytest.raises(InputError, match="MLX checkpoint"):
        memory_of(deployment("ollama", "m4-max-128gb", "mlx4", 4096))


def test_engine_names_and_kv_dtype_rules():
    m = resolve_model("qwen3-32b")
    with pytest.raises(InputError):
        kv_estimate(m.spec, "ollama", "fp8")
    with pytest.raises(InputError):
        kv_estimate(m.spec, "vllm", "mlx_q4")
    q = Query(model="qwen3-32b", context=4096, engines=["LM-Studio", "mlx_lm", "Ollama"])
    assert q.engines == ["lmstudio", "mlx", "ollama"]


# ------------------------------------------------------------------------------------------------ exports
def _plan(engine: str, model: str = "gpt-oss-20b", **kw):
    r = cheapest(Query(model=model, engines=[engine], **{"context": 32768, "tok_s": 20, **kw}))
    assert r.plan is not None and r.plan.engine == engine
    return r.plan


def test_ollama_export_allow_listed(tmp_path):
    plan = _plan("ollama", concurrency=2)
    res = export_plan(plan, None, tmp_path, model_path="/models/m.gguf")
    ok = allow(f"ollama-{OLLAMA_VERSION}.txt")
    params = modelfile_parameters(res.file("Modelfile").content)
    assert [k for k, _ in params] == ["num_ctx", "num_batch", "num_gpu"]
    for k, v in params:
        assert f"PARAMETER {k}" in ok and ok[f"PARAMETER {k}"] == "int" and v.isdigit()
    values = dict(params)
    assert int(values["num_ctx"]) == plan.context and int(values["num_gpu"]) == 24 + 1   # gpt-oss-20b: 24 layers
    assert res.file("Modelfile").content.splitlines()[1] == "FROM /models/m.gguf"
    for c in res.commands:
        for k in c.env:
            assert f"ENV {k}" in ok, k
        argv = shlex.split(c.one_line())
        assert argv[0] == "ollama" and argv[1] in ("serve", "create", "run")
        flags = [a for a in argv[2:] if a.startswith("-")]
        assert all(f"ollama {argv[1]} {f}" in ok for f in flags), flags
    serve = next(c for c in res.commands if c.role == "serve")
    assert serve.env["OLLAMA_NUM_PARALLEL"] == "2" and serve.env["OLLAMA_KV_CACHE_TYPE"] == plan.kv_dtype
    assert res.derived["ctx_total"] == 2 * plan.context
    for f in ("serve.sh", "create.sh"):
        subprocess.run(["bash", "-n", str(tmp_path / f)], check=True)


def test_ollama_export_from_library_tag_and_refusals():
    plan = _plan("ollama", model="qwen3-32b", quants=["q4_k_m"], context=8192, tok_s=10)
    res = export_plan(plan, None, None)
    assert "FROM qwen3:32b" in res.file("Modelfile").content.splitlines()
    bad = plan.model_copy(update={"quant": "q2_k"})
    with pytest.raises(ExportError, match="--model-path"):
        export_plan(bad, None, None)
    with pytest.raises(ExportError, match="FROM line"):
        export_plan(plan, None, None, model_path="/models/x y.gguf")
    with pytest.raises(ExportError, match="OLLAMA_KV_CACHE_TYPE"):
        export_plan(plan.model_copy(update={"kv_dtype": "q5_1"}), None, None, model_path="/m.gguf")


def test_lmstudio_export_allow_listed(tmp_path):
    plan = _plan("lmstudio")
    res = export_plan(plan, None, tmp_path, model_path="openai/gpt-oss-20b")
    ok = allow(f"lms-{LMS_VERSION}.txt")
    for c in res.commands:
        argv = shlex.split(c.one_line())
        sub = "server start" if argv[1] == "server" else "load"
        rest = argv[3:] if sub == "server start" else argv[3:]
        i = 0
        while i < len(rest):
            flag = rest[i]
            assert f"lms {sub} {flag}" in ok, flag
            typ = ok[f"lms {sub} {flag}"]
            if typ == "int":
                assert rest[i + 1].isdigit()
            i += 1 if typ == "flag" else 2
    argv = res.commands[1].argv
    load = dict(zip(argv[3::2], argv[4::2], strict=False))  # a trailing bare flag has no value
    assert load["--context-length"] == str(plan.context) and load["--gpu"] == "max"
    subprocess.run(["bash", "-n", str(tmp_path / "launch.sh")], check=True)


def test_mlx_export_allow_listed(tmp_path):
    plan = _plan("mlx")
    res = export_plan(plan, None, tmp_path)
    ok = allow(f"mlx-lm-{MLX_LM_VERSION}.txt")
    argv = shlex.split(res.commands[0].one_line())
    assert argv[0] == "mlx_lm.server"
    i, seen = 1, {}
    while i < len(argv):
        assert argv[i] in ok, argv[i]
        if ok[argv[i]] == "flag":
            i += 1
            continue
        if ok[argv[i]] == "int":
            assert argv[i + 1].isdigit()
        seen[argv[i]] = argv[i + 1]
        i += 2
    assert seen["--decode-concurrency"] == str(plan.concurrency)
    assert seen["--host"] == "127.0.0.1"
    subprocess.run(["bash", "-n", str(tmp_path / "launch.sh")], check=True)


def test_mlx_quantized_kv_export(tmp_path):
    # the released mlx_lm 0.32.0 wheel's server.py has --kv-bits, --kv-group-size, --quantized-kv-start (the
    # allow-list is extracted from it); with --kv-bits the server stops batching (server.py _is_batchable:
    # `self.cli_args.kv_bits is None`), so a quantized-KV plan has one sequence
    plan = _plan("mlx", kv_dtypes=["mlx_q4"], concurrency=1)
    assert plan.kv_dtype == "mlx_q4" and plan.concurrency == 1
    res = export_plan(plan, None, tmp_path)
    ok = allow(f"mlx-lm-{MLX_LM_VERSION}.txt")
    argv = shlex.split(res.commands[0].one_line())
    flags = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert set(flags) <= set(ok)
    assert all(flags[k].isdigit() for k in flags if ok[k] == "int")
    # the plan's KV bytes (mlx_q4: 4 bits + fp16 scale and bias per 64 values) hold only if the whole cache is
    # quantized from the first token (the server's default --quantized-kv-start is 5000) in groups of 64
    assert (flags["--kv-bits"], flags["--kv-group-size"], flags["--quantized-kv-start"]) == ("4", "64", "0")
    with pytest.raises(ExportError, match="one request at a time"):
        export_plan(plan.model_copy(update={"concurrency": 2}), None, None)
    with pytest.raises(InputError, match="one request at a time"):
        deployment("mlx", "m4-max-128gb", "mlx4", 4096, concurrency=2, kv="mlx_q8")
    q8 = memory_of(deployment("mlx", "m4-max-128gb", "mlx4", 4096, concurrency=1, kv="mlx_q8"))
    bf16 = memory_of(deployment("mlx", "m4-max-128gb", "mlx4", 4096, concurrency=1))
    assert q8.kv_bytes == pytest.approx(bf16.kv_bytes * (1 + 4 / 64) / 2)


def test_mlx_plan_only_on_macs():
    plan = _plan("mlx")
    assert get_accelerator(plan.hardware.accelerator).vendor == "apple"


def test_allow_lists_extracted_names():
    # a few names checked against the pinned sources by hand: api/types.go Runner (num_ctx, num_gpu, num_batch),
    # envconfig AsMap (OLLAMA_NUM_PARALLEL, OLLAMA_KV_CACHE_TYPE), lms load.ts (--context-length, --gpu),
    # mlx_lm/server.py (--model, --prompt-cache-bytes); and names that do not exist there
    o, lm, mx = (allow(f"ollama-{OLLAMA_VERSION}.txt"), allow(f"lms-{LMS_VERSION}.txt"),
                 allow(f"mlx-lm-{MLX_LM_VERSION}.txt"))
    for k in ("PARAMETER num_ctx", "PARAMETER num_gpu", "PARAMETER num_batch", "ENV OLLAMA_NUM_PARALLEL",
              "ENV OLLAMA_KV_CACHE_TYPE", "ENV OLLAMA_FLASH_ATTENTION", "ollama create -f"):
        assert k in o
    assert "PARAMETER flash_attn" not in o and "PARAMETER kv_cache_type" not in o
    assert {"lms load --context-length", "lms load --gpu", "lms server start --port"} <= set(lm)
    assert "lms load --kv-cache-type" not in lm
    assert {"--model", "--prompt-cache-bytes", "--decode-concurrency"} <= set(mx)
    # the released wheel's server.py (not a repository commit): KV quantization yes, --max-kv-size no
    assert {"--kv-bits", "--kv-group-size", "--quantized-kv-start"} <= set(mx) and "--max-kv-size" not in mx


# ------------------------------------------------------------------------------------------------ MLX speed
def test_mlx_speed_on_held_out_rows():
    """The stored mlx factors (fitted on ml-explore's own figures) predict the other sources' MLX rows: median
    |error| below 20% for decode and prefill on the check split (it was 62% / 88% with llama.cpp's factors)."""
    from optimizer.fidelity import mlx_fit
    cs = mlx_fit.cases()
    s = mlx_fit.summary(cs)
    assert s["check decode_tok_s"]["rows"] >= 5 and s["check prefill_tok_s"]["rows"] >= 3
    assert s["check decode_tok_s"]["median_abs_error"] < 0.20
    assert s["check prefill_tok_s"]["median_abs_error"] < 0.20
    assert len({c.id for c in cs}) >= 10   # >= 10 sourced MLX figures compared


@pytest.mark.slow
def test_mlx_factors_are_a_refit():
    from optimizer.estimate import factors as F
    from optimizer.fidelity import mlx_fit
    assert F.MLX_FACTORS_FILE.read_text() == mlx_fit.stored_text(mlx_fit.fit()), \
        "mlx factors changed: run python -m optimizer.fidelity.mlx_fit --write and commit factors_mlx.yaml"


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_estimate_and_cheapest_with_desktop_engines(tmp_path):
    import json

    from typer.testing import CliRunner

    from optimizer.cli import app
    runner = CliRunner()
    for eng in ("ollama", "lmstudio", "mlx"):
        r = runner.invoke(app, ["estimate", "qwen3-32b", "--engine", eng, "--json"])
        assert r.exit_code == 0, r.output
        d = json.loads(r.output)
        assert {q["engine"] for q in d["quants"]} == {eng}
        assert d["kv"]["per_seq_bytes"] == 32768 * KV_ROW_F16    # the 32K default context, 2-byte KV
    # Ollama on a 24 GB card: notes its VRAM-tier num_ctx (32768 for >= 23 GiB) and, when the model does not fit,
    # how many layers its automatic offload keeps on the GPU
    r = runner.invoke(app, ["estimate", "qwen3-32b", "--engine", "ollama", "--gpu", "rtx-4090", "-q", "q8_0",
                            "--json"])
    notes = " ".join(json.loads(r.output)["hardware"]["notes"])
    assert "automatic num_ctx on 1x rtx-4090 is 32,768" in notes and "layers on the GPU" in notes
    # mlx on an NVIDIA GPU: one error line, exit 2
    import sys
    p = subprocess.run([sys.executable, "-m", "optimizer", "estimate", "qwen3-32b", "--engine", "mlx", "--gpu", "h100"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "only on Apple silicon" in p.stderr
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["cheapest", "gpt-oss-20b", "--context", "128K", "--tok-s", "30", "--engine", "mlx",
                            "--out", str(out), "--export", "auto"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p" / "launch.sh").exists() and "mlx_lm.server" in (tmp_path / "p" / "launch.sh").read_text()


def test_lmstudio_mlx_engine_uses_mlx_accounting():
    # LM Studio loads MLX checkpoints with its MLX engine: the same memory as mlx-lm (wired-limit budget, no fit
    # margin, 256-token KV steps, 2048-token prefill chunk); GGUF quants keep llama.cpp's accounting
    lms = memory_of(deployment("lmstudio", "m4-max-128gb", "mlx4", 1000))
    mlx = memory_of(deployment("mlx", "m4-max-128gb", "mlx4", 1000))
    assert (lms.budget_bytes, lms.kv_bytes, lms.runtime_bytes, lms.weights_bytes) == \
        (mlx.budget_bytes, mlx.kv_bytes, mlx.runtime_bytes, mlx.weights_bytes)
    gguf = memory_of(deployment("lmstudio", "m4-max-128gb", "q4_k_m", 1000))
    assert gguf.budget_bytes == get_accelerator("m4-max-128gb").memory_usable_bytes - 1024 * MiB
    assert gguf.kv_bytes == 1000 * KV_ROW_F16
    with pytest.raises(InputError, match="only on Apple silicon"):
        memory_of(deployment("lmstudio", "rtx-4090", "mlx4", 1000))
    plan = _plan("lmstudio", model="qwen3-8b", quants=["mlx4"], context=8192, tok_s=10)
    assert get_accelerator(plan.hardware.accelerator).vendor == "apple"
    res = export_plan(plan, None, None, model_path="mlx-community/Qwen3-8B-4bit")
    assert "--gpu" not in res.commands[1].argv and "--context-length" in res.commands[1].argv


def test_ollama_multi_gpu_plan_spreads_layers():
    plan = _plan("ollama", model="qwen3-32b", quants=["q4_k_m"], context=131072, tok_s=20, gpus=["rtx-5090"],
                 confidence=0)
    res = export_plan(plan, None, None)
    serve = next(c for c in res.commands if c.role == "serve")
    # 20 tok/s at 128K on 32 GB cards needs the memory of several: the plan splits the 64 layers over a multi-GPU box
    # (without --gpus one H100 NVL of a partly filled server is cheaper). Planned on the expected figure: at the
    # default confidence the consumer llama.cpp interval's low end (x0.21, 11 rows) leaves no 5090 plan at 20 tok/s
    assert plan.hardware.gpus_per_node > 1 and plan.parallel.pp == plan.hardware.gpus_per_node
    assert serve.env["OLLAMA_SCHED_SPREAD"] == "1"
    single = export_plan(_plan("ollama", model="qwen3-8b", quants=["q4_k_m"], context=8192, tok_s=10), None, None)
    assert "OLLAMA_SCHED_SPREAD" not in next(c for c in single.commands if c.role == "serve").env
    ok = allow(f"ollama-{OLLAMA_VERSION}.txt")
    assert all(f"ENV {k}" in ok for k in serve.env)


def test_ollama_single_slot_architectures():
    # server/sched.go forces num_parallel 1 for qwen35 / qwen3next / nemotron_h ... GGUFs: a plan of 2 concurrent
    # sequences on Ollama is refused for such a model, accepted for qwen3 (Qwen3ForCausalLM)
    from dataclasses import replace
    m = resolve_model("qwen3-32b")
    hybrid = replace(m, spec=replace(m.spec, architecture="Qwen3_5ForConditionalGeneration"))
    hw = Hardware(get_accelerator("h100-sxm"), None, 1, 1)
    with pytest.raises(InputError, match="qwen35 models one request at a time"):
        Deployment(model=hybrid, quant="q4_k_m", engine="ollama", hardware=hw, parallel=Parallel(), context=4096,
                   concurrency=2)
    Deployment(model=hybrid, quant="q4_k_m", engine="ollama", hardware=hw, parallel=Parallel(), context=4096)
    Deployment(model=m, quant="q4_k_m", engine="ollama", hardware=hw, parallel=Parallel(), context=4096,
               concurrency=2)
    Deployment(model=hybrid, quant="q4_k_m", engine="llamacpp", hardware=hw, parallel=Parallel(), context=4096,
               concurrency=2)


def test_desktop_exports_quote_paths(tmp_path):
    # a hostile --model-path reaches the scripts as one shell-quoted word (never expanded or split)
    nasty = "/models/a b;$(touch pwned)`x`'q"
    for engine in ("mlx", "lmstudio"):
        res = export_plan(_plan(engine), None, tmp_path / engine, model_path=nasty)
        script = (tmp_path / engine / "launch.sh").read_text()
        assert "$(touch pwned)" not in script.replace(shlex.quote(nasty), "")
        argv = shlex.split(res.commands[-1].one_line())
        assert nasty in argv
        subprocess.run(["bash", "-n", str(tmp_path / engine / "launch.sh")], check=True)


def test_mlx_with_only_non_apple_gpus_is_an_input_error():
    with pytest.raises(ValueError, match="only on Apple silicon"):
        Query(model="qwen3-32b", context=8192, engines=["mlx"], gpus=["h100", "rtx-4090"])
    assert Query(model="qwen3-32b", context=8192, engines=["mlx", "llamacpp"], gpus=["h100"]).engines


# ------------------------------------------------------------------------------------------------ -ngl split
def _split(layers: int | None, context: int = 8192):
    from dataclasses import replace

    from optimizer.catalog.devices import node_for
    m = resolve_model("qwen3-32b")
    acc = get_accelerator("rtx-4090")
    d = Deployment(model=m, quant="q8_0", engine="ollama", hardware=Hardware(acc, node_for(acc.key, 1), 1, 1),
                   parallel=Parallel(), context=context)
    return replace(d, gpu_layers=layers)


def test_gpu_layer_split_memory_by_hand():
    from optimizer.estimate.deployment import resident_weights
    _, w = resident_weights(resolve_model("qwen3-32b"), "q8_0", "ollama", include_mtp=False)
    head, embed = w.by_class["head"], w.by_class["embed"]
    mem = memory_of(_split(32))
    # llama.cpp -ngl 32 of 64: output head on the GPU, token embedding on the CPU (its input layer), half of the
    # repeating layers' weights and half of the KV (262,144 B/token x 8192) on the GPU
    assert mem.weights_bytes == pytest.approx(head + (w.total - head - embed) * 32 / 64)
    assert mem.kv_bytes == pytest.approx(8192 * KV_ROW_F16 / 2)
    with pytest.raises(InputError, match="between 0 and the model's 64"):
        _split(65)


def test_gpu_layer_split_decode_reads_host_memory():
    from optimizer.estimate.deployment import evaluate
    ev = evaluate(_split(32))
    t, links = ev.decode.terms_s, ev.links
    # the same bytes per token (weights of 32 layers + their KV) on each side: the CPU half is read at host DRAM
    # bandwidth llama.cpp achieves on the node's host (cpu_experts.host_bandwidth), the GPU half at the GPU's
    # bandwidth x its efficiency
    gpu = get_accelerator("rtx-4090")
    from optimizer.estimate.cpu_experts import host_bandwidth
    from optimizer.estimate.deployment import device_of
    ratio = ((gpu.memory_bw_bytes_per_s * device_of(gpu).bw_efficiency)
             / host_bandwidth(links.host, "llamacpp").bytes_per_s)
    assert t["cpu_layers"] / t["gpu_memory"] == pytest.approx(ratio, rel=1e-6)
    assert ev.decode.step_time_s >= t["gpu_memory"] + t["cpu_layers"]
    full = evaluate(_split(None))
    assert "cpu_layers" not in full.decode.terms_s and ev.decode.tok_s_per_seq < full.decode.tok_s_per_seq


def test_estimate_ollama_auto_offload_is_the_largest_split_that_fits():
    from optimizer.catalog.models import resolve_model as rm
    from optimizer.report.estimate import estimate
    r = estimate(rm("qwen3-32b"), context=32768, quants=["q8_0"], engine="ollama", engine_explicit=True,
                 gpu="rtx-4090")
    note = next(n for n in r.hardware.notes if "automatic offload:" in n)
    n = int(note.split("automatic offload: ")[1].split(" of ")[0])
    assert r.hardware.per_device.fits
    assert memory_of(_split(n, 32768)).fits and not memory_of(_split(n + 1, 32768)).fits


def test_hybrid_model_on_desktop_engines_uses_llamacpps_state_layout():
    """Qwen3.6-27B (Gated DeltaNet hybrid) on Ollama / LM Studio / mlx: the per-sequence recurrent state reported
    is llama.cpp's (one F32 set per slot), the layout those engines share (was an internal error)."""
    from optimizer.catalog.models import resolve_model
    from optimizer.report.estimate import estimate
    m = resolve_model("qwen3.6-27b")
    ref = estimate(m, context=131072, engine="llamacpp", engine_explicit=True).kv.recurrent_state_bytes_per_seq
    assert ref and ref > 0
    for eng, gpu in (("ollama", "rtx-5090"), ("lmstudio", "rtx-5090"), ("mlx", "m2-ultra-192gb")):
        r = estimate(m, context=131072, engine=eng, engine_explicit=True, gpu=gpu)
        assert r.kv.recurrent_state_bytes_per_seq == ref, eng
        assert r.hardware is not None and r.hardware.decode.tok_s_per_seq > 0


# ------------------------------------------------------------------------------------------------ desktop plans export
def test_dense_models_never_get_moe_mixes():
    # the `-moe` GGUF mixes keep everything but the routed experts at Q8_0: on a dense model that is Q8_0 with a
    # label no runtime can pull (issue 25: a dense 8B on a 24 GB card planned as iq2_xxs-moe)
    from optimizer.estimate.schemes import MOE_MIXES
    from optimizer.hetero.api import MIXED_QUANTS, _quality_order
    from optimizer.solver.query import Owned
    owned = Owned.parse("1x rtx-4090")
    for engine in ("llamacpp", "ollama", "lmstudio"):
        q = Query(model="qwen3-8b", context=8192, owned=owned, engines=[engine], min_expert_bits=0)
        quants = {c.quant for c in enumerate_candidates(q, resolve_model("qwen3-8b"))}
        assert quants and not quants & MOE_MIXES, (engine, quants)
    assert not set(_quality_order(resolve_model("qwen3-8b"), MIXED_QUANTS)) & MOE_MIXES
    # a MoE model still gets them (its routed experts are what the mix shrinks)
    q = Query(model="qwen3-30b-a3b", context=8192, owned=Owned.parse("1x rtx-4090, 64GB ddr5"), engines=["llamacpp"])
    assert {c.quant for c in enumerate_candidates(q, resolve_model("qwen3-30b-a3b"))} & MOE_MIXES


def test_ollama_plans_what_ollama_can_pull(tmp_path):
    # owned hardware: every plan costs $0 and the tie-break takes the best quality; with --engine ollama that must
    # be a quantization a library tag downloads (models/ollama-tags.yaml), so the export starts without a GGUF
    from optimizer.catalog.ollama_tags import tag_for
    from optimizer.solver.query import Owned
    r = cheapest(Query(model="qwen3-8b", context=8192, owned=Owned.parse("1x rtx-4090"), engines=["ollama"], top=1))
    assert r.plan is not None and tag_for("qwen3-8b", r.plan.quant) is not None
    res = export_plan(r.plan, None, tmp_path)
    assert f"FROM {tag_for('qwen3-8b', r.plan.quant).tag}" in res.file("Modelfile").content
    # the user's own GGUF at another quantization: planned when asked for, and the export asks for its path
    r = cheapest(Query(model="qwen3-8b", context=8192, owned=Owned.parse("1x rtx-4090"), engines=["ollama"],
                       quants=["q8_0"], top=1))
    assert r.plan is not None and r.plan.quant == "q8_0"
    with pytest.raises(ExportError, match="--model-path"):
        export_plan(r.plan, None, None)
