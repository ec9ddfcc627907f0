"""Enumerate deployment candidates and estimate each in floats (no solver here).

A candidate fixes hardware (node type, node count, GPUs used), engine, quantization, KV dtype and parallel
layout. What stays open is the number x of MoE expert layers whose routed experts live in host DRAM. Memory,
host DRAM and cost are linear in x (the physics is linear in the offloaded fraction), so a candidate carries a
value at x = 0 and a slope per offloaded layer; the decode step time is a max of lines in x (exactly two lines
under uniform routing, a convex piecewise-linear interpolation when load-aware tiering applies).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from itertools import pairwise
from typing import Any

from optimizer.cache import BoundedCache
from optimizer.catalog.hardware import get_accelerator, load_hardware
from optimizer.catalog.hardware_schema import Accelerator, NodeType
from optimizer.catalog.host_spec import parse_host
from optimizer.catalog.models import ResolvedModel
from optimizer.catalog.offers import unit_counts, unit_offer, unit_power_watts
from optimizer.catalog.ollama_tags import load_ollama_tags
from optimizer.engines import DEFAULT_SOLVER_ENGINES, is_llamacpp, runs_on_vendor
from optimizer.errors import InputError
from optimizer.estimate import factors as F
from optimizer.estimate.deployment import (
    Deployment,
    EngineSettings,
    Evaluation,
    Evaluator,
    Hardware,
    Offload,
    SpecDecode,
    default_spec_decode,
    quality_of,
    running_flag,
)
from optimizer.estimate.kv import default_kv_dtype
from optimizer.estimate.schemes import IK_QUANTS, MOE_MIXES, SCHEMES, get_scheme
from optimizer.estimate.speed import SpeedEstimate
from optimizer.estimate.uncertainty import planning_ratios
from optimizer.layout import CpuHost, Parallel
from optimizer.moe.imbalance import expected_imbalance, kt_experts_per_layer, load_aware_gpu_share
from optimizer.solver.query import Query
from optimizer.solver.support import format_unsupported, plan_unsupported, scheme_formats, unsupported
from optimizer.topology_links import fast_domain as node_fast_domain
from optimizer.topology_links import plan_links

DEFAULT_QUANTS_ENGINE = ("native", "fp8", "nvfp4", "int4", "bf16")
DEFAULT_QUANTS_GGUF = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "iq4_xs", "q3_k_m", "q2_k", "iq2_xxs", "iq1_s",
                       "q4_k_m-moe", "q2_k-moe", "iq2_xxs-moe")
# mlx-lm presets tried for the mlx engine ("native" = the checkpoint's own dtype, bf16 for most)
DEFAULT_QUANTS_MLX = ("native", "mlx8", "mlx6", "mlx-mixed-4-6", "mlx4", "mlx-mixed-3-6", "mlx3", "mlx-mixed-2-6")
UNSUSTAINABLE_S = 1e4  # stands for "not sustainable" in the table's time columns (any target excludes it)


@dataclass(frozen=True)
class Candidate:
    id: str
    node: str
    accelerator: str
    n_nodes: int
    gpus_per_node: int
    owned: bool
    engine: str
    quant: str
    kv_dtype: str
    par: Parallel
    offload_mode: str            # none | cpu | stream
    max_offload_layers: int      # x ranges over min_offload_layers..max_offload_layers
    offload_order: tuple[int, ...]  # main-layer indices in the order they are offloaded
    cost: float                  # objective value with no DRAM purchase (USD, USD/h or W)
    capex_usd: float | None
    usd_per_hour: float | None
    power_watts: float
    dram_base_bytes: float       # host DRAM per node included in `cost`
    dram_max_bytes: float        # most DRAM a node can hold (= base when none can be bought)
    dram_usd_per_byte: float     # objective cost per extra DRAM byte (per node, times n_nodes)
    budget_bytes: float          # per-device engine budget
    mem0: float                  # per-device bytes used at x = 0
    mem_slope: float             # bytes freed per offloaded layer (<= 0 means grows)
    host_fixed: float            # host bytes needed at x = 0 (per node)
    host_slope: float            # host bytes per offloaded layer (per node)
    step_lines: tuple[tuple[float, float, float], ...]  # decode step (s) = max over lines of a + b*x + c*z
    ttft0: float
    ttft_slope: float            # chord slope: an upper bound of the (convex) TTFT between x = 0 and max
    expert_bits: float
    attn_bits: float
    mean_bits: float = 0.0
    max_nvme_layers: int = 0     # z ranges over 0..max_nvme_layers (expert layers read from NVMe by the CPU), x + z <= max
    nvme_capacity_bytes: float = 0.0
    ttft_nvme_slope: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    spec_decode: SpecDecode | None = None   # speculative decoding the row assumes
    settings: EngineSettings = EngineSettings()
    min_offload_layers: int = 0  # SGLang runs the model on this GPU only through KTransformers: x + z >= this

    # ---- float evaluation at x (used by the greedy hint, the oracle and the relaxation report) ----
    def mem(self, x: float, z: float = 0) -> float:
        return self.mem0 - self.mem_slope * (x + z)

    def host(self, x: float) -> float:
        return self.host_fixed + self.host_slope * x

    def step_time(self, x: float, z: float = 0) -> float:
        return max(a + b * x + c * z for a, b, c in self.step_lines)

    def ttft(self, x: float, z: float = 0) -> float:
        return self.ttft0 + self.ttft_slope * x + self.ttft_nvme_slope * z

    def nvme(self, z: float) -> float:
        return self.host_slope * z

    def points(self) -> Iterator[tuple[int, int]]:
        """Every (x, z) offload split: x expert layers in host DRAM, z on NVMe."""
        for x in range(self.max_offload_layers + 1):
            for z in range(min(self.max_nvme_layers, self.max_offload_layers - x) + 1):
                if x + z >= self.min_offload_layers:
                    yield x, z

    def extra_dram(self, x: float) -> float:
        return max(0.0, self.host(x) - self.dram_base_bytes)

    def total_cost(self, x: float) -> float:
        return self.cost + self.extra_dram(x) * self.dram_usd_per_byte * self.n_nodes


def _quants(q: Query, gguf: bool, m: ResolvedModel | None = None, mlx: bool = False, ik: bool = False) -> list[str]:
    """The quantizations an engine kind tries: GGUF presets (llama.cpp family; ik: also ik_llama.cpp's own
    types), MLX presets (mlx) or the checkpoint formats of vLLM/SGLang; "native" counts as MLX- and
    engine-servable, never as GGUF."""
    fmt = getattr(m.weights_file, "format", None) if m is not None else None
    if fmt == "gguf":  # a GGUF file is served as it is, by the llama.cpp family only
        return ["native"] if gguf and (not q.quants or "native" in q.quants) else []
    names = q.quants or list((DEFAULT_QUANTS_GGUF + (IK_QUANTS if ik else ())) if gguf else DEFAULT_QUANTS_MLX if mlx
                             else DEFAULT_QUANTS_ENGINE)
    want = "gguf" if gguf else "mlx" if mlx else "engine"
    out = []
    dense = m is not None and not m.spec.is_moe
    for n in names:
        key = n.lower()
        s = SCHEMES.get(key)
        if dense and key in MOE_MIXES:
            continue  # no routed experts: the MoE mix would be Q8_0 with a misleading label
        if key == "native":
            ok = want != "gguf"
        elif s is None:
            ok = want == "engine"   # an unknown name: get_scheme rejects it later
        elif s.ik:
            ok = want == "gguf" and ik  # ik_llama.cpp's own types: its engine only
        elif s.gguf:
            ok = want == "gguf"
        elif s.mlx:
            ok = want == "mlx"
        else:
            ok = want == "engine" or (want == "mlx" and key == "bf16")  # MLX loads BF16 checkpoints as they are
        if ok:
            out.append(key)
    return out


def _engines_for(acc: Accelerator, q: Query) -> list[str]:
    """Engines tried on a node: unified-memory boxes run the llama.cpp family (and mlx on Apple silicon);
    mlx never runs off Apple silicon (optimizer/engines.py runs_on_vendor)."""
    allowed = q.engines or list(DEFAULT_SOLVER_ENGINES)
    out = [e for e in allowed if runs_on_vendor(e, acc.vendor)]
    if acc.kind == "unified":
        return [e for e in out if is_llamacpp(e) or e == "mlx"]
    return out


def layouts(m: ResolvedModel, engine: str, n_nodes: int, g: int, fast: int) -> list[Parallel]:
    """Parallel layouts worth trying. MoE models get both TP inside the fast domain (+ DP/EP across it) and
    attention data parallelism (TP1 x DP world with EP): MLA/V4 KV is replicated on every rank of a TP group but
    not across DP ranks, so DP attention holds up to `world` times more sequences per GPU."""
    world = n_nodes * g
    if engine == "llamacpp":
        return [Parallel(tp=1, pp=g)] if n_nodes == 1 else []
    if is_llamacpp(engine):
        # Ollama / LM Studio: one machine; Ollama splits layers over the GPUs of one library
        # (server/sched.go selectLlamaServerPlacement), LM Studio likewise
        return [Parallel(tp=1, pp=g)] if n_nodes == 1 else []
    if engine == "mlx":
        return [Parallel()] if n_nodes == 1 and g == 1 else []  # one Mac (mlx.distributed is not modelled)
    if engine == "sglang" and n_nodes > 1:
        return []  # SGLang has no multi-node DP replicas (sglang 0.5.23 arg_groups/validation_hook.py); one engine over N nodes is not modelled
    t = 1
    limit = min(g, fast) if fast > 1 else g  # TP over PCIe inside a box is allowed (slower), never across nodes
    while t * 2 <= limit and g % (t * 2) == 0:
        t *= 2
    out: list[Parallel] = []
    if m.spec.is_moe:
        out.append(Parallel(tp=t, dp=world // t, ep=world > 1))
        if t > 1:
            out.append(Parallel(tp=1, dp=world, ep=True))  # DP attention
        if n_nodes > 1 and engine == "vllm":
            out.append(Parallel(tp=t, pp=n_nodes * (g // t), ep=g // t > 1 or t > 1))
    else:
        out.append(Parallel(tp=t, pp=world // t))
    return out


def unit_costs(node_key: str, n_nodes: int, g: int, owned: bool) -> tuple[float | None, float | None, float]:
    """(capex USD, USD/h, watts) of `n_nodes` units of `g` GPUs of a node type, priced from the catalogue's offers
    (optimizer/catalog/offers.py: the cheapest server or cloud instance of exactly that size; the fleet solver
    prices its replicas by the same rule). Owned hardware costs nothing to buy or rent."""
    buy, rent = unit_offer(node_key, g, "capex"), unit_offer(node_key, g, "hourly")
    capex = 0.0 if owned else (buy.capex_usd * n_nodes if buy is not None and buy.capex_usd is not None else None)
    hourly = 0.0 if owned else (rent.usd_per_hour * n_nodes if rent is not None and rent.usd_per_hour else None)
    return capex, hourly, unit_power_watts(node_key, g) * n_nodes


def _node_options(q: Query) -> list[tuple[NodeType, list[int], bool, float]]:
    """(node, node counts to try, owned?, base DRAM bytes per node)."""
    hw = load_hardware()
    allowed = None
    if q.gpus:
        allowed = {get_accelerator(g).key for g in q.gpus}
    out = []
    for node in sorted(hw.nodes.values(), key=lambda n: n.key):
        acc = hw.accelerators[node.accelerator]
        if allowed is not None and acc.key not in allowed:
            continue
        if q.owned is not None:
            have = q.owned.accelerators.get(acc.key, 0)
            if have < node.accelerators_per_node or node.accelerators_per_node > 8:
                continue
            # the owned box: exactly the owned GPU count, or fewer when that node type exists
            dram = float(q.owned.dram_bytes or node.dram_bytes)
            out.append((node, [1], True, dram))
            continue
        multi = node.scaleup_domain in ("switch",) or node.accelerators_per_node >= 8
        counts = node_counts(q.max_nodes) if multi and node.nic else [1]
        out.append((node, counts, False, float(node.dram_bytes)))
    return out


def _units(q: Query) -> Iterator[tuple[NodeType, list[int], bool, float, int]]:
    """(node, node counts, owned?, base DRAM bytes per node, GPUs per node): every size of unit the catalogue
    sells or rents (an 8-slot server with 1, 2 or 4 GPUs, a 1-GPU cloud instance) besides the whole node; a
    partly filled server or an instance smaller than its node type is one unit (it is never joined with others)."""
    for node, counts, owned, dram in _node_options(q):
        apn = node.accelerators_per_node
        if owned:
            yield node, counts, owned, dram, apn
            continue
        for g in unit_counts(node.key, q.objective):
            yield node, counts if g == apn else [1], owned, dram, g


def node_counts(max_nodes: int) -> list[int]:
    """Node counts tried: every count up to 16, then multiples of 8 (the sizes clusters are built in)."""
    return [n for n in range(1, max_nodes + 1) if n <= 16 or n % 8 == 0]


def enumerate_candidates(q: Query, m: ResolvedModel) -> list[Candidate]:
    """Every candidate row, each with its speed model evaluated, sorted by id."""
    rows = [c for p in enumerate_pending(q, m, lazy=False) if (c := p.finish()) is not None]
    rows.sort(key=lambda c: c.id)
    return rows


def enumerate_pending(q: Query, m: ResolvedModel, lazy: bool = True) -> list[Pending]:
    """Every candidate row after its memory tests, in enumeration order; `enumerate_candidates` is these rows
    finished (those whose finish is not None), sorted by id.

    A larger node count of a layout family is tried only while no smaller count of that family meets every
    target (`_meets_all`), which needs the smaller row's speed model: rows whose family grows further get their
    decode figures here (`Pending.probe`; the whole speed model when there is a TTFT target); with `lazy` every
    other row is left to its caller (the bounded search finishes only the rows that can reach the answer,
    optimizer/solver/bounded.py). With a served workload a row exists only when its rate is sustainable (a
    speed-model figure), so `lazy` is ignored then: every row is finished."""
    lazy = lazy and q.workload is None
    hw = load_hardware()
    spec = m.spec
    moe_idx = tuple(i for i, l in enumerate(spec.main_layers) if l.is_moe)
    out: list[Pending] = []
    ratios: dict[tuple[str, str, bool], tuple[float, float]] = {}
    for node, counts, owned, dram_base, g in _units(q):
        acc = hw.accelerators[node.accelerator]
        for engine in _engines_for(acc, q):
            if unsupported(engine, spec, acc.arch) and (engine != "sglang" or unsupported(engine, spec, acc.arch, kt=True)):
                continue  # the engine has no kernels for this model on this GPU (optimizer/solver/support.py)
            gguf = is_llamacpp(engine)
            qnames = _quants(q, gguf, m, mlx=engine == "mlx", ik=engine == "ik_llama")
            if engine == "lmstudio" and acc.vendor == "apple":  # LM Studio's MLX engine on a Mac
                qnames += [n for n in _quants(q, False, m, mlx=True) if n not in qnames]
            if engine == "ollama":  # the quantizations its library tags download (gpt-oss: native MXFP4)
                tagged = [t.quant for t in load_ollama_tags() if t.model == m.key]
                if tagged and not q.quants:
                    # what `ollama pull` can fetch; another quantization needs the user's own GGUF (--quant with
                    # `export --model-path`), which the export asks for when no tag matches
                    qnames = list(dict.fromkeys(tagged))
                else:
                    qnames += [t for t in tagged if t not in qnames and (not q.quants or t in q.quants)]
            fast = fast_domain(node)
            # the families each node count tries, and whether a larger count tries that family again
            fams_at = {n: {_family(par) for par in layouts(m, engine, n, g, fast)} for n in counts}
            for qname in qnames:
                try:
                    scheme = get_scheme(qname, m.storage)  # a quantization the model's storage cannot take is skipped
                except InputError:
                    continue
                if format_unsupported(engine, acc.arch, scheme_formats(scheme)):
                    continue  # no kernel for these weights on this GPU (V100: no FP8/FP4; Gaudi: FP8 only)
                # (the full rule, KTransformers included, is applied per candidate in _prepare)
                quality = quality_of(m, qname)  # computed once per (model, quant)
                exp_bits, attn_bits = quality[0], quality[1]
                if exp_bits < q.min_expert_bits or attn_bits < q.min_attn_bits:
                    continue
                kv_choices = q.kv_dtypes or [default_kv_dtype(spec, engine)]
                for kvd in kv_choices:
                    feasible_family: set[tuple[int, bool, bool, bool]] = set()
                    for k, n_nodes in enumerate(counts):
                        for par in layouts(m, engine, n_nodes, g, fast):
                            fam = _family(par)
                            if fam in feasible_family:
                                continue  # a smaller node count of this family already meets every target
                            # whether this row meets every target matters only if a larger count tries its family
                            grows = not lazy or any(fam in fams_at[n] for n in counts[k + 1:])
                            met = False
                            for spec_dec in _spec_options(q, m, engine):
                                at_zero: dict[str, Any] = {}  # c's evaluation at no offload, for its twin
                                p = _prepare(q, m, node, acc, n_nodes, g, owned, dram_base, engine, qname, kvd, par,
                                             moe_idx, quality, spec_dec, at_zero=at_zero, ratios=ratios)
                                if p is None or (not lazy and p.finish() is None):
                                    continue  # no such row (or, with a workload, its rate is not sustainable)
                                if q.max_budget is not None and p.cost > q.max_budget:
                                    met = True  # over budget already; more nodes only cost more
                                    continue
                                out.append(p)
                                c = _met_row(p, q, lazy) if grows else None
                                met = met or (c is not None and _meets_all(c, q))
                                if (c.max_offload_layers if c is not None else p.offloads) and q.confidence > 0:
                                    # its no-offload twin: held to its GPU regime's interval, not the
                                    # cpu-experts one every offload level of `c` is held to
                                    t = _prepare(q, m, node, acc, n_nodes, g, owned, dram_base, engine, qname, kvd,
                                                 par, moe_idx, quality, spec_dec, offload=False, at_zero=at_zero,
                                                 ratios=ratios)
                                    if t is not None and (lazy or t.finish() is not None):
                                        out.append(t)
                                        tc = _met_row(t, q, lazy) if grows else None
                                        met = met or (tc is not None and _meets_all(tc, q))
                            if met:
                                feasible_family.add(fam)
    return out


def _met_row(p: Pending, q: Query, lazy: bool) -> Candidate | None:
    """The row `_meets_all` reads: without a TTFT target it reads no TTFT, so the decode-only probe answers it
    exactly (the probe equals the finished row in every other field)."""
    return p.probe() if lazy and not q.ttft_s else p.finish()


def _family(par: Parallel) -> tuple[int, bool, bool, bool]:
    """A layout family: node counts of one family differ only in how many replicas or stages they hold."""
    return par.tp, par.ep, par.dp > 1, par.pp > 1


_FAST_DOMAIN: BoundedCache[NodeType, int] = BoundedCache("candidates.fast_domain", 1024)


def fast_domain(node: NodeType) -> int:
    """Largest scale-up group of one node (from the topology links' disk table, optimizer/topology_links.py)."""
    return _FAST_DOMAIN.get_or_compute(node, lambda: node_fast_domain(node))


def _offload_mode(engine: str, m: ResolvedModel, unified: bool, n_nodes: int) -> str:
    if unified or not m.spec.is_moe or n_nodes > 1:
        return "none"
    # Ollama and LM Studio cannot place experts by tensor (no -ot / --n-cpu-moe in a Modelfile or `lms load`):
    # their plans keep every layer on the GPU; mlx runs only on unified memory
    return {"llamacpp": "cpu", "ik_llama": "cpu", "sglang": "cpu", "vllm": "stream"}.get(engine, "none")


def _spec_options(q: Query, m: ResolvedModel, engine: str) -> list[SpecDecode | None]:
    """Speculative-decoding setups to try: none, the model card's published one, or both (`spec: auto`).
    vLLM and SGLang only (llama.cpp needs a separate draft GGUF)."""
    if q.spec == "off":
        return [None]
    has = bool(m.card and m.card.spec_decoding) and engine in ("vllm", "sglang")
    if not has:
        return [None] if q.spec == "auto" else []
    sd = default_spec_decode(m)
    return [None, sd] if q.spec == "auto" else [sd]


@lru_cache(maxsize=16)
def _owned_host(spec: str) -> CpuHost:
    """An owned box's host spec, parsed once per question rather than once per candidate row."""
    return parse_host(spec).resolve()


@dataclass
class Pending:
    """A candidate row that passed its memory tests, before its speed model. `cost` is the row's objective value
    with no DRAM bought (exactly the finished row's `cost`); `finish()` runs the speed model once and returns the
    row (None only when a served workload's rate is not sustainable)."""
    cost: float
    expert_bits: float
    offloads: bool              # max_offload_layers > 0 (a twin without offload is tried beside it)
    _finish: Callable[[], Candidate | None]
    _probe: Callable[[], Candidate]
    _done: bool = False
    _row: Candidate | None = None
    _probed: Candidate | None = None

    @property
    def done(self) -> bool:
        return self._done

    def finish(self) -> Candidate | None:
        if not self._done:
            self._row, self._done = self._finish(), True
        return self._row

    def probe(self) -> Candidate:
        """The row with its decode figures but no prefill (TTFT 0), for a question without a served workload:
        equal to the finished row in every field but ttft0, ttft_slope and ttft_nvme_slope (the decode figures
        it computes are memoised, finishing reuses them)."""
        if self._row is not None:
            return self._row
        if self._probed is None:
            self._probed = self._probe()
        return self._probed


def _prepare(q: Query, m: ResolvedModel, node: NodeType, acc: Accelerator, n_nodes: int, g: int, owned: bool,
             dram_base: float, engine: str, qname: str, kv_dtype: str, par: Parallel, moe_idx: tuple[int, ...],
             quality: tuple[float, float, float], spec_dec: SpecDecode | None = None,
             offload: bool = True, at_zero: dict[str, Any] | None = None,
             ratios: dict[tuple[str, str, bool], tuple[float, float]] | None = None) -> Pending | None:
    """One candidate row: its deployment evaluated (estimate.evaluate, the same function the checker and
    `estimate` call) at the ends of its open offload range, which the table interpolates linearly. Returns the
    row after its memory tests (None: it does not exist); its speed model runs in `Pending.finish`.

    `at_zero` passes an offloading row's evaluation at zero offloaded layers to its no-offload twin (the same
    call with offload=False): with no layer offloaded and no load-aware activation share, the estimate reads the
    offload mode nowhere (ExpertTiers(gpu=1 - 0 - 0) is ExpertTiers(), the GPU's expert fraction and the host
    and NVMe bytes are the same), so that evaluation is the twin's own in every figure
    (tests/test_candidates_fast.py compares them). `ratios` memoises planning_ratios for one question (they
    depend only on the engine, the accelerator and whether the row offloads)."""
    spec = m.spec
    capex, hourly, power = unit_costs(node.key, n_nodes, g, owned)
    base_cost = {"capex": capex, "hourly": hourly, "power": power}[q.objective]
    if base_cost is None:
        return None
    unified = acc.kind == "unified"
    mode = _offload_mode(engine, m, unified, n_nodes) if offload else "none"  # the no-offload twin: "none"
    # the one support rule (optimizer/solver/support.py): without offload, and with the experts offloaded
    # (for SGLang that is SGLang + KTransformers: its model matrix, validated GPUs and the host CPU's kt-method)
    scheme = get_scheme(qname, m.storage)
    host_isa = load_hardware().hosts[node.host].isa
    plain = plan_unsupported(engine, spec, acc.arch, scheme, "none", 0, host_isa)
    offloaded = plan_unsupported(engine, spec, acc.arch, scheme, mode, 1, host_isa) if mode != "none" else "no offload"
    if plain and offloaded:
        return None
    if offloaded:
        mode = "none"  # e.g. SGLang without a KTransformers method for these experts: no CPU experts
    min_offload = 1 if plain else 0  # runs only with experts offloaded (SGLang + KTransformers' build)
    L = len(moe_idx) if mode != "none" else 0
    imbalance = None
    if q.loads and par.ep and par.ep_size > 1 and spec.is_moe:
        imbalance = expected_imbalance(spec, par.ep_size, 0, q.loads)
    load_aware = bool(q.loads and mode == "cpu" and engine == "sglang")
    nvme_bytes = 0.0
    if mode == "cpu" and engine == "llamacpp" and node.nvme and not load_aware:
        nvme_bytes = load_hardware().storage[node.nvme].capacity_bytes * max(node.nvme_count, 1)
    Z = L if nvme_bytes else 0  # llama.cpp mmaps GGUF expert tensors: layers beyond DRAM page in from NVMe
    links = plan_links(node, n_nodes, par)
    if owned and q.owned is not None and q.owned.host:  # the owned box's own CPU and DRAM population
        cpu_host = _owned_host(q.owned.host)
        links = replace(links, host=cpu_host, host_dram_bw=cpu_host.theoretical_bw_bytes_per_s)
    hardware = Hardware(acc, node, n_nodes, g, links=links)
    # the engine's sequence cap is the planned concurrency per replica (what export writes), or its default when
    # the question is a request rate (the serving model then finds what the pool admits)
    settings = EngineSettings(max_num_seqs=None if q.rate_rps else
                              running_flag(engine, spec, par, -(-q.concurrency // par.dp)))
    try:
        base = Deployment(model=m, quant=qname, engine=engine, hardware=hardware, parallel=par, context=q.context,
                          concurrency=q.kv_sequences, kv_dtype=kv_dtype, workload=q.workload, settings=settings,
                          spec_decode=spec_dec,
                          prompt_tokens=q.prompt_tokens or (None if q.workload else q.context),
                          load_imbalance=imbalance, calibration=q.calibration)
    except InputError:
        return None

    def evaluator(x: float, z: float = 0.0) -> Evaluator:
        """`Evaluator(d).at(d.workload)` is `evaluate(d)`: memory first, the speed model only once it fits."""
        if not L:
            return Evaluator(base)
        share = None
        if load_aware:
            share = load_aware_gpu_share(spec, kt_experts_per_layer(spec, int(L - x)), q.loads)
        return Evaluator(replace(base, offload=Offload(mode=mode, dram_layers=x, nvme_layers=z,
                                                       activation_share_gpu=share)))

    # the memory tests need no speed model: a row that does not fit is dropped before its decode and prefill
    share = at_zero if at_zero is not None and not offload and not L else {}
    shared: Evaluation | None = share.get("ev")
    # the parent row's evaluator at x = 0 when its speed model has not run yet (the bounded search finishes rows
    # out of order): its evaluation is the one "ev" would hold
    e_a: Evaluator | None = None if shared is not None else share.get("e") or evaluator(0)
    mem_a = e_a.memory if e_a is not None else shared.memory if shared is not None else None
    assert mem_a is not None
    if L == 0 and not mem_a.fits:
        return None
    e_b = evaluator(L) if L else None
    mem_b = e_b.memory if e_b is not None else mem_a
    if L and mem_b.used_bytes > mem_b.budget_bytes:
        return None  # does not fit even with every expert layer offloaded
    if mem_a.outside_budget_bytes > mem_a.capacity_bytes - mem_a.budget_bytes + 1:
        return None
    if at_zero is not None and L and not load_aware:
        at_zero["e"] = e_a

    evaluators: dict[tuple[float, float], Evaluator] = {}  # the row's evaluators at other offload levels

    def ev_at(x: float, z: float = 0.0) -> Evaluator:
        got = evaluators.get((x, z))
        if got is None:
            got = evaluators[(x, z)] = evaluator(x, z)
        return got

    def at(x: float, z: float = 0.0) -> Evaluation:
        e = ev_at(x, z)
        return e.at(e.d.workload)

    def decode_a() -> SpeedEstimate:
        """ev_a.decode without ev_a's prefill (`Evaluator.at` takes `token_speed(concurrency)`, memoised)."""
        if e_a is None:
            assert shared is not None
            return shared.decode
        return e_a.token_speed(e_a.d.concurrency)

    def decode_at(e: Evaluator) -> SpeedEstimate:
        return e.token_speed(e.d.concurrency)

    def split(sp: SpeedEstimate) -> tuple[float, float]:
        other = sum(v for k, v in sp.terms_s.items() if k not in ("gpu_memory", "gpu_compute"))
        return sp.terms_s["gpu_memory"] + other, sp.terms_s["gpu_compute"] + other

    def decode_lines() -> tuple[tuple[float, float, float], ...]:
        """Decode step lines with no served workload: decode figures only (no prefill)."""
        if not L:
            a, b = split(decode_a())
            return ((a, 0.0, 0.0), (b, 0.0, 0.0))
        if load_aware:
            # load-aware tiering makes the step time convex (not linear) in x: interpolate at breakpoints; the
            # lines through consecutive points bound it from above and their max is the interpolation
            xs = sorted({0, L // 4, L // 2, (3 * L) // 4, L})
            pts = [(x, max(split(decode_at(ev_at(x))))) for x in xs]
            return tuple((y0 - (y1 - y0) / (x1 - x0) * x0, (y1 - y0) / (x1 - x0), 0.0)
                         for (x0, y0), (x1, y1) in pairwise(pts))
        # every term is linear in the offloaded fractions: two exact planes (memory and compute branches)
        assert e_b is not None
        (ma, ca), (mb, cb) = split(decode_a()), split(decode_at(e_b))
        mc, cc = split(decode_at(ev_at(0, L))) if Z else (ma, ca)
        return ((ma, (mb - ma) / L, (mc - ma) / L), (ca, (cb - ca) / L, (cc - ca) / L))

    def planning() -> tuple[float, float]:
        # targets hold at the low end of the prediction interval (q.confidence): slower steps, longer TTFT
        # (a candidate that may offload experts is held to the offload regime's interval at every offload level)
        rkey = (engine, acc.key, L > 0)  # `ratios` lives for one question: one model spec
        got = ratios.get(rkey) if ratios is not None else None
        if got is None:
            got = planning_ratios(engine, acc, q.planning_batch, q.confidence, q.workload is not None, offload=L > 0,
                                  spec=spec)
            if ratios is not None:
                ratios[rkey] = got
        return got

    def scaled(lines: tuple[tuple[float, float, float], ...]) -> tuple[tuple[float, float, float], ...]:
        speed_ratio = planning()[0]
        if speed_ratio != 1.0:
            lines = tuple((a / speed_ratio, b / speed_ratio, c / speed_ratio) for a, b, c in lines)
        return lines

    def probe() -> Candidate:
        """The row with its decode figures and no prefill (TTFT 0), for a question without a served workload:
        equal to the finished row in every field but the three TTFT ones."""
        return make(scaled(decode_lines()), (0.0, 0.0, 0.0))

    def finish() -> Candidate | None:
        """The speed model: decode and prefill at the ends of the offload range."""
        ev_a = e_a.at(e_a.d.workload) if e_a is not None else shared
        assert ev_a is not None
        if at_zero is not None and L and not load_aware:
            at_zero["ev"] = ev_a
        if not ev_a.sustainable or not math.isfinite(ev_a.tpot_s):
            return None  # offloading only slows it down further (a served workload no step serves: infinite TPOT)
        ev_b = e_b.at(e_b.d.workload) if e_b is not None else ev_a
        ev_c = at(0, L) if Z else ev_a
        if q.workload is not None:
            # served workload: the targets bind TPOT and TTFT of the serving model, interpolated between the ends of
            # the offload range (a chord; the independent check re-evaluates the chosen point exactly)
            def tp(ev: Evaluation) -> float:
                return ev.tpot_s if ev.sustainable and math.isfinite(ev.tpot_s) else UNSUSTAINABLE_S
            ta, tb, tc = tp(ev_a), tp(ev_b), tp(ev_c)
            lines: tuple[tuple[float, float, float], ...] = ((ta, (tb - ta) / L if L else 0.0,
                                                              (tc - ta) / L if L else 0.0),)
        else:
            lines = decode_lines()
        ttft_a, ttft_b, ttft_c = (min(ev.ttft_s, UNSUSTAINABLE_S) for ev in (ev_a, ev_b, ev_c))
        ttft_ratio = planning()[1]
        if ttft_ratio != 1.0:
            ttft_a, ttft_b, ttft_c = (min(t * ttft_ratio, UNSUSTAINABLE_S) for t in (ttft_a, ttft_b, ttft_c))
        return make(scaled(lines), (ttft_a, ttft_b, ttft_c))

    kv_res = (e_a.parts.kv if e_a is not None else shared.kv if shared is not None else None)
    assert kv_res is not None
    weights = e_a.parts.weights if e_a is not None else shared.weights if shared is not None else None
    assert weights is not None

    def make(lines: tuple[tuple[float, float, float], ...], ttfts: tuple[float, float, float]) -> Candidate:
        ttft_a, ttft_b, ttft_c = ttfts
        per = 1.0 / L if L else 0.0
        expert_bytes = weights.routed_expert_bytes
        dram_price = 0.0
        dram_max = dram_base
        if q.objective == "capex" and not unified:
            dram_price = load_hardware().hosts[node.host].dram_usd_per_gb / 1e9
            dram_max = max(float(node.max_dram_bytes), dram_base)
        layer_bytes = expert_bytes * per
        tag = "owned-" if owned else ""
        fill = f"[{g}/{node.accelerators_per_node}]" if g != node.accelerators_per_node else ""
        cid = (f"{tag}{node.key}{fill}x{n_nodes}/{engine}/{qname}/kv-{kv_res.kv_dtype}/{par.label()}"
               + (f"/offload-{mode}" if L else "") + (f"/spec-{spec_dec.method}{spec_dec.num_tokens}" if spec_dec else ""))
        return Candidate(
            id=cid, node=node.key, accelerator=acc.key, n_nodes=n_nodes, gpus_per_node=g, owned=owned, engine=engine,
            quant=qname, kv_dtype=kv_res.kv_dtype, par=par, offload_mode=mode, max_offload_layers=L,
            offload_order=tuple(reversed(moe_idx)) if L else (), cost=float(base_cost), capex_usd=capex,
            usd_per_hour=hourly, power_watts=power, dram_base_bytes=dram_base, dram_max_bytes=dram_max,
            dram_usd_per_byte=dram_price if q.objective == "capex" else 0.0,
            budget_bytes=mem_a.budget_bytes, mem0=mem_a.used_bytes,
            mem_slope=(mem_a.used_bytes - mem_b.used_bytes) * per,
            host_fixed=F.HOST_RESERVED_BYTES if L else 0.0, host_slope=layer_bytes,
            step_lines=tuple(lines),
            ttft0=ttft_a, ttft_slope=(ttft_b - ttft_a) * per,
            expert_bits=quality[0], attn_bits=quality[1], mean_bits=quality[2],
            max_nvme_layers=Z, nvme_capacity_bytes=nvme_bytes, ttft_nvme_slope=(ttft_c - ttft_a) * per,
            notes=tuple(mem_a.notes), spec_decode=spec_dec, settings=settings, min_offload_layers=min_offload)

    return Pending(cost=float(base_cost), expert_bits=quality[0], offloads=L > 0, _finish=finish,
                   _probe=probe)


def best_point(c: Candidate, q: Query) -> tuple[int, int] | None:
    """Cheapest feasible (x DRAM layers, z NVMe layers) of one candidate by direct search (ties: least offload)."""
    best = None
    for x, z in c.points():
        if feasible_at(c, q, x, z):
            key = (round(c.total_cost(x), 6), c.step_time(x, z), x, z)
            if best is None or key < best[0]:
                best = (key, (x, z))
    return None if best is None else best[1]


def best_x(c: Candidate, q: Query) -> int | None:
    p = best_point(c, q)
    return None if p is None else p[0]


def feasible_at(c: Candidate, q: Query, x: int, z: int = 0) -> bool:
    if x + z < c.min_offload_layers:
        return False
    if c.mem(x, z) > c.budget_bytes:
        return False
    if c.host(x) > c.dram_max_bytes:
        return False
    if z and c.nvme(z) > c.nvme_capacity_bytes:
        return False
    if q.tok_s and c.step_time(x, z) * q.tok_s > 1.0:
        return False
    if q.ttft_s and c.ttft(x, z) > q.ttft_s:
        return False
    if q.max_budget is not None and c.total_cost(x) > q.max_budget:
        return False
    return True


def _meets_all(c: Candidate, q: Query) -> bool:
    """Some (x, z) meets every target (used to stop growing a family). Checks, for each x, only the least NVMe
    use z that fits device memory: a False may miss an exotic split (only less pruning), a True is always true.

    `feasible_at` inlined (the same float expressions in the same order, so the same answers; it runs for every
    offload level of every row, tests/test_candidates_fast.py compares the two)."""
    n_off, mem0, mem_slope, budget = c.max_offload_layers, c.mem0, c.mem_slope, c.budget_bytes
    host_fixed, host_slope, dram_max, nvme_cap = c.host_fixed, c.host_slope, c.dram_max_bytes, c.nvme_capacity_bytes
    max_nvme, min_off, lines = c.max_nvme_layers, c.min_offload_layers, c.step_lines
    tok_s, ttft_s, max_budget = q.tok_s, q.ttft_s, q.max_budget
    for x in range(n_off + 1):
        need = (mem0 - mem_slope * x) - budget
        z = 0
        if need > 0:
            if mem_slope <= 0 or not max_nvme:
                continue
            z = int(-(-need // mem_slope))
            if z > min(max_nvme, n_off - x):
                continue
        if x + z < min_off or mem0 - mem_slope * (x + z) > budget or host_fixed + host_slope * x > dram_max:
            continue
        if z and host_slope * z > nvme_cap:
            continue
        if tok_s and max([a + b * x + cz * z for a, b, cz in lines]) * tok_s > 1.0:
            continue
        if ttft_s and c.ttft0 + c.ttft_slope * x + c.ttft_nvme_slope * z > ttft_s:
            continue
        if max_budget is not None and c.total_cost(x) > max_budget:
            continue
        return True
    return False
