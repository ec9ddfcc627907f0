"""`rigopt estimate`: combine catalogue, architecture and physics into one result object.

JSON schema id: "rigopt.estimate/1" (see README). Field names carry units; bytes are exact integers-as-floats.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from optimizer.catalog.devices import device_of, node_for
from optimizer.catalog.hardware import get_accelerator, load_hardware
from optimizer.catalog.hardware_schema import Accelerator
from optimizer.catalog.models import ResolvedModel
from optimizer.errors import InputError
from optimizer.estimate.kv import check_engine, default_kv_dtype, kv_estimate
from optimizer.estimate.memory import Parallel, device_memory, max_concurrency, max_context
from optimizer.estimate.schemes import Scheme, get_scheme
from optimizer.estimate.speed import Links, decode_speed, kernel_bits, prefill_time
from optimizer.solver.links import plan_links
from optimizer.solver.support import unsupported
from optimizer.estimate.weights import weights_of
from optimizer.units import MAX_CONCURRENCY, MAX_DEVICES

SCHEMA_ID = "rigopt.estimate/1"
DEFAULT_QUANTS = ("native", "bf16", "fp8", "nvfp4", "int4", "q8_0", "q4_k_m", "q2_k", "iq2_xxs", "iq1_s")
DEVICE_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128)


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
    engine: str
    kv_dtype: str
    per_seq_bytes: float
    growth_bytes_per_token: float
    fixed_bytes_per_seq: float
    read_bytes_per_token: float


class FitOption(_M):
    accelerator: str
    count: int
    parallel: str


class QuantRow(_M):
    quant: str
    description: str
    engine: str
    weights_bytes: float
    kv_bytes: float
    runtime_bytes: float
    total_bytes: float
    routed_expert_bits: float | None
    fits_single: list[str]
    fits_multi: list[FitOption]


class DeviceReport(_M):
    capacity_bytes: float
    budget_bytes: float
    weights_bytes: float
    kv_bytes: float
    runtime_bytes: float
    headroom_bytes: float
    fits: bool


class SpeedReport(_M):
    tok_s_per_seq: float
    tok_s_bound_per_seq: float
    tok_s_aggregate: float
    binding: str
    terms_s: dict[str, float]
    ttft_s: float
    ttft_bound_s: float
    prompt_tokens: int


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
    if engine == "llamacpp":
        return Parallel(tp=1, pp=count)  # llama.cpp splits layers across devices
    tp = 1
    while tp * 2 <= min(count, per_node) and count % (tp * 2) == 0:
        tp *= 2
    if domain < tp and domain > 1:
        pass  # TP over PCIe is allowed, only slower
    rest = count // tp
    if m.spec.is_moe:
        return Parallel(tp=tp, dp=rest, ep=count > 1)
    return Parallel(tp=tp, pp=rest)


def _compute_bits(scheme: Scheme, acc: Accelerator, moe: bool) -> float:
    """Math precision a kernel can use: the weights' own width when the device has native support."""
    return kernel_bits({f for _, f in scheme.mix("routed_experts" if moe else "dense_ffn")},
                       acc.native_fp8, acc.native_fp4)


def _engine_for(scheme: Scheme, engine: str, explicit: bool) -> str:
    if scheme.gguf and not explicit:
        return "llamacpp"
    return engine


def _weights_for(m: ResolvedModel, scheme_name: str):
    scheme = get_scheme(scheme_name, m.storage)
    return scheme, weights_of(m.spec, scheme, m.weights_file, scheme_name)


def _fits(m, w, kv, engine, acc: Accelerator, count: int, context: int, concurrency: int) -> tuple[bool, Parallel]:
    par = default_parallel(m, acc, count, engine)
    mem = device_memory(m.spec, w, kv, engine=engine, capacity_bytes=acc.memory_usable_bytes, context=context,
                        concurrency=concurrency, par=par, unified=acc.kind == "unified")
    return mem.fits, par


