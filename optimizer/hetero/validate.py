"""Independent float re-check of a mixed plan: every stage re-evaluated per device from the per-layer physics
(`optimizer/estimate/layers.py`, the pieces `evaluate()` is made of), never from the solver's integers; a one-stage
plan is also evaluated by `evaluate()` itself and the two must agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from optimizer.catalog.hardware import load_hardware
from optimizer.catalog.models import ResolvedModel
from optimizer.estimate import factors as F
from optimizer.estimate.cpu_experts import host_bandwidth
from optimizer.estimate.deployment import Deployment, EngineSettings, Hardware, Offload, evaluate
from optimizer.estimate.layers import (
    ModelLayers,
    StageFigures,
    device_rates,
    host_expert_time_s,
    nvme_expert_time_s,
    stage_figures,
)
from optimizer.hetero.inventory import Inventory
from optimizer.hetero.plan import Stage
from optimizer.hetero.table import (
    BOX_BASE_WATTS,
    DEFAULT_PSU_WATTS,
    LANES_RESERVED,
    MIN_LANES_PER_GPU,
    act_bytes,
    network_seconds,
)
from optimizer.layout import Links, Parallel


@dataclass(frozen=True)
class StageCheck:
    stage: Stage
    figures: StageFigures
    budget_bytes: float
    hop_s: float

    @property
    def used_bytes(self) -> float:
        return self.figures.weights_bytes + self.figures.kv_bytes + self.figures.runtime_bytes


@dataclass(frozen=True)
class MixedCheck:
    stages: tuple[StageCheck, ...]
    step_time_s: float
    terms_s: dict[str, float]
    host_used_bytes: tuple[float, ...]
    nvme_used_bytes: tuple[float, ...]
    violations: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def tok_s(self) -> float:
        return 1.0 / self.step_time_s if self.step_time_s > 0 else 0.0


def check_plan(
    m: ResolvedModel,
    ml: ModelLayers,
    inv: Inventory,
    stages: tuple[Stage, ...],
    dram_bought_gb: tuple[int, ...],
    tok_s: float | None = None,
) -> MixedCheck:
    hw = load_hardware()
    spec = m.spec
    bad: list[str] = []
    covered = [l for s in stages for l in s.layers]
    if covered != list(range(ml.n)):
        bad.append("stages do not cover every layer once, in order")
    act = act_bytes(ml, spec.hidden_size)
    checks = []
    t_dev = t_cpu = t_nvme = t_hop = 0.0
    host = [0.0] * len(inv.boxes)
    nvme = [0.0] * len(inv.boxes)
    off = [False] * len(inv.boxes)
    box_seq: list[int] = []
    n_cards = [len(b.gpus) for b in inv.boxes]
    watts = [sum(g.acc.tdp_watts or 0.0 for g in b.gpus) for b in inv.boxes]
    for i, st in enumerate(stages):
        acc = hw.accelerators[st.accelerator]
        box = inv.boxes[st.box]
        if not st.owned:
            n_cards[st.box] += 1
            watts[st.box] += acc.tdp_watts or 0.0
        r = device_rates(acc, ml, spec.vocab_size, spec.hidden_size)
        moe_here = [l for l in st.layers if ml.layers[l].is_moe]
        if sorted(st.gpu_expert_layers + st.cpu_expert_layers + st.nvme_expert_layers) != moe_here:
            bad.append(f"{st.uid}: expert layers {moe_here} not each placed once")
        f = stage_figures(ml, r, st.start, st.end, set(st.gpu_expert_layers), holds_globals=(i == len(stages) - 1))
        used = f.weights_bytes + f.kv_bytes + f.runtime_bytes
        if not r.fits_outside:
            bad.append(f"{st.uid} ({acc.key}): the CUDA context does not fit outside the engine's budget")
        if (st.cpu_expert_layers or st.nvme_expert_layers) and ml.engine != "llamacpp":
            bad.append(f"{st.uid}: {ml.engine} keeps every routed expert on its GPU in these plans")
        if (st.cpu_expert_layers or st.nvme_expert_layers) and st.box > 0:
            bad.append(f"{st.uid}: a remote box (ggml-rpc-server) keeps its routed experts on its GPUs")
        if used > r.budget_bytes:
            bad.append(f"{st.uid} ({acc.key}): {used / 2**30:.2f} GiB used > {r.budget_bytes / 2**30:.2f} GiB budget")
        link = hw.interconnects[acc.host_link]
        lanes = max(MIN_LANES_PER_GPU, min(16, (box.host.pcie_lanes - LANES_RESERVED) // max(1, len(box.gpus))))
        hop = act / (link.bw_bytes_per_s * lanes / 16 * F.PCIE_EFFICIENCY.value) + link.latency_s if i else 0.0
        checks.append(StageCheck(st, f, r.budget_bytes, hop))
        t_dev += f.time_s
        t_hop += hop
        for l in st.cpu_expert_layers:
            t_cpu += host_expert_time_s(ml, l, host_bandwidth(box.cpu_host, ml.engine).bytes_per_s)
            host[st.box] += ml.layers[l].expert_bytes
        for l in st.nvme_expert_layers:
            if not box.nvme_bytes:
                bad.append(f"{st.uid}: experts on NVMe but {box.name} has none")
                continue
            t_nvme += nvme_expert_time_s(ml, l, box.nvme_bw)
            nvme[st.box] += ml.layers[l].expert_bytes
        if st.cpu_expert_layers or st.nvme_expert_layers:
            off[st.box] = True
        if not box_seq or box_seq[-1] != st.box:
            if st.box in box_seq:
                bad.append(f"layers of {box.name} are not contiguous")
            box_seq.append(st.box)
    # llama.cpp RPC: two crossings per remote box holding layers (through the main process), the logits once more
    # when the last layer is remote (table.network_seconds)
    per_box, logits = network_seconds(ml, spec.hidden_size, spec.vocab_size, inv.link)
    t_net = sum(per_box for k in box_seq if k > 0)
    if stages and stages[-1].box > 0:
        t_net += logits
    for k, b in enumerate(inv.boxes):
        if off[k]:
            host[k] += F.HOST_RESERVED_BYTES
        cap = b.dram_bytes + dram_bought_gb[k] * 1e9
        if host[k] > cap:
            bad.append(f"{b.name}: host DRAM {host[k] / 1e9:.1f} GB needed > {cap / 1e9:.1f} GB")
        if cap > max(b.host.max_dram_bytes, b.dram_bytes):
            bad.append(
                f"{b.name}: {cap / 1e9:.0f} GB DRAM exceeds the platform's {b.host.max_dram_bytes / 2**30:.0f} GiB"
            )
        if nvme[k] > b.nvme_bytes:
            bad.append(f"{b.name}: NVMe {nvme[k] / 1e9:.1f} GB needed > {b.nvme_bytes / 1e9:.1f} GB")
        slots = max(len(b.gpus), (b.host.pcie_lanes - LANES_RESERVED) // MIN_LANES_PER_GPU)
        if n_cards[k] > slots:
            bad.append(f"{b.name}: {n_cards[k]} cards > {slots} x{MIN_LANES_PER_GPU} slots")
        psu = max(b.psu_watts or DEFAULT_PSU_WATTS, sum(g.acc.tdp_watts or 0.0 for g in b.gpus) + BOX_BASE_WATTS)
        if watts[k] + BOX_BASE_WATTS > psu:
            bad.append(f"{b.name}: {watts[k] + BOX_BASE_WATTS:.0f} W > {psu:.0f} W power supply")
    terms = {
        "devices": t_dev,
        "cpu_experts": t_cpu,
        "nvme": t_nvme,
        "pcie_hops": t_hop,
        "network_hops": t_net,
        "overhead": ml.fixed_overhead_s,
    }
    step = sum(terms.values())
    if tok_s and step * tok_s > 1.0 + 1e-12:
        bad.append(f"decode {1 / step:.2f} tok/s < {tok_s:g} tok/s target")
    if len(stages) == 1 and not bad:
        bad += _agrees_with_evaluate(m, ml, inv, stages[0], step, checks[0])
    return MixedCheck(
        stages=tuple(checks),
        step_time_s=step,
        terms_s=terms,
        host_used_bytes=tuple(host),
        nvme_used_bytes=tuple(nvme),
        violations=tuple(bad),
    )


def _agrees_with_evaluate(
    m: ResolvedModel, ml: ModelLayers, inv: Inventory, st: Stage, step: float, sc: StageCheck
) -> list[str]:
    """A one-device plan is an ordinary deployment: `evaluate()` must give the same memory and decode time."""
    hw = load_hardware()
    acc = hw.accelerators[st.accelerator]
    box = inv.boxes[st.box]
    n_moe = len(m.spec.moe_layers)
    x, z = len(st.cpu_expert_layers), len(st.nvme_expert_layers)
    links = Links(
        host_dram_bw=box.host.dram_bw_bytes_per_s,
        host=box.cpu_host,
        nvme_bw=box.nvme_bw,
    )
    d = Deployment(
        model=m,
        quant=ml.quant,
        engine=ml.engine,
        hardware=Hardware(acc, None, links=links),
        parallel=Parallel(),
        context=ml.context,
        concurrency=ml.concurrency,
        kv_dtype=ml.kv_dtype,
        settings=EngineSettings(max_num_seqs=ml.concurrency) if ml.engine == "vllm" else EngineSettings(),
        offload=Offload(mode="cpu" if x + z else "none", dram_layers=x, nvme_layers=z),
    )
    ev = evaluate(d)
    out = []
    if n_moe and abs(ev.decode.step_time_s - step) > 1e-9 * max(1.0, step) + 1e-12:
        out.append(f"one-device plan: per-layer decode {step:.6g} s != evaluate() {ev.decode.step_time_s:.6g} s")
    if abs(ev.memory.used_bytes - sc.used_bytes) > 1.0:
        out.append(
            f"one-device plan: per-layer memory {sc.used_bytes:.0f} B != evaluate() {ev.memory.used_bytes:.0f} B"
        )
    return out
