"""The integer instance the CP-SAT model and the oracle both read: per device and per layer, coefficients at the
scales of `optimizer/hetero/scaling.py`, computed from the per-layer physics (`optimizer/estimate/layers.py`).

Nothing here chooses anything; it only turns floats into conservatively rounded integers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from optimizer.catalog.hardware import load_hardware, purchase_usd
from optimizer.catalog.models import ResolvedModel
from optimizer.errors import InputError
from optimizer.estimate import factors as F
from optimizer.estimate.cpu_experts import host_bandwidth
from optimizer.estimate.layers import ModelLayers, device_rates
from optimizer.hetero.inventory import Gpu, Inventory
from optimizer.hetero.scaling import DEV_MEM_UNIT, GB_UNITS, HOST_MEM_UNIT, TIME_UNIT, down, up

# Box limits not in hosts.yaml.
# - Lanes (estimate): a GPU needs at least a x4 link (M.2/bifurcation risers, as the published 5-GPU desktop rigs
#   run) and one x4 stays with the boot NVMe.
# - Power supply (estimate, reasoned): one ATX unit of 1600 W unless the inventory says `psu N W` or the owned cards
#   already draw more. 1600 W is the top of the mainstream ATX lines (e.g. Corsair AX1600i,
#   https://www.anandtech.com/show/12645/the-corsair-ax1600i-psu-review-unparalleled-performance); a North American
#   120 V / 15 A circuit carries 1800 W, 1440 W continuous under the 80 % rule
#   (https://forums.overclockersclub.com/topic/199609-1200w-1600w-psus-pushing-the-limits-of-the-electrical-outlet/),
#   so a larger supply needs a 20 A or 230 V circuit: say `psu N W` then.
# - Platform power: the CPU package draws at most 230 W on AM5 (AMD: "Socket AM5 supports up to a 170W TDP with a
#   PPT up to 230W", https://www.anandtech.com/show/17418/amd-corrects-socket-am5-power-specifications-170w-tdp-and-230w-ppt;
#   AM4's is lower, 142 W, as the same reports give it), plus 70 W for board, chipset, DIMMs, drives and fans
#   (estimate): BOX_BASE_WATTS = 300.
MIN_LANES_PER_GPU = 4
LANES_RESERVED = 4
DEFAULT_PSU_WATTS = 1600.0
AM5_PPT_WATTS = 230.0
PLATFORM_REST_WATTS = 70.0  # estimate
BOX_BASE_WATTS = AM5_PPT_WATTS + PLATFORM_REST_WATTS
HOST_RESERVED_BYTES = F.HOST_RESERVED_BYTES
# Devices offered for purchase by default: PCIe cards with a current price in prices.yaml (NVIDIA: one CUDA build)
DEFAULT_BUY = ("rtx-3090", "rtx-4090", "rtx-5090", "rtx-pro-6000")


@dataclass(frozen=True)
class DevRow:
    uid: str
    box: int
    acc: str
    owned: bool
    price: int  # USD (0 when owned)
    watts: int  # W (up)
    budget: int  # MiB (down)
    runtime: int  # MiB (up), on every used device
    layer_mem: tuple[int, ...]  # MiB per layer: dense weights + KV (up)
    expert_mem: int  # MiB per MoE layer's routed experts (up; the largest MoE layer)
    global_mem: int  # MiB of head/norms (+ llama.cpp's embedding) on the device of the last layer (up)
    first_mem: int  # MiB on the device holding layer 0 (vLLM's embedding table; up)
    layer_read: tuple[int, ...]  # time units per layer on this device, memory side (dense + KV read)
    layer_comp: tuple[int, ...]  # time units per layer, compute side
    expert_read: int
    expert_comp: int
    global_read: int
    global_comp: int
    hop: int  # time units of one activation hop into this device (PCIe)


@dataclass(frozen=True)
class BoxRow:
    name: str
    dram_base: int  # MB owned (down)
    dram_max: int  # MB the platform holds (down)
    dram_price_per_gb: int  # USD per GB bought (up); 0 when buying is off
    reserve: int  # MB kept for OS/engine when any expert layer lives off the GPUs (up)
    expert_host: int  # MB per MoE layer's experts in DRAM or on NVMe (up)
    cpu_time: int  # time units per MoE layer computed by the CPU from DRAM (up)
    nvme_time: int  # time units per MoE layer read from NVMe (up); 0 = no NVMe
    nvme_cap: int  # MB (down)
    slots: int  # most GPUs the box takes (lanes // x4)
    watts_cap: int  # W the cards may draw (down): PSU - platform
    net: int = 0  # time units of the two network crossings per token when any layer is here (0: the main box)
    remote: bool = False  # a ggml-rpc-server box: its routed experts stay on its GPUs (no CPU/NVMe tier)


@dataclass(frozen=True)
class Instance:
    n_layers: int
    moe: tuple[bool, ...]
    devs: tuple[DevRow, ...]
    boxes: tuple[BoxRow, ...]
    net_logits: int  # extra time units when the last layer is on a remote box: its logits cross the network
    fixed_time: int  # engine overheads independent of placement (up)
    step_limit: int | None  # time units (down)
    budget: int | None  # USD (down)
    gpus: tuple[Gpu, ...] = field(default=(), compare=False)
    host_experts: bool = True  # the engine can compute routed experts on the CPU (llama.cpp yes, vLLM no)

    @property
    def moe_count(self) -> int:
        return sum(self.moe)

    def host_tiers(self, box: int) -> bool:
        """Can routed experts of this box's layers sit in DRAM/on NVMe (computed by its CPU)?"""
        return self.host_experts and not self.boxes[box].remote


