"""`rigopt estimate`: combine catalogue, architecture and physics into one result object.

JSON schema id: "rigopt.estimate/1" (see README). Field names carry units; bytes are exact integers-as-floats.
"""

from __future__ import annotations

import math
from dataclasses import replace

from pydantic import BaseModel, ConfigDict

from optimizer.cache import without_gc
from optimizer.catalog.devices import node_for
from optimizer.catalog.hardware import get_accelerator, load_hardware
from optimizer.catalog.hardware_schema import Accelerator
from optimizer.catalog.host_spec import HostSpec
from optimizer.catalog.models import ResolvedModel
from optimizer.engines import is_llamacpp, runs_on_vendor
from optimizer.errors import InputError
from optimizer.estimate import factors as F
from optimizer.estimate.calibration import Calibration
from optimizer.estimate.cpu_experts import overlaps_gpu
from optimizer.estimate.deployment import (
    Deployment,
    EngineSettings,
    Evaluation,
    Hardware,
    Offload,
    SpecDecode,
    evaluate,
    links_for,
    memory_of,
    recurrent_of,
    resident_weights,
)
from optimizer.estimate.kv import check_engine, default_kv_dtype, kv_estimate
from optimizer.estimate.memory import hybrid_kv_per_seq
from optimizer.estimate.runtimes import gpu_layers_that_fit, ollama_default_num_ctx
from optimizer.estimate.schemes import Scheme
from optimizer.estimate.serving import Workload
from optimizer.estimate.uncertainty import DEFAULT_CONFIDENCE, Interval, Trust, expected_figure, trust
from optimizer.layout import Parallel
from optimizer.solver.support import plan_unsupported, scheme_formats, unsupported
from optimizer.units import MAX_CONCURRENCY, MAX_DEVICES, GiB

SCHEMA_ID = "rigopt.estimate/1"
DEFAULT_QUANTS = ("native", "bf16", "fp8", "nvfp4", "int4", "q8_0", "q4_k_m", "q2_k", "iq2_xxs", "iq1_s")
# ik_llama.cpp: GGUF presets and its own types (optimizer/estimate/schemes.py IK_QUANTS)
DEFAULT_QUANTS_IK_LLAMA = ("q8_0", "q4_k_m", "iq6_k", "iq5_k", "iq4_k", "iq4_ks", "iq3_k", "iq2_k", "iq2_ks",
                           "iq4_ks-moe", "iq2_ks-moe")
DEFAULT_QUANTS_LLAMACPP_FAMILY = ("bf16", "q8_0", "q6_k", "q4_k_m", "q3_k_m", "q2_k", "iq2_xxs")  # GGUF (Ollama, LM Studio)
DEFAULT_QUANTS_MLX = ("native", "mlx8", "mlx6", "mlx4", "mlx-mixed-3-6", "mlx3")
DEVICE_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128)
REFERENCE_ACCELERATOR = "h100-sxm"  # the per-quant table's KV/runtime column is for one 80 GB H100


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelInfo(_M):
    key: str
    name: str
    architecture: str
    family: str
    total_params: int
    total_params_with_mtp: int
    active_params: int
    max_context: int
    checkpoint_bytes: int | None
    source: str


class KVInfo(_M):
    """Attention KV cache of one sequence (hybrid models: the attention layers only; their recurrent state is in
    `recurrent_state_bytes_per_seq` and EstimateResult.recurrent_state)."""
    engine: str
    kv_dtype: str
    per_seq_bytes: float
    growth_bytes_per_token: float
    fixed_bytes_per_seq: float
    read_bytes_per_token: float
    recurrent_state_bytes_per_seq: float = 0.0


class RecurrentStateReport(_M):
    """Per engine: the fixed-size recurrent state of a hybrid model (optimizer/estimate/recurrent.py), one TP rank
    of 1, the engine's default KV dtype, apart from the attention KV cache. Never grows with context."""
    engine: str
    layers: int
    conv_dtype: str
    ssm_dtype: str
    conv_bytes_per_layer: int
    ssm_bytes_per_layer: int
    state_set_bytes: int                     # one state set of one sequence, all recurrent layers, no padding
    copies_per_seq: float                    # state sets a running sequence pins
    recurrent_state_bytes_per_seq: float     # what a running sequence pins (padding, groups, copies)
    recurrent_state_bytes: float             # for `concurrency` sequences
    kv_cache_bytes_per_seq: float            # attention KV of one sequence at the context (engine block rounding)
    kv_cache_bytes: float                    # for `concurrency` sequences
    vllm_block_size: int | None = None       # attention block size vLLM forces for the page alignment
    vllm_padded_page_bytes: int | None = None
    vllm_group_size: int | None = None
    vllm_padding_layers: int = 0
    sglang_state_pool_share: float | None = None  # SGLang: share of cache memory in its separate state pool
    sources: list[str]


