"""Hybrid recurrent + attention models: config parsing, per-engine recurrent state (hand arithmetic), weights, speed.

State shapes (vLLM 0.33.0 vllm/model_executor/layers/mamba/mamba_utils.py MambaStateShapeCalculator):
  GDN     conv = (2*k_heads*k_dim + v_heads*v_dim) x (kernel-1), state = v_heads x v_dim x k_dim
  Mamba2  conv = (heads*head_dim + 2*n_groups*d_state) x (kernel-1), state = heads x head_dim x d_state
  KDA     conv = 3*heads*head_dim x (kernel-1), state = heads x head_dim x head_dim
"""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from optimizer.arch.from_config import spec_from_config
from optimizer.catalog.hardware import get_accelerator
from optimizer.catalog.models import resolve_model
from optimizer.cli import app
from optimizer.errors import InputError, ModelFormatError
from optimizer.estimate.deployment import Deployment, EngineSettings, Hardware, evaluate
from optimizer.estimate.kv import kv_estimate
from optimizer.estimate.recurrent import recurrent_estimate
from optimizer.estimate.schemes import get_scheme
from optimizer.estimate.weights import weight_breakdown
from optimizer.layout import Parallel

MiB = 2**20


def _ev(key, engine="vllm", context=4096, concurrency=1, gpu="h100-sxm", **settings):
    m = resolve_model(key)
    d = Deployment(model=m, quant="native", engine=engine, hardware=Hardware(get_accelerator(gpu), None),
                   parallel=Parallel(), context=context, concurrency=concurrency,
                   settings=EngineSettings(**settings))
    return evaluate(d)


# ------------------------------------------------------------------------------------------------ parsing
def test_qwen35_layer_kinds_from_layer_types():
    s = resolve_model("qwen3.5-27b").spec
    kinds = [l.attn_kind for l in s.main_layers]
    assert kinds.count("gdn") == 48 and kinds.count("full") == 16
    assert [i for i, k in enumerate(kinds) if k == "full"] == list(range(3, 64, 4))  # every 4th layer
    # recurrent layers carry no attention KV; the MTP layer (mtp_num_hidden_layers 1) is a full-attention layer
    assert all(not l.kv for l in s.recurrent_layers)
    assert [l.attn_kind for l in s.mtp_layers] == ["full"]


def test_full_attention_interval_without_layer_types():
    raw = json.load(open("models/qwen3-next-80b-a3b/config.json"))
    assert "layer_types" not in raw
    s = spec_from_config(raw, "qwen3-next")
    assert sum(1 for l in s.main_layers if l.attn_kind == "full") == 48 // 4


def test_nemotron_pattern_counts_and_latent_moe():
    nano = resolve_model("nemotron-3-nano-30b-a3b").spec
    kinds = [l.attn_kind for l in nano.main_layers]
    assert (kinds.count("mamba2"), kinds.count("full"), kinds.count("none")) == (23, 6, 23)
    sup = resolve_model("nemotron-3-super-120b-a12b").spec
    moe = sup.moe_layers[0]
    # latent MoE: each routed expert is up (1024 -> 2688) + down (2688 -> 1024), relu2 (no gate)
    assert moe.expert_params == 2 * 1024 * 2688
    assert moe.params["dense_ffn"] == 2 * 4096 * 1024      # fc1/fc2 latent projections
    # MTP: num_nextn_predict_layers 1 with mtp_hybrid_override_pattern "*E" = one attention + one MoE block
    assert [l.attn_kind for l in sup.mtp_layers] == ["full", "none"] and sup.mtp_layers[1].is_moe


def test_kimi_linear_layers_are_one_based():
    s = resolve_model("kimi-linear-48b-a3b").spec
    mla = [l.index for l in s.main_layers if l.attn_kind == "mla"]
    assert mla == [3, 7, 11, 15, 19, 23, 26]  # full_attn_layers [4, 8, ..., 24, 27] are 1-based
    assert len(s.recurrent_layers) == 20


@pytest.mark.parametrize("bad,why", [
    ({"layer_types": ["linear_attention", "banana"]}, "unknown layer type"),
    ({"layer_types": None, "full_attention_interval": None}, "neither layer_types"),
])
def test_bad_hybrid_fields_are_one_clear_error(bad, why):
    raw = json.load(open("models/qwen3.5-27b/config.json"))
    tc = dict(raw["text_config"], num_hidden_layers=2, **bad)
    with pytest.raises(ModelFormatError, match=why):
        spec_from_config({**raw, "text_config": tc}, "x")