# Bytes per element of what crosses a link per token. llama.cpp keeps the hidden state in F32 between its graph
# splits (src/llama-graph.cpp:2389, inp_embd is GGML_TYPE_F32; get_rows returns F32); vLLM passes bf16 hidden
# states between pipeline stages (the model dtype of these plans). Logits come back as F32 (llama.h:
# `float * llama_get_logits`).
ACT_ELEM_BYTES = {"llamacpp": 4.0, "vllm": 2.0}
LOGIT_ELEM_BYTES = 4.0


def act_bytes(ml: ModelLayers, hidden_size: int) -> float:
    """Activation bytes one token step moves between two stages (all sequences of the batch)."""
    return ml.concurrency * hidden_size * ACT_ELEM_BYTES.get(ml.engine, 2.0)


def network_seconds(ml: ModelLayers, hidden_size: int, vocab_size: int, link_key: str) -> tuple[float, float]:
    """Per-token network time of llama.cpp RPC: (each remote box holding layers, extra when the LAST layer is
    remote). The main process drives every graph split (ggml-rpc.cpp ggml_backend_rpc_buffer_cpy_tensor copies only
    within one server and returns false across servers, so such a copy goes through the client as get_tensor +
    set_tensor), so a remote box costs two crossings per token: the hidden state in and back out, each bytes / link
    bandwidth + link latency. When the last layer (and so the output head) is remote, what comes back is the logits
    (vocab x F32 per sequence) instead of the hidden state. Neglected: the small RPC_CMD_COPY_TENSOR round trip
    between two GPUs of the same remote box (one link latency, tens of microseconds, per such boundary)."""
    link = load_hardware().interconnects[link_key]
    act = act_bytes(ml, hidden_size)
    logits = ml.concurrency * vocab_size * LOGIT_ELEM_BYTES
    per_box = 2.0 * (act / link.bw_bytes_per_s + link.latency_s)
    return per_box, max(0.0, logits - act) / link.bw_bytes_per_s


def _purchasable(inv: Inventory, buy: tuple[str, ...], cap: int) -> list[Gpu]:
    hw = load_hardware()
    out = []
    for bi, b in enumerate(inv.boxes):
        for key in buy:
            acc = hw.accelerators[key]
            p = purchase_usd(key)
            if p is None or p.usd is None or not p.available:
                continue
            for k in range(cap):
                out.append(
                    Gpu(uid=f"{b.name}/buy-{key}-{k}", box=bi, cuda=-1, acc=acc, owned=False, price_usd=float(p.usd))
                )
    return out