class FitOption(_M):
    accelerator: str
    count: int
    parallel: str


class QuantRow(_M):
    quant: str
    description: str
    engine: str
    weights_bytes: float           # what the engine holds without speculative decoding (MTP layers not loaded)
    mtp_bytes: float               # MTP/NextN layers, loaded only with --spec mtp (checkpoint = weights + mtp)
    kv_bytes: float                # attention KV cache (hybrids: recurrent state apart, below)
    runtime_bytes: float
    recurrent_state_bytes: float = 0.0  # hybrid models' recurrent state (SGLang: its separate state pool)
    total_bytes: float
    routed_expert_bits: float | None
    fits_single: list[str]
    fits_multi: list[FitOption]


class DeviceReport(_M):
    capacity_bytes: float
    budget_bytes: float
    weights_bytes: float
    kv_bytes: float                     # attention KV cache
    runtime_bytes: float
    headroom_bytes: float
    fits: bool
    recurrent_state_bytes: float = 0.0  # hybrid models' recurrent state (SGLang: its separate state pool)
    recurrent_state_bytes_per_seq: float = 0.0


class CpuExpertsReport(_M):
    """Routed experts computed by the host CPU (optimizer/estimate/cpu_experts.py), one decode step."""
    host: str
    time_s: float                 # CPU-expert time of the step: max(dram_s, compute_s)
    exposed_s: float              # what the step pays after the engine's overlap with GPU work
    dram_s: float
    compute_s: float
    dram_bw_bytes_per_s: float    # achievable (assumed)
    dram_bw_theoretical_bytes_per_s: float
    dram_bw_basis: str
    cpu_flops_per_s: float
    isa: str
    binding: str                  # host DRAM bandwidth | cross-socket link | CPU threads | cpu compute
    combine: str                  # how the engine combines CPU and GPU parts
    prefill_path: str             # stream | cpu
    prefill_stream_s: float
    prefill_cpu_s: float


class SpeedReport(_M):
    tok_s_per_seq: float
    tok_s_bound_per_seq: float
    tok_s_aggregate: float
    binding: str
    terms_s: dict[str, float]
    ttft_s: float
    ttft_bound_s: float
    prompt_tokens: int
    tok_s_per_seq_low: float | None = None
    tok_s_per_seq_high: float | None = None
    ttft_s_low: float | None = None
    ttft_s_high: float | None = None
    cpu_experts: CpuExpertsReport | None = None


class IntervalReport(_M):
    """How far to trust a figure: its `confidence` interval from rigopt's leave-one-source-out cross-validated
    errors in this regime (optimizer/estimate/uncertainty.yaml)."""
    confidence: float
    regime: str
    n_rows: int
    n_sources: int
    bias: float = 1.0  # expected / model figure: the regime's stored bias correction (1: unbiased regime)


class TrustReport(_M):
    decode: IntervalReport | None
    prefill: IntervalReport | None
    ttft: IntervalReport | None
    throughput: IntervalReport | None
    tpot: IntervalReport | None = None  # served TPOT (a time), from served rows only; None: the decode interval


class SettingsReport(_M):
    """The engine settings the figures assume (defaults filled in); `export` writes the same values."""
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    gpu_memory_utilization: float | None
    mem_fraction_static: float | None
    block_size: int


class SpecReport(_M):
    method: str
    num_tokens: int
    accept_len: float
    draft_model: str | None
    source: str


class ServingReport(_M):
    """Serving a workload (continuous batching, chunked prefill; optimizer/estimate/serving.py). None = unbounded
    (the deployment cannot sustain the rate)."""
    isl: int
    osl: int
    concurrency: int | None
    rate_rps: float | None
    prefix_hit: float
    stable: bool
    tpot_s: float | None
    ttft_s: float | None
    ttft_p90_s: float | None
    request_rate_rps: float
    output_tok_s: float
    total_tok_s: float
    output_tok_s_per_gpu: float
    total_tok_s_per_gpu: float
    decoding_seqs: float
    admitted_seqs: int
    prefill_share: float
    binding: str
    tpot_s_low: float | None = None
    tpot_s_high: float | None = None
    ttft_s_low: float | None = None
    ttft_s_high: float | None = None
    output_tok_s_low: float | None = None
    output_tok_s_high: float | None = None


