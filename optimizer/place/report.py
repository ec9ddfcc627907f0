"""`rigopt place`: run the placement for a plan and loads, and print it (schema rigopt.place/1)."""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from rich.table import Table

from optimizer.engines import SGLANG_VERSION
from optimizer.errors import InputError
from optimizer.estimate.speed import ExpertTiers, distinct_experts
from optimizer.limits import (
    MAX_EXPERTS,
    MAX_LAYERS,
    MAX_NUMBER_CHARS,
    MAX_PATH_CHARS,
    MAX_SEED,
    check_int,
    check_text,
    clip_for_message,
    write_file,
)
from optimizer.place import export
from optimizer.place.ep import greedy_layer, lower_bound, place_layer, remote_fraction, slot_caps, touched
from optimizer.place.inputs import PlaceInput, expert_bytes_per_layer, plan_speed, read_input
from optimizer.place.loads import Loads, resolve_loads
from optimizer.place.tiers import place_experts, place_layers, uniform_split
from optimizer.topology import topology

PLACE_SCHEMA = "rigopt.place/1"
TIER_NAMES = ("gpu", "dram", "nvme")


class EPLayer(BaseModel):
    layer: int                       # main-layer index
    slots: list[list[int]]           # per EP rank: logical expert of each physical slot
    replicas: dict[int, int]         # logical expert -> replica count (only those with > 1)
    imbalance: float                 # rigopt: busiest rank / mean
    greedy_imbalance: float
    bound_imbalance: float
    remote_fraction: float           # dispatches leaving the sender's fast domain (local replica preferred)
    method: str
    at_bound: bool


class EPResult(BaseModel):
    ep_size: int
    domain_size: int
    redundant_per_layer: int
    redundant_limit: int | None      # from the plan's memory headroom (None = not limited)
    slots_per_rank: list[int]
    imbalance: float                 # mean over layers of max/mean (what the step time sees)
    greedy_imbalance: float
    bound_imbalance: float
    gap_to_bound: float              # sum of rigopt max loads / sum of bounds - 1
    layers_worse_than_greedy: int
    solve_s: float
    step_imbalance: dict[str, float] = {}  # busiest rank's distinct experts read per step (with per-step
    # fluctuation; "balanced" = expected total / ranks, no fluctuation) / uniform-routing mean per rank
    tok_s: dict[str, float] = {}     # decode tok/s per sequence with each step imbalance (plan's speed model)
    layers: list[EPLayer]


class TierLayer(BaseModel):
    layer: int
    gpu: list[int]
    dram: list[int]
    nvme: list[int]
    share: dict[str, float]          # activation share of this layer served by each tier


class TierResult(BaseModel):
    mode: str                        # cpu | stream
    share: dict[str, float]          # activation share per tier (load-aware)
    byte_fraction: dict[str, float]
    gpu_experts_per_layer: int | None
    reference_share_gpu: float       # the load-blind layer-range split
    tok_s: dict[str, float] = {}
    layers: list[TierLayer]


class PlacementResult(BaseModel):
    schema_id: str = PLACE_SCHEMA
    model: str
    engine: str | None
    granularity: str                 # expert (whole experts per rank / per tier) | layer (whole per-layer tensors)
    loads: str
    n_gpus: int
    ep: EPResult | None = None
    tiers: TierResult | None = None
    exports: dict = {}
    notes: list[str] = []