def estimate(m: ResolvedModel, *, context: int, concurrency: int = 1, quants: list[str] | None = None,
             kv_dtype: str | None = None, engine: str = "vllm", engine_explicit: bool = False,
             gpu: str | None = None, gpus: int = 1, parallel: Parallel | None = None,
             prompt_tokens: int | None = None) -> EstimateResult:
    engine = check_engine(engine)
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InputError(f"concurrency must be between 1 and {MAX_CONCURRENCY:,}, got {concurrency}")
    if not 1 <= gpus <= MAX_DEVICES:
        raise InputError(f"--gpus must be between 1 and {MAX_DEVICES:,}, got {gpus}")
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
    rows: list[QuantRow] = []
    qlist = list(quants or ([q for q in DEFAULT_QUANTS]))
    accs = sorted(hw.accelerators.values(), key=lambda a: (a.memory_usable_bytes, a.key))
    for q in qlist:
        scheme, w = _weights_for(m, q)
        eng = _engine_for(scheme, engine, engine_explicit)
        try:
            kvq = kv if eng == engine else kv_estimate(spec, eng, None if kv_dtype is None else kvd)
        except InputError:
            kvq = kv_estimate(spec, eng, None)
        ref_cap = 80e9
        mem1 = device_memory(spec, w, kvq, engine=eng, capacity_bytes=ref_cap, context=context,
                             concurrency=concurrency, par=Parallel())
        single, multi = [], []
        for acc in accs:
            ok, _ = _fits(m, w, kvq, eng if acc.kind == "gpu" else "llamacpp", acc, 1, context, concurrency)
            if ok:
                single.append(acc.key)
                continue
            if acc.kind != "gpu":
                continue
            for n in DEVICE_COUNTS[1:]:
                ok, par = _fits(m, w, kvq, eng, acc, n, context, concurrency)
                if ok:
                    multi.append(FitOption(accelerator=acc.key, count=n, parallel=par.label()))
                    break
        rexp = scheme.bits("routed_experts") if spec.is_moe else None
        rows.append(QuantRow(quant=q, description=scheme.description, engine=eng, weights_bytes=w.total,
                             kv_bytes=mem1.kv_bytes, runtime_bytes=mem1.runtime_bytes,
                             total_bytes=w.total + mem1.kv_bytes + mem1.runtime_bytes,
                             routed_expert_bits=rexp, fits_single=single, fits_multi=multi))
    hw_report = None
    if gpu:
        acc = get_accelerator(gpu)
        q = qlist[0]
        scheme, w = _weights_for(m, q)
        eng = _engine_for(scheme, engine, engine_explicit)
        if acc.kind != "gpu" and not engine_explicit:
            eng = "llamacpp"  # unified-memory boxes (Macs, Strix Halo, Spark) run llama.cpp

        par = parallel or default_parallel(m, acc, gpus, eng)
        if par.world != gpus:
            raise InputError(f"parallel layout {par.label()} uses {par.world} devices, but --gpus is {gpus}")
        node = node_for(acc.key, gpus)
        per_node = node.accelerators_per_node if node else gpus
        kvh = kv_estimate(spec, eng, None if kv_dtype is None or eng != engine else kvd, tp=par.tp)
        mem = device_memory(spec, w, kvh, engine=eng, capacity_bytes=acc.memory_usable_bytes, context=context,
                            concurrency=concurrency, par=par, unified=acc.kind == "unified")
        n_nodes = -(-gpus // per_node)
        links = plan_links(node, n_nodes, par) if node is not None else Links()
        dev = device_of(acc)
        bits = _compute_bits(scheme, acc, spec.is_moe)
        sp = decode_speed(spec, w, kvh, dev, par=par, context=context, batch=concurrency, links=links,
                          compute_bits=bits, n_nodes=n_nodes, engine=eng)
        pf = prefill_time(spec, w, dev, par=par, prompt_tokens=prompt_tokens or context, links=links,
                          compute_bits=bits, engine=eng)
        mc = max_context(kvh, mem.kv_available_bytes, -(-concurrency // par.dp), pp=par.pp,
                         reserve_per_seq=mem.reserve_per_seq_bytes)
        notes = list(mem.notes)
        why = unsupported(eng, spec.family, acc.arch)
        if why:
            notes.insert(0, "WARNING: " + why)
        if mem.weights_bytes > mem.budget_bytes:
            notes.append("weights alone exceed the per-device budget: add devices, quantize further, or offload experts")
        hw_report = HardwareReport(
            accelerator=acc.key, accelerator_name=acc.name, count=gpus, node=node.key if node else None,
            parallel=par.label(), quant=q, engine=eng, kv_dtype=kvh.kv_dtype, kv_per_seq_bytes=kvh.bytes_at(context),
            per_device=DeviceReport(capacity_bytes=mem.capacity_bytes, budget_bytes=mem.budget_bytes,
                                    weights_bytes=mem.weights_bytes, kv_bytes=mem.kv_bytes,
                                    runtime_bytes=mem.runtime_bytes, headroom_bytes=mem.headroom_bytes,
                                    fits=mem.fits),
            max_context_tokens=min(mc, spec.max_context or mc), max_concurrency=max_concurrency(mem, par.dp),
            decode=SpeedReport(tok_s_per_seq=sp.tok_s_per_seq, tok_s_bound_per_seq=sp.tok_s_bound_per_seq,
                               tok_s_aggregate=sp.tok_s_aggregate, binding=sp.binding, terms_s=sp.terms_s,
                               ttft_s=pf.ttft_s, ttft_bound_s=pf.ttft_bound_s, prompt_tokens=pf.prompt_tokens),
            notes=notes)
    return EstimateResult(model=_model_info(m), context=context, concurrency=concurrency, kv=kv_info, quants=rows,
                          hardware=hw_report, warnings=warnings)