class CalibrationReport(_M):
    """The user's correction factors (rigopt calibrate) applied to these figures: measured/predicted speed."""
    decode: float
    decode_runs: int
    decode_scope: str
    prefill: float
    prefill_runs: int
    prefill_scope: str
    profile: str
    text: str


class HardwareReport(_M):
    accelerator: str
    accelerator_name: str
    count: int
    node: str | None
    parallel: str
    quant: str
    engine: str
    kv_dtype: str
    kv_per_seq_bytes: float
    per_device: DeviceReport
    max_context_tokens: int
    max_concurrency: int
    decode: SpeedReport
    settings: SettingsReport
    spec_decode: SpecReport | None = None
    serving: ServingReport | None = None
    trust: TrustReport | None = None
    calibration: CalibrationReport | None = None
    notes: list[str]


class EstimateResult(_M):
    schema_id: str = SCHEMA_ID
    model: ModelInfo
    context: int
    concurrency: int
    kv: KVInfo
    quants: list[QuantRow]
    hardware: HardwareReport | None = None
    warnings: list[str]
    recurrent_state: list[RecurrentStateReport] | None = None  # hybrid models: per engine


def _model_info(m: ResolvedModel) -> ModelInfo:
    s = m.spec
    return ModelInfo(key=m.key, name=m.card.name if m.card else s.name, architecture=s.architecture, family=s.family,
                     total_params=s.total_params(), total_params_with_mtp=s.total_params(include_mtp=True),
                     active_params=s.active_params(), max_context=s.max_context,
                     checkpoint_bytes=m.card.checkpoint_bytes if m.card else (
                         getattr(m.weights_file, "file_bytes", None)),
                     source=s.source or (m.card.config_source if m.card else ""))


def default_parallel(m: ResolvedModel, acc: Accelerator, count: int, engine: str) -> Parallel:
    node = node_for(acc.key, count)
    domain = node.scaleup_domain_size if node else 1
    per_node = node.accelerators_per_node if node else count
    if is_llamacpp(engine):
        return Parallel(tp=1, pp=count)  # llama.cpp (and Ollama / LM Studio on it) split layers across devices
    if engine == "mlx":
        return Parallel()
    tp = 1
    while tp * 2 <= min(count, per_node) and count % (tp * 2) == 0:
        tp *= 2
    if domain < tp and domain > 1:
        pass  # TP over PCIe is allowed, only slower
    rest = count // tp
    if m.spec.is_moe:
        return Parallel(tp=tp, dp=rest, ep=count > 1)
    return Parallel(tp=tp, pp=rest)


def _engine_for(scheme: Scheme, engine: str, explicit: bool) -> str:
    if scheme.gguf and not explicit:
        return "ik_llama" if scheme.ik else "llamacpp"
    if scheme.mlx:  # an MLX checkpoint: mlx-lm, or LM Studio's MLX engine when LM Studio was asked for
        return engine if engine == "lmstudio" else "mlx"
    if scheme.gguf and engine == "mlx":
        return "llamacpp"
    return engine


def _device_engine(eng: str, acc: Accelerator, mlx_quant: bool = False) -> str | None:
    """The engine a fit-table row uses on `acc`: unified-memory boxes run the llama.cpp family (or mlx on Apple
    silicon); None when the engine cannot run there at all (mlx off Apple silicon)."""
    if not runs_on_vendor(eng, acc.vendor):
        return None
    if eng == "lmstudio" and mlx_quant and acc.vendor != "apple":
        return None
    if acc.kind == "gpu" or is_llamacpp(eng) or eng == "mlx":
        return eng
    return "llamacpp"


def _fits(m: ResolvedModel, quant: str, engine: str, kv_dtype: str | None, acc: Accelerator, count: int,
          context: int, concurrency: int, settings: EngineSettings) -> tuple[bool, Parallel]:
    par = default_parallel(m, acc, count, engine)
    d = Deployment(model=m, quant=quant, engine=engine, hardware=Hardware(acc, node_for(acc.key, count), 1, count),
                   parallel=par, context=context, concurrency=concurrency, kv_dtype=kv_dtype, settings=settings)
    return memory_of(d).fits, par