def build_instance(
    m: ResolvedModel,
    ml: ModelLayers,
    inv: Inventory,
    *,
    tok_s: float | None = None,
    buy: tuple[str, ...] | None = None,
    buy_dram: bool = False,
    max_budget: float | None = None,
    max_buy_per_type: int = 2,
) -> Instance:
    """The integer instance for `ml` on `inv` (plus purchasable devices when `buy` is given)."""
    hw = load_hardware()
    spec = m.spec
    gpus = list(inv.gpus)
    if buy is not None:
        for key in buy:
            if key not in hw.accelerators:
                raise InputError(f"unknown accelerator to buy: {key!r}")
        gpus += _purchasable(inv, buy, max_buy_per_type)
    moe = tuple(l.is_moe for l in ml.layers)
    exp_bytes = max((l.expert_bytes for l in ml.layers if l.is_moe), default=0.0)
    exp_read = max((l.expert_read for l in ml.layers if l.is_moe), default=0.0)
    exp_flops = max((l.expert_flops for l in ml.layers if l.is_moe), default=0.0)
    act = act_bytes(ml, spec.hidden_size)
    devs = []
    for g in gpus:
        r = device_rates(g.acc, ml, spec.vocab_size, spec.hidden_size)
        box = inv.boxes[g.box]
        link = hw.interconnects[g.acc.host_link]
        n_box = max(1, len(box.gpus))
        lanes = max(MIN_LANES_PER_GPU, min(16, (box.host.pcie_lanes - LANES_RESERVED) // n_box))
        hop_s = act / (link.bw_bytes_per_s * lanes / 16 * F.PCIE_EFFICIENCY.value) + link.latency_s
        if not r.fits_outside:
            continue  # vLLM's CUDA context does not fit outside gpu_memory_utilization on this card
        devs.append(
            DevRow(
                uid=g.uid,
                box=g.box,
                acc=g.acc.key,
                owned=g.owned,
                price=up(g.price_usd, 1.0),
                watts=up(g.acc.tdp_watts or 0.0, 1.0),
                budget=down(r.budget_bytes, DEV_MEM_UNIT),
                runtime=up(r.runtime_bytes, DEV_MEM_UNIT),
                layer_mem=tuple(up(l.dense_bytes + l.kv_bytes, DEV_MEM_UNIT) for l in ml.layers),
                expert_mem=up(exp_bytes, DEV_MEM_UNIT),
                global_mem=up(ml.global_bytes, DEV_MEM_UNIT),
                first_mem=up(ml.first_bytes, DEV_MEM_UNIT),
                layer_read=tuple(up((l.dense_read + l.kv_read) / r.bytes_per_s, TIME_UNIT) for l in ml.layers),
                layer_comp=tuple(up(l.dense_flops / r.flops, TIME_UNIT) for l in ml.layers),
                expert_read=up(exp_read / r.bytes_per_s, TIME_UNIT),
                expert_comp=up(exp_flops / r.flops, TIME_UNIT),
                global_read=up(ml.global_read / r.bytes_per_s, TIME_UNIT),
                global_comp=up(ml.global_flops / r.flops, TIME_UNIT),
                hop=up(hop_s, TIME_UNIT),
            )
        )
    per_box_s, logits_s = network_seconds(ml, spec.hidden_size, spec.vocab_size, inv.link)
    boxes = []
    for bi, b in enumerate(inv.boxes):
        h = b.host
        owned_watts = sum(g.acc.tdp_watts or 0.0 for g in b.gpus) + BOX_BASE_WATTS
        boxes.append(
            BoxRow(
                name=b.name,
                dram_base=down(b.dram_bytes, HOST_MEM_UNIT),
                dram_max=down(max(h.max_dram_bytes, b.dram_bytes), HOST_MEM_UNIT)
                if buy_dram
                else down(b.dram_bytes, HOST_MEM_UNIT),
                dram_price_per_gb=up(h.dram_usd_per_gb, 1.0) if buy_dram else 0,
                reserve=up(HOST_RESERVED_BYTES, HOST_MEM_UNIT),
                expert_host=up(exp_bytes, HOST_MEM_UNIT),
                cpu_time=up(exp_read / host_bandwidth(b.cpu_host, "llamacpp").bytes_per_s, TIME_UNIT),
                nvme_time=up(exp_read / (b.nvme_bw * F.NVME_EFFICIENCY.value), TIME_UNIT) if b.nvme_bytes else 0,
                nvme_cap=down(b.nvme_bytes, HOST_MEM_UNIT),
                slots=max(len(b.gpus), (h.pcie_lanes - LANES_RESERVED) // MIN_LANES_PER_GPU),
                watts_cap=down(max(b.psu_watts or DEFAULT_PSU_WATTS, owned_watts) - BOX_BASE_WATTS, 1.0),
                net=up(per_box_s, TIME_UNIT) if bi else 0,
                remote=bi > 0,
            )
        )
    return Instance(
        n_layers=ml.n,
        moe=moe,
        devs=tuple(devs),
        boxes=tuple(boxes),
        net_logits=up(logits_s, TIME_UNIT) if len(inv.boxes) > 1 else 0,
        fixed_time=up(ml.fixed_overhead_s, TIME_UNIT),
        step_limit=down(1.0 / tok_s, TIME_UNIT) if tok_s else None,
        budget=down(max_budget, 1.0) if max_budget is not None else None,
        gpus=tuple(gpus),
        host_experts=ml.engine == "llamacpp",
    )


# ------------------------------------------------------------------------------------------------ evaluation
@dataclass(frozen=True)
class Assignment:
    """A plan in integers: stages in order as (device index, first layer, end layer, gpu, cpu, nvme expert layers),
    DRAM bought per box in GB."""

    stages: tuple[tuple[int, int, int, int, int, int], ...]
    dram_gb: tuple[int, ...]


def evaluate_int(inst: Instance, a: Assignment) -> tuple[bool, int, int, str]:
    """(feasible, step time units, cost USD, reason) of an assignment: the arithmetic of the CP-SAT model."""
    used = [s[0] for s in a.stages]
    if len(set(used)) != len(used):
        return False, 0, 0, "device used twice"
    pos = 0
    for d, s, e, g, c, n in a.stages:
        if s != pos or e <= s:
            return False, 0, 0, "layers not contiguous"
        pos = e
        if g + c + n != sum(inst.moe[s:e]) or min(g, c, n) < 0:
            return False, 0, 0, "expert layers do not add up"
        if (c or n) and not inst.host_tiers(inst.devs[d].box):
            return False, 0, 0, "engine (or a remote box) keeps every expert on its GPU"
    if pos != inst.n_layers:
        return False, 0, 0, "not every layer placed"
    t = inst.fixed_time
    cost = 0
    last_dev = a.stages[-1][0]
    off = [0] * len(inst.boxes)
    cpu = [0] * len(inst.boxes)
    nv = [0] * len(inst.boxes)
    nboards = [0] * len(inst.boxes)
    watts = [0] * len(inst.boxes)
    box_seq: list[int] = []
    for i, (d, s, e, g, c, n) in enumerate(a.stages):
        r = inst.devs[d]
        mem = (
            sum(r.layer_mem[s:e])
            + g * r.expert_mem
            + r.runtime
            + (r.global_mem if d == last_dev else 0)
            + (r.first_mem if i == 0 else 0)
        )
        if mem > r.budget:
            return False, 0, 0, f"device {r.uid} memory"
        rd = sum(r.layer_read[s:e]) + g * r.expert_read + (r.global_read if d == last_dev else 0)
        cp = sum(r.layer_comp[s:e]) + g * r.expert_comp + (r.global_comp if d == last_dev else 0)
        b = inst.boxes[r.box]
        if n and not b.nvme_time:
            return False, 0, 0, "no NVMe"
        t += max(rd, cp) + c * b.cpu_time + n * b.nvme_time + (r.hop if i > 0 else 0)
        cpu[r.box] += c
        nv[r.box] += n
        if c + n:
            off[r.box] = 1
        if not box_seq or box_seq[-1] != r.box:
            if r.box in box_seq:
                return False, 0, 0, "box layers not contiguous"
            box_seq.append(r.box)
        if not r.owned:
            cost += r.price
    t += sum(inst.boxes[k].net for k in box_seq)
    if inst.boxes[inst.devs[last_dev].box].remote:
        t += inst.net_logits
    for d, r in enumerate(inst.devs):
        if r.owned or d in used:
            nboards[r.box] += 1
            watts[r.box] += r.watts
    for k, b in enumerate(inst.boxes):
        gb = a.dram_gb[k]
        if gb < 0 or b.dram_base + GB_UNITS * gb > b.dram_max:
            return False, 0, 0, "DRAM purchase"
        if b.reserve * off[k] + b.expert_host * cpu[k] > b.dram_base + GB_UNITS * gb:
            return False, 0, 0, f"{b.name} DRAM"
        if b.expert_host * nv[k] > b.nvme_cap:
            return False, 0, 0, f"{b.name} NVMe"
        if nboards[k] > b.slots or watts[k] > b.watts_cap:
            return False, 0, 0, f"{b.name} slots/power"
        cost += gb * b.dram_price_per_gb
    if inst.step_limit is not None and t > inst.step_limit:
        return False, t, cost, "decode time"
    if inst.budget is not None and cost > inst.budget:
        return False, t, cost, "budget"
    return True, t, cost, ""


def min_dram_gb(inst: Instance, stages: Sequence[tuple[int, int, int, int, int, int]]) -> tuple[int, ...]:
    """Least DRAM to buy per box for these stages (what any optimum buys)."""
    out = []
    for k, b in enumerate(inst.boxes):
        cpu = sum(st[4] for st in stages if inst.devs[st[0]].box == k)
        off = any(st[4] + st[5] for st in stages if inst.devs[st[0]].box == k)
        need = b.reserve * off + b.expert_host * cpu - b.dram_base
        out.append(0 if need <= 0 else -(-need // GB_UNITS))
    return tuple(out)


def period_int(inst: Instance, a: Assignment) -> int:
    """Pipelined period of a (feasible) assignment: the busiest stage (its layers, its CPU/NVMe experts, the hop into
    it) or the busiest box CPU, in time units (the model's `throughput` objective)."""
    last_dev = a.stages[-1][0]
    worst = 0
    host = [0] * len(inst.boxes)
    for i, (d, s, e, g, c, n) in enumerate(a.stages):
        r = inst.devs[d]
        b = inst.boxes[r.box]
        rd = sum(r.layer_read[s:e]) + g * r.expert_read + (r.global_read if d == last_dev else 0)
        cp = sum(r.layer_comp[s:e]) + g * r.expert_comp + (r.global_comp if d == last_dev else 0)
        worst = max(worst, max(rd, cp) + c * b.cpu_time + n * b.nvme_time + (r.hop if i > 0 else 0))
        host[r.box] += c * b.cpu_time + n * b.nvme_time
    return max(worst, *host)