def redundant_limit(inp: PlaceInput, n_experts: int, expert_bytes: np.ndarray) -> int | None:
    """Most redundant experts per layer the per-device headroom allows (one extra slot per rank in every MoE
    layer costs the sum of one expert's bytes over the layers)."""
    if inp.headroom_bytes is None:
        return None
    per_slot = float(expert_bytes.sum())
    s = int(inp.headroom_bytes // per_slot) if per_slot > 0 else 0
    ep = inp.ep_size
    return (-(-n_experts // ep) + s) * ep - n_experts


def _valid_r(r: int, E: int, ep: int, engine: str | None) -> int:
    if engine in ("vllm", "sglang"):
        return r - (E + r) % ep if (E + r) % ep else r
    return r


def place_ep(inp: PlaceInput, loads: Loads, redundant: int | str | None = None, time_limit: float = 8.0,
             workers: int | None = None) -> tuple[EPResult, list[str]]:
    spec = inp.resolved.spec
    moe = spec.moe_layers
    E = moe[0].n_routed_experts
    G = inp.ep_size
    notes: list[str] = []
    eb = expert_bytes_per_layer(inp)
    limit = redundant_limit(inp, E, eb)
    total = None
    if isinstance(redundant, str):
        if not redundant.startswith("total:"):
            raise InputError(f"--redundant-experts {redundant}: use R (per layer) or total:N")
        try:
            total = int(redundant.split(":", 1)[1])
        except ValueError:
            raise InputError(f"--redundant-experts {redundant}: N must be an integer") from None
        redundant = total // len(moe)
    if redundant is None:
        redundant = G if limit is None else min(G, limit)
    if total is not None and not 0 <= total <= MAX_EXPERTS * MAX_LAYERS:
        raise InputError(f"--redundant-experts total:{total}: must be within 0..{MAX_EXPERTS * MAX_LAYERS}")
    if redundant > min(MAX_EXPERTS, E * (G - 1)):
        raise InputError(f"--redundant-experts {redundant}: at most {min(MAX_EXPERTS, E * (G - 1))} per layer "
                         f"({E} experts over EP {G}: one replica of an expert per GPU, at most {MAX_EXPERTS})")
    if redundant < 0:
        raise InputError("--redundant-experts must be >= 0")
    if limit is not None and redundant > limit:
        notes.append(f"memory headroom ({(inp.headroom_bytes or 0.0) / 1e9:.2f} GB per device; one more slot per rank "
                     f"costs {eb.sum() / 1e9:.2f} GB) limits redundant experts to {max(limit, 0)} per layer; "
                     f"asked {redundant}")
        redundant = max(limit, 0)
    r2 = _valid_r(redundant, E, G, inp.engine)
    if r2 != redundant:
        notes.append(f"{inp.engine} needs (experts + redundant) divisible by EP {G}: redundant {redundant} -> {r2}")
        redundant = r2
    extra = np.zeros(len(moe), dtype=int)
    if total is not None and inp.engine not in ("vllm", "sglang"):
        left = total - redundant * len(moe)
        if limit is not None:
            left = min(left, max(limit - redundant, 0) * len(moe))
        if left > 0:   # remainder to the most skewed layers
            skew = [loads.counts[i].max() / loads.counts[i].mean() for i in range(len(moe))]
            for i in np.argsort(skew)[::-1][:left]:
                extra[i] = 1
    dsize = inp.domain_size
    if dsize is None and inp.node:
        dsize = topology(inp.node, inp.n_nodes).fast_domain_size()
    dsize = max(1, min(dsize or G, G))
    domain = np.arange(G) // dsize
    workers = workers or min(2, os.cpu_count() or 1)
    t0 = time.perf_counter()
    layers, sums = [], np.zeros(3)
    worse = 0
    k = moe[0].experts_per_token
    tokens = max(1, inp.concurrency)
    u = distinct_experts(E, k, tokens)
    step: dict[str, list[float]] = {"rigopt": [], "greedy": [], "balanced": []}
    for i, l in enumerate(moe):
        w = loads.counts[i]
        caps = slot_caps(E, redundant + int(extra[i]), G)
        base = greedy_layer(w, caps)
        time_left = max(0.0, time_limit - (time.perf_counter() - t0))
        cap = min(0.5, time_left / (len(moe) - i))
        p = place_layer(w, caps, domain, time_limit=cap, workers=workers, baseline=base, step=(k, tokens))
        lb = lower_bound(w, caps)
        mean = float(w.sum()) / G
        worse += p.max_load > base.max_load * (1 + 1e-12)
        sums += (p.max_load, base.max_load, lb)
        (tr, br), (_, bg) = touched(p, w, k, tokens), touched(base, w, k, tokens)
        step["rigopt"].append(br * G / u)
        step["greedy"].append(bg * G / u)
        step["balanced"].append(tr.sum() / u)
        layers.append(EPLayer(layer=l.index, slots=p.slots(), replicas=p.replicas(), imbalance=p.max_load / mean,
                              greedy_imbalance=base.max_load / mean, bound_imbalance=lb / mean,
                              remote_fraction=remote_fraction(p, w, domain), method=p.method,
                              at_bound=p.max_load <= lb * (1 + 1e-6)))
    solve = time.perf_counter() - t0
    n = len(moe)
    res = EPResult(ep_size=G, domain_size=dsize, redundant_per_layer=redundant, redundant_limit=limit,
                   slots_per_rank=[int(c) for c in slot_caps(E, redundant, G)],
                   imbalance=float(np.mean([x.imbalance for x in layers])),
                   greedy_imbalance=float(np.mean([x.greedy_imbalance for x in layers])),
                   bound_imbalance=float(np.mean([x.bound_imbalance for x in layers])),
                   gap_to_bound=float(sums[0] / sums[2] - 1), layers_worse_than_greedy=int(worse),
                   solve_s=solve, layers=layers)
    if extra.any():
        notes.append(f"total redundancy {total}: {redundant} per layer, +1 on the {int(extra.sum())} most skewed "
                     "layers")
    res.step_imbalance = {name: float(np.mean(v)) for name, v in step.items()}
    if n and inp.node:
        res.tok_s = {name: plan_speed(inp, expert_imbalance=v).tok_s_per_seq
                     for name, v in res.step_imbalance.items()}
        res.tok_s["plan model (uniform routing, balls-in-bins)"] = plan_speed(inp).tok_s_per_seq
    return res, notes


def place_tiers(inp: PlaceInput, loads: Loads) -> tuple[TierResult, str, list[str], dict]:
    spec = inp.resolved.spec
    moe = spec.moe_layers
    idx = [l.index for l in moe]
    eb = expert_bytes_per_layer(inp)
    E = moe[0].n_routed_experts
    k = moe[0].experts_per_token
    L = len(moe)
    n_gpu_layers = inp.gpu_expert_layers if inp.gpu_expert_layers is not None else L
    off_set = set(inp.offloaded_layers or [])
    plan_gpu = [o for o, ix in enumerate(idx) if ix not in off_set] if off_set else list(range(n_gpu_layers))
    gpu_bytes = float(eb[plan_gpu].sum() * E)
    shares = loads.shares()
    notes: list[str] = []
    batch = -(-inp.concurrency // max(inp.dp, 1))
    if inp.engine == "sglang" and inp.offload_mode == "cpu":
        tp = place_experts(shares, eb, gpu_bytes, inp.host_expert_bytes, per_layer=True)
        gran = "expert"
        glob = place_experts(shares, eb, gpu_bytes, inp.host_expert_bytes, per_layer=False)
        notes.append(f"KTransformers keeps the same expert count in every layer; choosing freely across layers "
                     f"would serve {glob.activation_share(0):.1%} of activations on the GPU")
    else:
        tp = place_layers(shares, eb, k, batch, gpu_bytes, inp.host_expert_bytes, prefer=plan_gpu)
        gran = "layer"
        if batch <= 1:
            notes.append("per-layer granularity at batch 1: every layer serves k activations per token, so "
                         "which layers stay on the GPU does not change the activation share")
    ref = uniform_split(shares, eb, plan_gpu)
    res = TierResult(mode=inp.offload_mode,
                     share={n: tp.activation_share(t) for t, n in enumerate(TIER_NAMES)},
                     byte_fraction={n: tp.byte_fraction(t) for t, n in enumerate(TIER_NAMES)},
                     gpu_experts_per_layer=tp.gpu_experts_per_layer,
                     reference_share_gpu=ref.activation_share(0),
                     layers=[TierLayer(layer=idx[o], gpu=np.where(tp.tier[o] == 0)[0].tolist(),
                                       dram=np.where(tp.tier[o] == 1)[0].tolist(),
                                       nvme=np.where(tp.tier[o] == 2)[0].tolist(),
                                       share={n: float(shares[o][tp.tier[o] == t].sum())
                                              for t, n in enumerate(TIER_NAMES)}) for o in range(L)])
    if inp.node:
        off = "stream" if inp.offload_mode == "stream" else "cpu"
        bf = res.byte_fraction
        aware = ExpertTiers(gpu=bf["gpu"], nvme=bf["nvme"], activation_share_gpu=res.share["gpu"],
                            **{off: bf["dram"]})
        rb = ref.byte_fraction(0)
        blind = ExpertTiers(gpu=rb, **{off: 1 - rb})
        res.tok_s = {"load-aware": plan_speed(inp, tiers=aware).tok_s_per_seq,
                     "layer-range split": plan_speed(inp, tiers=blind).tok_s_per_seq}
    exports: dict = {}
    if gran == "layer" and inp.engine in ("llamacpp", None):
        cpu_layers = [idx[o] for o in range(L) if tp.tier[o, 0] != 0]
        exports["llamacpp_ot"] = export.llamacpp_ot(cpu_layers)
    if gran == "expert":
        exports["ktransformers_flags"] = export.kt_flags(tp.gpu_experts_per_layer or 0)
        exports["ktransformers_fork_flags"] = export.kt_fork_flags()
        notes.append("--kt-expert-placement-strategy frequency (the N most-used experts on the GPU) needs the "
                     f"kvcache-ai SGLang fork (sglang-kt); upstream SGLang {SGLANG_VERSION} accepts only "
                     "--kt-num-gpu-experts")
    return res, gran, notes, exports


def place(inp: PlaceInput, loads: Loads, redundant: int | str | None = None, time_limit: float = 8.0,
          workers: int | None = None) -> PlacementResult:
    spec = inp.resolved.spec
    moe = spec.moe_layers
    if not moe:
        raise InputError(f"{inp.model} has no routed experts: nothing to place")
    if len({(l.n_routed_experts, l.experts_per_token) for l in moe}) > 1:
        raise InputError(f"{inp.model}: MoE layers with different expert counts are not supported yet")
    if loads.counts.shape != (len(moe), moe[0].n_routed_experts):
        raise InputError(f"loads {loads.source}: shape {list(loads.counts.shape)}, the model needs "
                         f"[{len(moe)}, {moe[0].n_routed_experts}]")
    out = PlacementResult(model=inp.model, engine=inp.engine, granularity="expert", loads=loads.source,
                          n_gpus=inp.n_gpus, notes=list(loads.notes))
    if inp.offload_mode != "none":
        out.tiers, out.granularity, notes, out.exports = place_tiers(inp, loads)
        out.notes += notes
        if inp.ep_size > 1:
            out.notes.append(f"EP{inp.ep_size} split of the GPU-resident experts is left to the engine")
        return out
    if inp.ep_size <= 1:
        raise InputError("the plan has neither expert parallelism (ep_size > 1) nor expert offload: nothing to place")
    out.ep, notes = place_ep(inp, loads, redundant, time_limit, workers)
    out.notes += notes
    r = out.ep.redundant_per_layer
    if inp.engine in ("sglang", None) and (moe[0].n_routed_experts + r) % inp.ep_size == 0:
        out.exports["sglang_init_expert_location"] = "physical_to_logical_map in <out>.sglang.json"
    if inp.engine in ("vllm", None):
        out.exports["vllm"] = export.vllm_eplb(r)
        out.notes.append("vLLM builds its expert map online (EPLB) from its own recorded loads; only the "
                         "redundancy carries over")
    if inp.engine == "sglang":
        out.exports["sglang_flags"] = ["--ep-num-redundant-experts", str(r), "--init-expert-location",
                                       "<out>.sglang.json"]
    return out


def render(r: PlacementResult, console) -> None:
    console.print(f"[bold]placement[/bold] {r.model} ({r.engine or 'engine-neutral'}), loads: {r.loads}; "
                  f"granularity: {r.granularity} "
                  + ("(whole experts per rank/tier)" if r.granularity == "expert"
                     else "(whole per-layer expert tensors)"))
    if r.ep:
        e = r.ep
        console.print(f"EP{e.ep_size} over fast domains of {e.domain_size}; {e.redundant_per_layer} redundant "
                      "experts per layer (memory limit "
                      f"{e.redundant_limit if e.redundant_limit is not None else 'none'}); "
                      f"slots per rank {min(e.slots_per_rank)}-{max(e.slots_per_rank)}; solved in {e.solve_s:.2f} s")
        t = Table(title="max-load imbalance (busiest rank / mean), mean over layers")
        for c in ("greedy (EPLB)", "rigopt", "lower bound", "rigopt gap to bound", "layers rigopt > greedy"):
            t.add_column(c, justify="right")
        t.add_row(f"{e.greedy_imbalance:.4f}", f"{e.imbalance:.4f}", f"{e.bound_imbalance:.4f}",
                  f"{e.gap_to_bound:.3%}", str(e.layers_worse_than_greedy))
        console.print(t)
        if e.tok_s:
            console.print(f"decode step at {', '.join(f'{k} {v:.3f}' for k, v in e.step_imbalance.items())} "
                          f"(busiest rank's distinct experts read / uniform-routing mean)")
            console.print("decode tok/s per sequence: " + ", ".join(f"{k} {v:,.2f}" for k, v in e.tok_s.items()))
        worst = max(e.layers, key=lambda x: x.imbalance)
        console.print(f"worst layer {worst.layer}: rigopt {worst.imbalance:.4f}, greedy {worst.greedy_imbalance:.4f}, "
                      f"bound {worst.bound_imbalance:.4f} ({worst.method}); mean remote dispatch share "
                      f"{np.mean([x.remote_fraction for x in e.layers]):.1%}")
        first = e.layers[0]
        console.print(f"layer {first.layer}, rank 0 slots: {first.slots[0]}; replicated: "
                      + ", ".join(f"{k}×{v}" for k, v in sorted(first.replicas.items(), key=lambda kv: -kv[1])[:8]))
    if r.tiers:
        tr = r.tiers
        t = Table(title=f"expert tiers ({tr.mode})")
        for c in ("tier", "activation share", "byte fraction"):
            t.add_column(c, justify="right")
        for n in TIER_NAMES:
            t.add_row(n, f"{tr.share[n]:.1%}", f"{tr.byte_fraction[n]:.1%}")
        console.print(t)
        console.print(f"load-blind layer-range split serves {tr.reference_share_gpu:.1%} on the GPU")
        if tr.gpu_experts_per_layer is not None:
            console.print(f"GPU keeps the {tr.gpu_experts_per_layer} most-used experts of every layer")
        if tr.tok_s:
            console.print("decode tok/s per sequence: " + ", ".join(f"{k} {v:,.2f}" for k, v in tr.tok_s.items()))
    for k, v in r.exports.items():
        shown = v if isinstance(v, str) else shlex.join(v["flags"] if isinstance(v, dict) else v)
        console.print(f"export {k}: {shown}")
    for n in r.notes:
        console.print(f"note: {n}")


def write_outputs(r: PlacementResult, out: str) -> list[str]:
    """Write the result JSON to `out`; beside it `<stem>.sglang.json` (exactly {"physical_to_logical_map": ...},
    for SGLang --init-expert-location) when the EP placement is exportable. Returns the paths written."""
    check_text(out, "--out", MAX_PATH_CHARS)
    p = Path(out)
    write_file(p, r.model_dump_json(indent=1) + "\n", "--out")
    written = [str(p)]
    if r.ep and "sglang_init_expert_location" in r.exports:
        q = p.with_name(p.stem + ".sglang.json")
        write_file(q, export.sglang_map_json([x.slots for x in r.ep.layers]) + "\n", "--out")
        written.append(str(q))
        # the printed flags name the file just written, not a placeholder
        for key in ("sglang_flags",):
            if key in r.exports:
                r.exports[key] = [str(q) if a == "<out>.sglang.json" else a for a in r.exports[key]]
        r.exports["sglang_init_expert_location"] = str(q)
    return written


def run(plan_json: str, loads: str | None = None, seed: int = 0, redundant: str | None = None,
        time_limit: float = 8.0) -> PlacementResult:
    """Everything `rigopt place` does before printing."""
    check_int(seed, "--seed", 0, MAX_SEED)
    inp = read_input(plan_json)
    moe = inp.resolved.spec.moe_layers
    if not moe:
        raise InputError(f"{inp.model} has no routed experts: nothing to place")
    ld = resolve_loads(loads, len(moe), moe[0].n_routed_experts, seed, [l.index for l in moe])
    red: int | str | None = None
    if redundant is not None:
        red = redundant.strip()
        if len(red) > MAX_NUMBER_CHARS:
            raise InputError(f"--redundant-experts {clip_for_message(red)}: use R (per layer) or total:N")
        if not red.startswith("total:"):
            try:
                red = int(red)
            except ValueError:
                raise InputError(f"--redundant-experts {clip_for_message(redundant)}: use R (per layer) "
                                 "or total:N") from None
    return place(inp, ld, red, time_limit)