def test_nemotron_pattern_too_short_is_an_error():
    raw = json.load(open("models/nemotron-3-nano-30b-a3b/config.json"))
    with pytest.raises(ModelFormatError, match="hybrid_override_pattern"):
        spec_from_config({**raw, "hybrid_override_pattern": "M*"}, "x")


# ------------------------------------------------------------------------------------------------ state shapes
# (conv bytes/layer, SSM bytes/layer, layers) with bf16 conv + fp32 state, hand arithmetic from the configs:
STATE = {
    # conv_dim = 128*16*2 + 128*48 = 10,240; conv 10,240 x 3 x 2 B; delta state 48 x 128 x 128 x 4 B
    "qwen3.5-27b": (10_240 * 3 * 2, 48 * 128 * 128 * 4, 48),
    "qwen3.6-27b": (10_240 * 3 * 2, 48 * 128 * 128 * 4, 48),
    # conv_dim = 128*16*2 + 128*32 = 8,192
    "qwen3.5-35b-a3b": (8_192 * 3 * 2, 32 * 128 * 128 * 4, 30),
    "qwen3-next-80b-a3b": (8_192 * 3 * 2, 32 * 128 * 128 * 4, 36),
    # 64 value heads: conv_dim = 4,096 + 8,192 = 12,288
    "qwen3.5-122b-a10b": (12_288 * 3 * 2, 64 * 128 * 128 * 4, 36),
    "qwen3.5-397b-a17b": (12_288 * 3 * 2, 64 * 128 * 128 * 4, 45),
    # Mamba2: intermediate 64*64 = 4,096; conv_dim = 4,096 + 2*8*128 = 6,144; SSM 64 x 64 x 128
    "nemotron-3-nano-30b-a3b": (6_144 * 3 * 2, 64 * 64 * 128 * 4, 23),
    # 128 heads x 64 = 8,192; conv_dim = 8,192 + 2*8*128 = 10,240
    "nemotron-3-super-120b-a12b": (10_240 * 3 * 2, 128 * 64 * 128 * 4, 40),
    # 256 heads x 64 = 16,384; d_state 256: conv_dim = 16,384 + 2*8*256 = 20,480
    "nemotron-h-56b": (20_480 * 3 * 2, 256 * 64 * 256 * 4, 54),
    # KDA: conv_dim = 3 x 32 x 128 = 12,288; state 32 x 128 x 128
    "kimi-linear-48b-a3b": (12_288 * 3 * 2, 32 * 128 * 128 * 4, 20),
    # granite-4.0-h-small: 128 x 64 = 8,192 + 2*1*128 = 8,448 conv channels; SSM 128 x 64 x 128
    "granite-4.0-h-small": (8_448 * 3 * 2, 128 * 64 * 128 * 4, 36),
}


@pytest.mark.parametrize("key", STATE)
def test_sglang_state_per_sequence_by_hand(key):
    conv, ssm, n = STATE[key]
    r = recurrent_estimate(resolve_model(key).spec, "sglang")
    assert (r.conv_bytes_per_layer, r.ssm_bytes_per_layer, r.layers) == (conv, ssm, n)
    assert r.set_bytes == (conv + ssm) * n
    assert r.conv_dtype == "bfloat16" and r.ssm_dtype == "float32"  # SGLang default, configs/mamba_utils.py


def test_reference_table_figures():
    # hand calculation from the MambaStateShapeCalculator shapes, fp32 SSM state
    for key, b in (("qwen3.5-27b", 153_944_064), ("nemotron-3-nano-30b-a3b", 49_082_368),
                   ("kimi-linear-48b-a3b", 43_417_600), ("nemotron-h-56b", 912_605_184)):
        assert recurrent_estimate(resolve_model(key).spec, "sglang").set_bytes == b