@without_gc
def estimate(m: ResolvedModel, *, context: int, concurrency: int = 1, quants: list[str] | None = None,
             kv_dtype: str | None = None, engine: str = "vllm", engine_explicit: bool = False,
             gpu: str | None = None, gpus: int = 1, parallel: Parallel | None = None,
             prompt_tokens: int | None = None, workload: Workload | None = None,
             settings: EngineSettings | None = None, spec_decode: SpecDecode | None = None,
             layout: str = "tp", cpu_moe_layers: int | None = None,
             host: HostSpec | None = None, confidence: float = DEFAULT_CONFIDENCE,
             calibration: Calibration | None = None) -> EstimateResult:
    engine = check_engine(engine)
    settings = settings or EngineSettings()
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InputError(f"concurrency must be between 1 and {MAX_CONCURRENCY:,}, got {concurrency}")
    if not 1 <= gpus <= MAX_DEVICES:
        raise InputError(f"--gpus must be between 1 and {MAX_DEVICES:,}, got {gpus}")
    if layout not in ("tp", "dp-attn"):
        raise InputError(f"--layout must be tp or dp-attn, got {layout!r}")
    warnings: list[str] = []
    spec = m.spec
    if spec.max_context and context > spec.max_context:
        warnings.append(f"context {context} exceeds the model's max_position_embeddings {spec.max_context}")
    kvd = (kv_dtype or default_kv_dtype(spec, engine)).lower()
    kv = kv_estimate(spec, engine, kvd)
    kv_info = KVInfo(engine=engine, kv_dtype=kvd, per_seq_bytes=kv.bytes_at(context),
                     growth_bytes_per_token=kv.growth_bytes_per_token(), fixed_bytes_per_seq=kv.fixed_bytes(),
                     read_bytes_per_token=kv.read_bytes_per_token(context))
    hw = load_hardware()
    rec_reports = _recurrent_reports(m, context, concurrency, settings, kvd, engine) if spec.is_hybrid else None
    if rec_reports:
        # Ollama / LM Studio / mlx-lm keep llama.cpp's state layout (deployment.recurrent_of)
        own = engine if engine in RECURRENT_ENGINES else "llamacpp"
        kv_info = kv_info.model_copy(update={"recurrent_state_bytes_per_seq": next(
            r.recurrent_state_bytes_per_seq for r in rec_reports if r.engine == own)})
    rows: list[QuantRow] = []
    default_q = (DEFAULT_QUANTS_MLX if engine == "mlx" else
                 DEFAULT_QUANTS_LLAMACPP_FAMILY if engine in ("ollama", "lmstudio") else
                 DEFAULT_QUANTS_IK_LLAMA if engine == "ik_llama" else DEFAULT_QUANTS)
    qlist = list(quants or default_q)
    accs = sorted(hw.accelerators.values(), key=lambda a: (a.memory_usable_bytes, a.key))
    ref = hw.accelerators[REFERENCE_ACCELERATOR]
    for q in qlist:
        scheme, w = resident_weights(m, q, engine, include_mtp=False)
        eng = _engine_for(scheme, engine, engine_explicit)
        kvq_dtype = kvd if eng == engine else None
        try:
            kv_estimate(spec, eng, kvq_dtype)
        except InputError:
            kvq_dtype = None
        scheme, w = resident_weights(m, q, eng, include_mtp=False)
        if not runs_on_vendor(eng, ref.vendor) or scheme.mlx:  # MLX: the per-quant column is for the largest Mac
            ref = max((a for a in accs if runs_on_vendor(eng, a.vendor)), key=lambda a: (a.memory_usable_bytes, a.key))
        ref_mem = memory_of(Deployment(model=m, quant=q, engine=eng, hardware=Hardware(ref, None, 1, 1),
                                       parallel=Parallel(), context=context, concurrency=concurrency,
                                       kv_dtype=kvq_dtype, settings=settings))
        single, multi = [], []
        for acc in accs:
            e1 = _device_engine(eng, acc, scheme.mlx)
            if e1 is None or unsupported(e1, spec, acc.arch, scheme_formats(scheme)):
                continue  # the engine cannot run this model / these weights there (the one support rule)
            ok, _ = _fits(m, q, e1, kvq_dtype if e1 == eng else None, acc, 1, context, concurrency, settings)
            if ok:
                single.append(acc.key)
                continue
            if acc.kind != "gpu":
                continue
            for n in DEVICE_COUNTS[1:]:
                ok, par = _fits(m, q, eng, kvq_dtype, acc, n, context, concurrency, settings)
                if ok:
                    multi.append(FitOption(accelerator=acc.key, count=n, parallel=par.label()))
                    break
        rexp = scheme.bits("routed_experts") if spec.is_moe else None
        _, w_mtp = resident_weights(m, q, eng, include_mtp=True)
        rows.append(QuantRow(quant=q, description=scheme.description, engine=eng, weights_bytes=w.total,
                             mtp_bytes=w_mtp.total - w.total,
                             kv_bytes=ref_mem.attention_kv_bytes, runtime_bytes=ref_mem.runtime_bytes,
                             recurrent_state_bytes=ref_mem.state_bytes,
                             total_bytes=w.total + ref_mem.kv_bytes + ref_mem.runtime_bytes,
                             routed_expert_bits=rexp, fits_single=single, fits_multi=multi))
    hw_report = None
    if gpu:
        acc = get_accelerator(gpu)
        q = qlist[0]
        scheme, _ = resident_weights(m, q, engine, include_mtp=False)
        eng = _engine_for(scheme, engine, engine_explicit)
        if acc.kind != "gpu" and not engine_explicit and not scheme.mlx:
            eng = "llamacpp"  # unified-memory boxes (Macs, Strix Halo, Spark) run llama.cpp
        par = parallel or (Parallel(tp=1, dp=gpus, ep=spec.is_moe and gpus > 1) if layout == "dp-attn"
                           else default_parallel(m, acc, gpus, eng))
        if par.world != gpus:
            raise InputError(f"parallel layout {par.label()} uses {par.world} devices, but --gpus is {gpus}")
        node = node_for(acc.key, gpus)
        per_node = min(node.accelerators_per_node, gpus) if node else gpus
        n_nodes = -(-gpus // per_node)
        if n_nodes * per_node != gpus:
            raise InputError(f"{gpus} devices do not fill whole {node.key if node else acc.key} nodes "
                             f"of {per_node}")
        offload = Offload()
        if cpu_moe_layers:
            n_moe = len(spec.moe_layers)
            if not n_moe:
                raise InputError(f"--n-cpu-moe: {m.key} has no MoE layers (nothing to offload)")
            if not 0 < cpu_moe_layers <= n_moe:
                raise InputError(f"--n-cpu-moe must be between 1 and the model's {n_moe} MoE layers, got {cpu_moe_layers}")
            offload = Offload(mode="stream" if eng == "vllm" else "cpu", dram_layers=cpu_moe_layers)
        hardware = Hardware(acc, node, n_nodes, per_node)
        if host is not None:
            cpu_host = host.resolve()
            hardware = replace(hardware, links=replace(links_for(hardware, par), host=cpu_host,
                                                       host_dram_bw=cpu_host.theoretical_bw_bytes_per_s))
        d = Deployment(model=m, quant=q, engine=eng, hardware=hardware, parallel=par,
                       context=context, concurrency=concurrency, offload=offload,
                       kv_dtype=None if kv_dtype is None or eng != engine else kvd, settings=settings,
                       spec_decode=spec_decode, workload=workload, prompt_tokens=prompt_tokens,
                       calibration=calibration)
        ev = evaluate(d)
        auto_layers = None
        if eng in ("ollama", "lmstudio") and not ev.memory.fits and acc.kind == "gpu" and gpus == 1 \
                and not cpu_moe_layers:
            # their automatic offload: the layers that fit stay on the GPU, the rest run on the CPU
            n = gpu_layers_that_fit(spec, ev.weights, ev.memory)
            if 0 < n < len(spec.main_layers):
                auto_layers = n
                ev = evaluate(replace(d, gpu_layers=n))
        mem, sp, pf = ev.memory, ev.decode, ev.prefill
        tr = trust(eng, acc, concurrency if workload is None else (workload.concurrency or 2), confidence,
                   offload=d.offload.mode != "none", spec=spec)
        notes = list(ev.notes)
        if auto_layers is not None:
            notes.append(f"{eng}'s automatic offload: {auto_layers} of {len(spec.main_layers)} layers on the GPU, "
                         f"the rest (and their KV) in host memory computed by the CPU "
                         f"({ev.host_used_bytes / GiB:,.1f} GiB of host memory); the figures below are for that "
                         "split (layer sizes taken as equal: an estimate)")
        # the one support rule `cheapest`, its checker and `export` apply (KTransformers when SGLang computes
        # offloaded experts on the CPU; the node's host CPU picks the kt-method)
        why = plan_unsupported(eng, spec, acc.arch, scheme, d.offload.mode, d.offload.dram_layers,
                               load_hardware().hosts[node.host].isa if node else None)
        if why:
            notes.insert(0, "WARNING: " + why)
        if mem.weights_bytes > mem.budget_bytes:
            notes.append("weights alone exceed the per-device budget: add devices, quantize further, or offload experts")
        why_host = host_dram_short(ev)
        if why_host:
            notes.insert(0, "WARNING: " + why_host)
        notes += _runtime_notes(eng, m, acc, gpus, ev)
        if spec_decode is not None:
            notes.append(f"speculative decoding: {spec_decode.method}, {spec_decode.num_tokens} draft tokens, "
                         f"mean acceptance length {spec_decode.accept_len:.2f} ({spec_decode.source})")
        st = ev.settings
        hw_report = HardwareReport(
            accelerator=acc.key, accelerator_name=acc.name, count=gpus, node=node.key if node else None,
            parallel=par.label(), quant=q, engine=eng, kv_dtype=ev.kv.kv_dtype,
            kv_per_seq_bytes=ev.kv.bytes_at(context),
            per_device=DeviceReport(capacity_bytes=mem.capacity_bytes, budget_bytes=mem.budget_bytes,
                                    weights_bytes=mem.weights_bytes, kv_bytes=mem.attention_kv_bytes,
                                    runtime_bytes=mem.runtime_bytes, headroom_bytes=mem.headroom_bytes,
                                    fits=mem.fits, recurrent_state_bytes=mem.state_bytes,
                                    recurrent_state_bytes_per_seq=mem.state_per_seq_bytes),
            max_context_tokens=ev.max_context_tokens, max_concurrency=ev.max_concurrency,
            # expected figures: the model's, times its regime's stored bias where the regime is biased
            # (uncertainty.Interval.expected; 1 elsewhere), so each lies inside its own interval
            decode=SpeedReport(tok_s_per_seq=expected_figure(tr.decode, sp.tok_s_per_seq),
                               tok_s_bound_per_seq=sp.tok_s_bound_per_seq,
                               tok_s_aggregate=expected_figure(tr.decode, sp.tok_s_aggregate), binding=sp.binding,
                               terms_s=sp.terms_s, ttft_s=expected_figure(tr.prefill, pf.ttft_s, time=True),
                               ttft_bound_s=pf.ttft_bound_s, prompt_tokens=pf.prompt_tokens,
                               cpu_experts=_cpu_report(ev, eng),
                               **_speed_bounds(tr, sp.tok_s_per_seq, pf.ttft_s)),
            settings=SettingsReport(max_model_len=st.max_model_len, max_num_seqs=st.max_num_seqs,
                                    max_num_batched_tokens=st.max_num_batched_tokens,
                                    gpu_memory_utilization=st.gpu_memory_utilization,
                                    mem_fraction_static=st.mem_fraction_static, block_size=st.block_size),
            spec_decode=None if spec_decode is None else SpecReport(
                method=spec_decode.method, num_tokens=spec_decode.num_tokens, accept_len=spec_decode.accept_len,
                draft_model=spec_decode.draft_model, source=spec_decode.source),
            serving=None if ev.serving is None or workload is None else _serving_report(ev.serving, workload, tr),
            calibration=None if ev.calibration is None else CalibrationReport(
                decode=ev.calibration.decode, decode_runs=ev.calibration.decode_runs,
                decode_scope=ev.calibration.decode_scope, prefill=ev.calibration.prefill,
                prefill_runs=ev.calibration.prefill_runs, prefill_scope=ev.calibration.prefill_scope,
                profile=ev.calibration.profile, text=ev.calibration.describe()),
            trust=_trust_report(tr), notes=notes)
    return EstimateResult(model=_model_info(m), context=context, concurrency=concurrency, kv=kv_info, quants=rows,
                          hardware=hw_report, warnings=warnings, recurrent_state=rec_reports)


RECURRENT_ENGINES = ("vllm", "sglang", "llamacpp")


def host_dram_short(ev: Evaluation) -> str | None:
    """Why the plan's host memory does not fit the host's stated DRAM (None when it fits or no size was given): the
    offloaded experts plus the reserve for the OS and engine (factors.HOST_RESERVED) above the installed DRAM. A
    llama.cpp-family engine maps the GGUF (mmap), so the experts that do not fit are read from disk again on every
    token that routes to them; the other engines load the experts into memory and fail."""
    host = ev.links.host
    if host is None or not host.dram_bytes or ev.host_used_bytes <= host.dram_bytes:
        return None
    return (f"host memory: the plan keeps {ev.host_used_bytes / 1e9:,.1f} GB in host DRAM (offloaded experts + "
            f"{F.HOST_RESERVED_BYTES / GiB:.0f} GiB for the OS and engine) but the host has {host.dram_bytes / 1e9:,.0f} "
            "GB: llama.cpp-family engines would page the experts that do not fit from disk (mmap) on every token, "
            "others fail to load; offload fewer expert layers or add DRAM. The speeds below assume they fit")


def _cpu_report(ev: Evaluation, engine: str) -> CpuExpertsReport | None:
    c, pf, h = ev.decode.cpu_experts, ev.prefill, ev.links.host
    if c is None:
        return None
    combine = ("overlapped with the layer's GPU work (KTransformers)" if overlaps_gpu(engine)
               else "after the layer's GPU work (serial)")
    return CpuExpertsReport(host=h.name if h else "generic", time_s=c.time_s, exposed_s=c.exposed_s, dram_s=c.dram_s,
                            compute_s=c.compute_s, dram_bw_bytes_per_s=c.bandwidth.bytes_per_s,
                            dram_bw_theoretical_bytes_per_s=c.bandwidth.theoretical,
                            dram_bw_basis=c.bandwidth.basis, cpu_flops_per_s=c.flops_per_s,
                            isa=h.isa if h else "avx2", binding=c.binding, combine=combine,
                            prefill_path=pf.expert_path, prefill_stream_s=pf.expert_stream_s,
                            prefill_cpu_s=pf.expert_cpu_s)


def _recurrent_reports(m: ResolvedModel, context: int, concurrency: int, settings: EngineSettings, kv_dtype: str,
                       engine: str) -> list[RecurrentStateReport]:
    """The recurrent state of a hybrid model as each engine allocates it (TP 1; the chosen engine at `kv_dtype`,
    the others at their default KV dtype)."""
    out = []
    # the three engines with recurrent-state rules of their own (Ollama / LM Studio run llama.cpp's; mlx-lm's are
    # approximated by llama.cpp's, optimizer/estimate/deployment.recurrent_of)
    for eng in RECURRENT_ENGINES:
        kvd = kv_dtype if eng == engine else default_kv_dtype(m.spec, eng)
        kv = kv_estimate(m.spec, eng, kvd)
        d = Deployment(model=m, quant="native", engine=eng, hardware=Hardware(get_accelerator(REFERENCE_ACCELERATOR),
                                                                            None), parallel=Parallel(),
                       context=context, concurrency=concurrency, kv_dtype=kvd, settings=settings)
        r = recurrent_of(d, kv)
        if r is None:
            continue
        kv_seq = hybrid_kv_per_seq(kv, r, context)
        out.append(RecurrentStateReport(
            engine=eng, layers=r.layers, conv_dtype=r.conv_dtype, ssm_dtype=r.ssm_dtype,
            conv_bytes_per_layer=r.conv_bytes_per_layer, ssm_bytes_per_layer=r.ssm_bytes_per_layer,
            state_set_bytes=r.set_bytes, copies_per_seq=r.copies, recurrent_state_bytes_per_seq=r.per_seq_bytes,
            recurrent_state_bytes=r.per_seq_bytes * concurrency, kv_cache_bytes_per_seq=kv_seq,
            kv_cache_bytes=kv_seq * concurrency, vllm_block_size=r.vllm_block_size,
            vllm_padded_page_bytes=r.vllm_padded_page_bytes, vllm_group_size=r.vllm_group_size,
            vllm_padding_layers=r.vllm_padding_layers, sglang_state_pool_share=r.separate_pool_share,
            sources=list(r.sources)))
    return out


def _bounds(prefix: str, x: float | None, iv: Interval | None, time: bool = False) -> dict[str, float | None]:
    """{prefix_low, prefix_high} of a figure (nothing without an interval, None for a non-finite figure); `time`:
    the figure is a time and `iv` a speed interval (Interval.time_bounds)."""
    if iv is None:
        return {}
    if x is None or not math.isfinite(x):
        return {f"{prefix}_low": None, f"{prefix}_high": None}
    lo, hi = iv.time_bounds(x) if time else iv.bounds(x)
    return {f"{prefix}_low": lo, f"{prefix}_high": hi}


def _speed_bounds(tr: Trust, tok_s: float, ttft_s: float) -> dict[str, float | None]:
    """Low/high of decode tok/s and of one prompt's TTFT (a time, from the prefill speed interval)."""
    return {**_bounds("tok_s_per_seq", tok_s, tr.decode), **_bounds("ttft_s", ttft_s, tr.prefill, time=True)}


def _trust_report(tr: Trust) -> TrustReport:
    def one(iv: Interval | None) -> IntervalReport | None:
        return None if iv is None else IntervalReport(confidence=iv.confidence, regime=iv.regime, n_rows=iv.n_rows,
                                                      n_sources=iv.n_sources, bias=iv.bias)
    return TrustReport(decode=one(tr.decode), prefill=one(tr.prefill), ttft=one(tr.ttft),
                       throughput=one(tr.throughput), tpot=one(tr.tpot))


def _runtime_notes(eng: str, m: ResolvedModel, acc: Accelerator, gpus: int, ev) -> list[str]:
    """What Ollama / LM Studio / mlx-lm would do on their own with this deployment (defaults, automatic offload)."""
    out: list[str] = []
    mem, spec = ev.memory, m.spec
    if eng == "ollama":
        # Ollama sums the devices' TotalMemory (nvidia-smi's total; Metal's recommended working set on Macs):
        # the catalogue's memory_usable_bytes
        auto = ollama_default_num_ctx(acc.memory_usable_bytes * gpus, spec.max_context)
        out.append(f"Ollama's automatic num_ctx on {gpus}x {acc.key} is {auto:,} (VRAM tier, server/routes.go); "
                   f"`rigopt export` writes PARAMETER num_ctx {ev.deployment.context:,} and "
                   f"OLLAMA_NUM_PARALLEL={ev.settings.max_num_seqs}: llama-server gets -c "
                   f"{ev.deployment.context * ev.settings.max_num_seqs:,} (num_ctx x parallel)")
    if eng in ("ollama", "lmstudio") and not mem.fits and ev.deployment.gpu_layers is None:
        n = gpu_layers_that_fit(spec, ev.weights, mem)
        out.append(f"does not fit on the GPU: {eng}'s automatic offload (llama-server fit) would keep about {n} of "
                   f"{len(spec.main_layers)} layers on the GPU and run the rest on the CPU (estimate; modelled for "
                   "one discrete GPU only)")
    if eng == "mlx":
        out.append(f"mlx-lm: {mem.budget_bytes / GiB:,.1f} GiB Metal wired limit (macOS default ~75% of RAM; "
                   "`sudo sysctl iogpu.wired_limit_mb=N` raises it, mlx_lm.server wires the recommended size)")
    return out


def _serving_report(s, w: Workload, tr: Trust | None = None) -> ServingReport:
    def fin(x: float) -> float | None:
        return x if x == x and x not in (float("inf"), float("-inf")) else None
    extra: dict[str, float | None] = {}
    dec = ttf = thr = None
    dec_speed = True
    if tr is not None:
        (dec, dec_speed), ttf, thr = tr.served_tpot(), tr.ttft, tr.throughput
        extra = {**_bounds("tpot_s", fin(s.tpot_s), dec, time=dec_speed),
                 **_bounds("ttft_s", fin(s.ttft_s), ttf), **_bounds("output_tok_s", s.output_tok_s, thr)}
    # expected figures carry their regime's bias correction (expected_figure; 1 in unbiased regimes)
    tpot, ttft = fin(expected_figure(dec, s.tpot_s, time=dec_speed)), fin(expected_figure(ttf, s.ttft_s))
    return ServingReport(**extra, isl=w.isl, osl=w.osl, concurrency=w.concurrency, rate_rps=w.rate_rps,
                         prefix_hit=w.prefix_hit, stable=s.stable, tpot_s=tpot, ttft_s=ttft,
                         ttft_p90_s=fin(s.ttft_p90_s), request_rate_rps=s.request_rate_rps,
                         output_tok_s=expected_figure(thr, s.output_tok_s), total_tok_s=s.total_tok_s,
                         output_tok_s_per_gpu=expected_figure(thr, s.output_tok_s_per_gpu),
                         total_tok_s_per_gpu=s.total_tok_s_per_gpu,
                         decoding_seqs=s.decoding_seqs, admitted_seqs=s.admitted_seqs,
                         prefill_share=s.prefill_share, binding=s.binding)