# ------------------------------------------------------------------------------------------------ vLLM
def test_vllm_qwen36_27b_at_262144_by_hand():
    """The must-show: `rigopt estimate qwen3.6-27b --context 262144 --json` reports the recurrent state apart from
    the KV cache, per engine, and the vLLM figure is this hand calculation (vLLM 0.33):
      attention page per token per layer = 2 (K,V) x 4 KV heads x 256 x 2 B = 4,096 B
      state page = conv 10,240 x 3 x 2 + delta 48 x 128 x 128 x 4 = 61,440 + 3,145,728 = 3,207,168 B
      block size = 16 x ceil(3,207,168 / (16 x 4,096)) = 16 x 49 = 784 tokens (Platform._align_hybrid_block_size)
      padded page = 784 x 4,096 = 3,211,264 B
      groups: 48 GDN + 16 attention -> group size 16, 3 GDN groups, no padding layer
      prefix caching on (default) -> mamba_cache_mode 'align': 2 state pages per group slot per request
      state per sequence = 2 x 48 x 3,211,264 = 308,281,344 B (294.0 MiB)
      attention KV = ceil(262,144 / 784) = 335 blocks x 784 tokens x 16 layers x 4,096 B = 17,212,375,040 B"""
    r = CliRunner().invoke(app, ["estimate", "qwen3.6-27b", "--context", "262144", "--json", "-q", "native"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    by = {r["engine"]: r for r in d["recurrent_state"]}
    assert set(by) == {"vllm", "sglang", "llamacpp"}
    v = by["vllm"]
    assert v["vllm_block_size"] == 784 and v["vllm_padded_page_bytes"] == 784 * 4096
    assert v["recurrent_state_bytes_per_seq"] == 2 * 48 * 3_211_264 == 308_281_344
    assert v["kv_cache_bytes_per_seq"] == 335 * 784 * 16 * 4096 == 17_212_375_040
    assert d["kv"]["recurrent_state_bytes_per_seq"] == 308_281_344
    row = d["quants"][0]
    assert row["kv_bytes"] == 17_212_375_040 and row["recurrent_state_bytes"] == 308_281_344
    # SGLang: 3 slots per running request with the radix cache; llama.cpp: F32 conv and state, one row set per slot
    assert by["sglang"]["recurrent_state_bytes_per_seq"] == 3 * 153_944_064
    assert by["llamacpp"]["state_set_bytes"] == 48 * 4 * (3 * 10_240 + 128 * 6_144)


def test_state_does_not_grow_with_context():
    a, b = _ev("qwen3.6-27b", context=4096), _ev("qwen3.6-27b", context=65536)
    assert a.memory.state_per_seq_bytes == b.memory.state_per_seq_bytes > 0
    assert b.memory.attention_kv_per_seq_bytes > 10 * a.memory.attention_kv_per_seq_bytes


@pytest.mark.parametrize("key,block,padding", [
    ("qwen3.5-35b-a3b", 1056, 0),          # 16 x ceil(2,146,304 / (16 x 2,048))
    ("qwen3.5-122b-a10b", 2096, 0),        # page 4,268,032 over 2,048 B/token
    ("nemotron-3-nano-30b-a3b", 2096, 1),  # 23 M + 6 attn: 4 groups of 6 -> 1 dummy layer
    ("nemotron-3-super-120b-a12b", 4160, 0),
    ("nemotron-h-56b", 4128, 6),           # 54 + 10: 6 groups of 10 -> 6 dummy layers
    ("kimi-linear-48b-a3b", 1920, 1),      # MLA: align 128, 1,152 B/token; 20 KDA + 7 MLA -> 3 x 7
])
def test_vllm_block_size_and_padding(key, block, padding):
    """Reference §3/§4 table (derived from vLLM 0.33 code): block size forced by the page alignment, padding layers."""
    ev = _ev(key)
    r = ev.recurrent
    assert r.vllm_block_size == block and r.vllm_padding_layers == padding
    # per sequence: (recurrent + padding layers) x padded page x 2 (align mode)
    assert r.per_seq_bytes == (r.layers + padding) * r.vllm_padded_page_bytes * 2


def test_vllm_ssm_dtype_rules_and_flag():
    # Qwen3-Next: vLLM's auto SSM dtype = model dtype (bf16): (49,152 + 32 x 128 x 128 x 2) x 36 = 39,518,208 B
    spec = resolve_model("qwen3-next-80b-a3b").spec
    assert recurrent_estimate(spec, "vllm").set_bytes == (49_152 + 32 * 128 * 128 * 2) * 36 == 39_518_208
    # --mamba-ssm-cache-dtype float32 doubles the matrix state: 77,266,944 B (reference §4)
    assert recurrent_estimate(spec, "vllm", ssm_dtype="float32").set_bytes == 77_266_944
    # Qwen3.5 reads config mamba_ssm_dtype float32; NemotronH defaults to float32
    assert recurrent_estimate(resolve_model("qwen3.5-27b").spec, "vllm").ssm_dtype == "float32"
    assert recurrent_estimate(resolve_model("nemotron-h-56b").spec, "vllm").ssm_dtype == "float32"
    with pytest.raises(InputError, match="float32 or bfloat16"):
        recurrent_estimate(resolve_model("kimi-linear-48b-a3b").spec, "vllm", ssm_dtype="float16")


def test_vllm_prefix_caching_off_and_spec_decode():
    spec = resolve_model("qwen3.5-27b").spec
    off = recurrent_estimate(spec, "vllm", attn_token_bytes=4096, prefix_caching=False)
    assert off.per_seq_bytes == 48 * 3_211_264  # one page per slot (mamba_cache_mode 'none')
    # MTP 1: conv rows kernel-1+1 = 4: 10,240 x 4 x 2 = 81,920 B; page 3,227,648 -> block 16 x ceil(3,227,648/65,536)
    # = 16 x 50 = 800; align mode 2 + 1 pages: 3 x 48 x 800 x 4,096
    mtp = recurrent_estimate(spec, "vllm", attn_token_bytes=4096, num_spec=1)
    assert mtp.conv_bytes_per_layer == 81_920 and mtp.vllm_block_size == 800
    assert mtp.per_seq_bytes == 3 * 48 * 800 * 4096


def test_vllm_max_concurrency_counts_state():
    ev = _ev("nemotron-3-nano-30b-a3b", context=4096)
    mem = ev.memory
    per = mem.attention_kv_per_seq_bytes + mem.state_per_seq_bytes
    assert ev.max_concurrency == int((mem.kv_available_bytes - mem.reserve_per_seq_bytes) // per)
    # at 4K context: state = 24 group slots x padded page (2,096 x 1,024 B) x 2 = 103,022,592 B, while the 6-layer
    # attention KV is 2 blocks of 2,096 tokens x 6,144 B = 25,755,648 B: the state bounds short-context concurrency
    assert mem.state_per_seq_bytes == 24 * 2096 * 1024 * 2 == 103_022_592
    assert mem.attention_kv_per_seq_bytes == 2 * 2096 * 6144 == 25_755_648


# ------------------------------------------------------------------------------------------------ SGLang
def test_sglang_separate_pool():
    ev = _ev("qwen3.6-27b", engine="sglang", context=32768)
    mem, r = ev.memory, ev.recurrent
    assert r.separate_pool_share == pytest.approx(0.9 / 1.9)  # --mamba-full-memory-ratio 0.9: r / (1 + r)
    avail = mem.kv_available_bytes
    pool = avail * 0.9 / 1.9
    assert mem.state_bytes == pytest.approx(pool)
    n_state = int((pool - r.set_bytes) // (3 * r.set_bytes))   # one spare slot; 3 slots per running request
    n_kv = int((avail - pool) // (32768 * 65536))              # 16 attention layers x 4,096 B per token
    assert ev.max_concurrency == min(n_state, n_kv)


# ------------------------------------------------------------------------------------------------ llama.cpp
def test_llamacpp_slots_times_state_rows():
    """llama.cpp with -np 4 (reference §4 worked example): 4 x 48 x 4 B x (3 x 10,240 + 128 x 6,144)
    = 627,572,736 B whatever -c is (llama_memory_recurrent: n_seq_max x (1 + n_rs_seq) rows, F32)."""
    for ctx in (4096, 131072):
        ev = _ev("qwen3.6-27b", engine="llamacpp", context=ctx, concurrency=4, gpu="h200-sxm")
        assert ev.memory.state_bytes == 627_572_736
    spec = resolve_model("qwen3.6-27b").spec
    # a 3-token draft: Qwen3.5 supports state rollback, so each slot keeps 1 + 3 state rows
    assert recurrent_estimate(spec, "llamacpp", num_spec=3).copies == 4
    # Qwen3-Next (qwen3next) is not among the rollback archs: n_rs_seq clamped to 0
    assert recurrent_estimate(resolve_model("qwen3-next-80b-a3b").spec, "llamacpp", num_spec=3).copies == 1


# ------------------------------------------------------------------------------------------------ speed
def test_decode_reads_and_writes_the_state():
    from optimizer.estimate.speed import decode_speed
    ev = _ev("qwen3.6-27b", context=8192)
    d = ev.deployment
    from optimizer.estimate.deployment import device_of
    dev = device_of(d.hardware.accelerator)
    args = dict(par=d.parallel, context=8192, batch=8, links=ev.links, engine="vllm")
    with_state = decode_speed(d.model.spec, ev.weights, ev.kv, dev, recurrent=ev.recurrent, **args)
    without = decode_speed(d.model.spec, ev.weights, ev.kv, dev, **args)
    # 8 sequences x one state set read + written back (153,944,064 B x 2) at the effective bandwidth
    extra = 8 * 153_944_064 * 2 / (dev.mem_bw_bytes_per_s * dev.bw_efficiency)
    assert with_state.terms_s["gpu_memory"] - without.terms_s["gpu_memory"] == pytest.approx(extra)
    # attention KV is read only for the 16 attention layers: 8,192 tokens x 16 x 4,096 B per sequence
    assert ev.kv.read_bytes_per_token(8192) == 8192 * 16 * 4096


def test_prefill_counts_the_chunked_scan():
    from optimizer.estimate.speed import recurrent_flops
    spec = resolve_model("qwen3.5-27b").spec
    # per GDN layer: 6 x 48 x 128 x 128 (state update + readout) + 2 x 10,240 x 4 (conv)
    dec = 6 * 48 * 128 * 128 + 2 * 10_240 * 4
    # chunked scan: + heads x chunk 64 x (k_dim + v_dim)
    pre = dec + 48 * 64 * (128 + 128)
    assert recurrent_flops(spec, prefill=False) == 48 * dec
    assert recurrent_flops(spec, prefill=True) == 48 * pre


# ------------------------------------------------------------------------------------------------ weights
@pytest.mark.parametrize("key,total_b,active_b,tol", [
    # NVIDIA Nemotron 3 Nano: "31.6B-total / 3.2B-active" (open-source-ai.tech/models/nemotron-3-nano;
    # replicate.com/nvidia/nemotron-3-nano-30b-a3b/readme: 31.6 billion total parameters)
    ("nemotron-3-nano-30b-a3b", 31.6, 3.2, 0.01),
    # Qwen3.5-27B: "26.9B-parameter dense model" (dexiio.pages.dev/llm/model/qwen3.5-27b): text model, no MTP/vision
    ("qwen3.5-27b", 26.9, None, 0.01),
    # Granite-4.0-H-Small: 32B total / 9B active (IBM family table, third-party summary); loose on active
    ("granite-4.0-h-small", 32.0, None, 0.01),
    # Kimi-Linear: 48B total / 3B activated (MoonshotAI/Kimi-Linear README); reconstructed config, 3 % band
    ("kimi-linear-48b-a3b", 48.0, 3.0, 0.03),
    ("nemotron-h-56b", 56.0, None, 0.01),
])
def test_param_counts_against_published(key, total_b, active_b, tol):
    s = resolve_model(key).spec
    assert abs(s.total_params() / 1e9 - total_b) / total_b < tol
    if active_b:
        assert abs(s.active_params() / 1e9 - active_b) / active_b < 0.05


def test_qwen35_397b_checkpoint_parameter_count():
    # "Parameters 403.4B (17B active)" for the full Qwen3.5-397B-A17B checkpoint (text + MTP layer + vision tower),
    # huface.ru/baa-ai/Qwen3.5-397B-A17B-SWAN-4bit model card; within 0.5 % (the vision tower is counted by formula)
    s = resolve_model("qwen3.5-397b-a17b").spec
    assert abs(s.total_params(include_mtp=True, include_vision=True) / 1e9 - 403.4) / 403.4 < 0.005


def test_qwen35_27b_bf16_checkpoint_about_54_gb():
    # third-party model pages: "Original Size ~54 GB (BF16)" (hugingapi.com/TevunahAi/Qwen3.5-27B-TevunahAi-GPTQ);
    # a rounded figure, so within 2 %: text 26.90B + MTP 0.42B + vision ~0.46B parameters x 2 B
    m = resolve_model("qwen3.5-27b")
    total = weight_breakdown(m.spec, get_scheme("native", m.storage), include_mtp=True).total
    assert abs(total / 1e9 - 54.0) / 54.0 < 0.04


# ------------------------------------------------------------------------------------------------ catalogue / CLI
def test_catalogue_lists_hybrids_and_aliases():
    r = CliRunner().invoke(app, ["catalog", "models"], env={"COLUMNS": "250"})
    assert r.exit_code == 0
    out = r.output
    for key in ("qwen3.6-27b", "qwen3.5-27b", "qwen3.5-35b-a3b", "qwen3.6-35b-a3b", "qwen3.5-122b-a10b",
                "qwen3.5-397b-a17b", "nemotron-3-nano-30b-a3b", "nemotron-3-super-120b-a12b", "nemotron-h-56b",
                "granite-4.0-h-small", "kimi-linear-48b-a3b", "qwen3-next-80b-a3b"):
        assert key in out
    assert resolve_model("qwen36-27b").key == "qwen3.6-27b"
    assert resolve_model("nemotron-3-nano").key == "nemotron-3-nano-30b-a3b"
    assert resolve_model("kimi-linear").key == "kimi-linear-48b-a3b"


def test_bad_ssm_dtype_flag_is_one_error_line():  # the real entry point (its error handler), ~2 s
    p = subprocess.run([sys.executable, "-m", "optimizer", "estimate", "qwen3.6-27b", "--mamba-ssm-cache-dtype",
                        "int3"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().startswith("error:") and "Traceback" not in p.stderr


# ------------------------------------------------------------------------------------------------ calculator pages
# The calculator pages rigopt replaces name these as the practical local alternatives to DeepSeek-V4 (issue 17):
# Qwen3.6-27B, Granite 4.1 30B, Gemma 4 26B-A4B, MiniMax M2.7 and the R1 distills.
CALCULATOR_PAGE_MODELS = ("qwen3.6-27b", "granite-4.1-30b", "gemma-4-26b-a4b", "minimax-m2.7",
                          "deepseek-r1-distill-qwen-32b")


@pytest.mark.parametrize("key", CALCULATOR_PAGE_MODELS)
def test_calculator_page_models_estimate(key):
    from optimizer.report.estimate import estimate
    r = estimate(resolve_model(key), context=32768, gpu="h100-sxm")
    assert r.quants and all(q.weights_bytes > 0 for q in r.quants)
    assert r.hardware is not None and r.hardware.decode.tok_s_per_seq > 0
    assert (r.recurrent_state is not None) == (key == "qwen3.6-27b")


@pytest.mark.parametrize("key", CALCULATOR_PAGE_MODELS)
def test_calculator_page_models_cheapest(key):  # 1-2.5 s each through the Python API
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    r = cheapest(Query(model=key, context=32768, tok_s=10, top=1))
    assert r.plan is not None and r.cost > 0


def test_cheapest_qwen36_27b_128k_30_tok_s():
    """The issue's query: `rigopt cheapest qwen3.6-27b --context 128K --tok-s 30` gives a plan whose memory counts
    the recurrent state (candidate generation handles hybrids through the one evaluate())."""
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    r = cheapest(Query(model="qwen3.6-27b", context=131072, tok_s=30, top=1))
    assert r.plan is not None and r.plan.speed.tok_s_per_seq >= 30
    p = r.plan
    if p.engine == "llamacpp" and p.kv_dtype == "f16" and p.parallel.pp == 1:
        # one slot: 131,072 tokens x 16 layers x 4,096 B (f16 K+V, 4 KV heads x 256) + the F32 state set
        # 48 x 4 x (3 x 10,240 + 128 x 6,144) = 156,893,184 B
        assert p.memory.kv_bytes == 131072 * 16 * 4096 + 156_893_184


def test_vllm_user_block_size_is_only_the_alignment_base():
    # kernel_block_alignment_size = max(16, --block-size 256): block = 256 x ceil(3,207,168 / (256 x 4,096)) = 1,024
    ev = _ev("qwen3.6-27b", block_size=256)
    assert ev.recurrent.vllm_block_size == 1024 and ev.settings.block_size == 1024


@pytest.mark.parametrize("tp,attn_bytes,page,block", [
    # vllm-project/vllm issue #41037 (Nemotron-3-Nano, fp8 KV, --block-size 32, mamba_cache_mode none), its table:
    # TP1: attention 2 KV heads x 2 (K,V) x 128 x 1 B = 512 B/token; mamba page 2,134,016; block 4192
    (1, 512, 2_134_016, 4192),
    # TP4: KV heads per GPU clamp to 1 -> 256 B/token; mamba page 533,504; block 2112
    (4, 256, 533_504, 2112),
])
def test_vllm_block_size_matches_issue_41037(tp, attn_bytes, page, block):
    spec = resolve_model("nemotron-3-nano-30b-a3b").spec
    r = recurrent_estimate(spec, "vllm", attn_token_bytes=attn_bytes, tp=tp, block_size=32, prefix_caching=False)
    assert r.conv_bytes_per_layer + r.ssm_bytes_per_layer == page
    assert r.vllm_block_size == block
    # and through evaluate(): the fp8 KV row of one attention layer at TP1 is that 512 B
    assert kv_estimate(spec, "vllm", "fp8", tp=tp).layouts[0][1].row_bytes == attn_bytes


@pytest.mark.slow
def test_export_explain_names_the_hybrid_log_lines():  # three cheapest + export runs, ~6 s
    """EXPLAIN.md of a hybrid plan predicts the engines' recurrent-state log lines: vLLM's forced attention block
    (784 tokens for Qwen3.6-27B, bf16 KV: see test_vllm_qwen36_27b_at_262144_by_hand) and its page padding
    (3,211,264 / 3,207,168 - 1 = 0.13 %); SGLang's state pool slots; llama.cpp's F32 state buffers."""
    from optimizer.export import export_plan
    from optimizer.solver.query import Query
    from optimizer.solver.search import cheapest
    for engine, expect in (("vllm", "N = 784"), ("sglang", "max_mamba_cache_size"),
                           ("llamacpp", "llama_memory_recurrent")):
        r = cheapest(Query(model="qwen3.6-27b", context=65536, tok_s=20, engines=[engine], top=1))
        assert r.plan is not None
        explain = export_plan(r.plan, None, None).explain
        assert expect in explain, engine
        if engine == "vllm":
            assert "X ≈ 0.13" in explain


def test_tensor_parallel_state_shards():
    # Qwen3.5-27B at TP2 (vLLM): conv 10,240 / 2 = 5,120 channels x 3 x 2 B = 30,720; delta state 48 / 2 = 24 heads
    # x 128 x 128 x 4 B = 1,572,864; x 48 layers = 76,972,032 B = 73.4 MiB (reference §4 "TP2 per rank")
    spec = resolve_model("qwen3.5-27b").spec
    r = recurrent_estimate(spec, "vllm", tp=2, attn_token_bytes=2 * 2 * 256 * 2)  # 2 KV heads per rank
    assert (r.conv_bytes_per_layer, r.ssm_bytes_per_layer) == (30_720, 1_572_864)
    assert r.set_bytes == 76_972_032
    assert r.vllm_block_size == 16 * -(-1_603_584 // (16 * 2048)) == 784
    # Granite-4.0-H: n_groups 1 is padded up to TP 2 (vLLM extra_groups_for_head_shards):
    # conv channels = (128 x 64 + 2 x 2 x 128) / 2 = 4,352 per rank
    g = resolve_model("granite-4.0-h-small").spec.recurrent_layers[0].recurrent
    assert g.conv_channels(tp=2) == (128 * 64 + 2 * 2 * 128) // 2 == 4_352


def test_max_context_counts_the_state():
    """vLLM, 2 sequences of Qwen3.6-27B on one H100: each pins 308,281,344 B of state, and attention KV comes in
    784-token blocks of 784 x 65,536 B, so the longest context is
    floor((available / 2 - 308,281,344) / (784 x 65,536)) blocks x 784 tokens."""
    ev = _ev("qwen3.6-27b", context=65536, concurrency=2)
    avail = ev.memory.kv_available_bytes
    blocks = int((avail / 2 - 308_281_344) // (784 * 65_536))
    assert ev.max_context_tokens == blocks * 784 < 262_144
