"""CP-SAT assignment model for mixed hardware (integers only; no physics here).

Decision (per layer l, device d): `a[l,d]` = layer l lives on device d (exactly one per layer). Each device's layers
form ONE contiguous block (`s[l,d]` marks a block start; at most one per device), so the device order is itself
decided by the solver (llama.cpp layer split in CUDA_VISIBLE_DEVICES order; vLLM uneven PP stages). Each box's layers
are contiguous too (one network hop per box boundary). Per device, integer counts of its MoE layers whose routed
experts sit on the GPU (`g`), in host DRAM computed by the CPU (`c`) or on NVMe (`n`): g + c + n = its MoE layers
(routed experts are the same size in every MoE layer of the supported models, so counts are exact).

Constraints: device memory (layers' dense weights + KV + g x experts + the head on the device holding the last
layer + engine runtime on used devices); per box host DRAM (reserve when anything is offloaded + c x experts <= owned
+ bought GB), NVMe capacity, GPU slots and power (owned cards + bought cards); decode-time target; budget.
Decode time per token = sum over devices of max(memory time, compute time) of their layers + CPU-expert time +
NVMe time + PCIe hops between consecutive stages + network crossings (two per remote box holding layers, llama.cpp
RPC through the main process, plus the logits when the last layer is remote) + fixed engine overheads. Remote boxes
(ggml-rpc-server) keep their routed experts on their GPUs.

Objectives: `latency` (minimise decode time), `cost` (minimise purchases subject to the target, then decode time) or
`throughput` (minimise the pipelined period, the busiest stage or host CPU, then decode time: the rate when sequences
stream through the stages, as vLLM pipeline parallelism runs micro-batches; the per-layer costs stay those of the
question's batch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from optimizer.hetero.scaling import GB_UNITS
from optimizer.hetero.table import Assignment, Instance
from optimizer.solver import sat

STATUS = {
    sat.OPTIMAL: "OPTIMAL",
    sat.FEASIBLE: "FEASIBLE",
    sat.INFEASIBLE: "INFEASIBLE",
    sat.MODEL_INVALID: "MODEL_INVALID",
    sat.UNKNOWN: "UNKNOWN",
}


@dataclass(frozen=True)
class MixedSolution:
    status: str
    assignment: Assignment | None
    time_units: int | None
    cost: int | None
    bound: float | None
    wall_s: float


class MixedModel:
    def __init__(self, inst: Instance, objective: str = "latency"):
        if objective not in ("latency", "cost", "throughput"):
            raise ValueError(objective)
        self.inst, self.objective = inst, objective
        m = sat.CpModel()
        self.m = m
        L, D, B = inst.n_layers, len(inst.devs), len(inst.boxes)
        moe_idx = [l for l in range(L) if inst.moe[l]]
        a = {(l, d): m.new_bool_var(f"a_{l}_{d}") for l in range(L) for d in range(D)}
        self.a = a
        for l in range(L):
            m.add_exactly_one(a[l, d] for d in range(D))
        # contiguity: exact block-start indicators, at most one block per device
        starts = {}
        for d in range(D):
            row = []
            for l in range(L):
                s = m.new_bool_var(f"s_{l}_{d}")
                m.add_implication(s, a[l, d])
                if l == 0:
                    m.add(s == a[0, d])
                else:
                    m.add(s >= a[l, d] - a[l - 1, d])
                    m.add_implication(s, a[l - 1, d].Not())
                row.append(s)
            m.add(sum(row) <= 1)
            starts[d] = row
        used: dict[int, sat.IntVar] = {}
        self.used = used
        for d in range(D):
            u = m.new_bool_var(f"used_{d}")
            m.add(u == sum(starts[d]))
            used[d] = u
        # boxes contiguous as well
        box_used = {}
        for b in range(B):
            members = [d for d in range(D) if inst.devs[d].box == b]
            ub = m.new_bool_var(f"box_used_{b}")
            for d in members:
                m.add_implication(used[d], ub)
            m.add(ub <= sum(used[d] for d in members)) if members else m.add(ub == 0)
            box_used[b] = ub
            if B > 1:
                bs = []
                for l in range(L):
                    s = m.new_bool_var(f"bs_{l}_{b}")
                    here = sum(a[l, d] for d in members)
                    if l == 0:
                        m.add(s == here)
                    else:
                        m.add(s >= here - sum(a[l - 1, d] for d in members))
                    bs.append(s)
                m.add(sum(bs) <= 1)
        # expert tiers per device
        self.g, self.c, self.n = {}, {}, {}
        for d in range(D):
            moe_d = sum(a[l, d] for l in moe_idx)
            hi = len(moe_idx)
            g = m.new_int_var(0, hi, f"g_{d}")
            bx = inst.boxes[inst.devs[d].box]
            host = inst.host_tiers(inst.devs[d].box)
            c = m.new_int_var(0, hi if host else 0, f"c_{d}")
            n = m.new_int_var(0, hi if bx.nvme_time and host else 0, f"n_{d}")
            m.add(g + c + n == moe_d)
            self.g[d], self.c[d], self.n[d] = g, c, n
        # buying: a purchasable device must be bought to be used; symmetric copies in order
        self.buy = {}
        for d, r in enumerate(inst.devs):
            if not r.owned:
                self.buy[d] = used[d]
        for d in range(D - 1):
            r, q = inst.devs[d], inst.devs[d + 1]
            if {**r.__dict__, "uid": ""} == {**q.__dict__, "uid": ""}:  # interchangeable devices
                m.add(used[d] >= used[d + 1])
                pos_d = sum(l * starts[d][l] for l in range(L))
                pos_q = sum(l * starts[d + 1][l] for l in range(L))
                m.add(pos_d <= pos_q).only_enforce_if(used[d + 1])
        last = {d: a[L - 1, d] for d in range(D)}
        # device memory and per-device time
        times = []
        for d, r in enumerate(inst.devs):
            mem = (
                sum(r.layer_mem[l] * a[l, d] for l in range(L))
                + r.expert_mem * self.g[d]
                + r.global_mem * last[d]
                + r.first_mem * a[0, d]
                + r.runtime * used[d]
            )
            m.add(mem <= r.budget)
            rd = sum(r.layer_read[l] * a[l, d] for l in range(L)) + r.expert_read * self.g[d] + r.global_read * last[d]
            cp = sum(r.layer_comp[l] * a[l, d] for l in range(L)) + r.expert_comp * self.g[d] + r.global_comp * last[d]
            t_ub = (
                sum(max(x, y) for x, y in zip(r.layer_read, r.layer_comp, strict=True))
                + len(moe_idx) * max(r.expert_read, r.expert_comp)
                + max(r.global_read, r.global_comp)
            )
            t = m.new_int_var(0, t_ub, f"t_{d}")
            m.add(t >= rd)
            m.add(t >= cp)
            times.append(t)
        # host tiers per box
        self.dram_gb = {}
        host_time = []
        cost_terms = []
        for b, bx in enumerate(inst.boxes):
            members = [d for d in range(D) if inst.devs[d].box == b]
            max_gb = max(0, (bx.dram_max - bx.dram_base) // GB_UNITS)
            e = m.new_int_var(0, max_gb, f"dram_gb_{b}")
            self.dram_gb[b] = e
            off = m.new_bool_var(f"off_{b}")
            cpu_b = sum(self.c[d] for d in members)
            nv_b = sum(self.n[d] for d in members)
            big = len(moe_idx) + 1
            m.add(cpu_b + nv_b <= big * off)
            m.add(bx.reserve * off + bx.expert_host * cpu_b <= bx.dram_base + GB_UNITS * e)
            m.add(bx.expert_host * nv_b <= bx.nvme_cap)
            host_time += [bx.cpu_time * cpu_b, bx.nvme_time * nv_b]
            boards = sum(1 if inst.devs[d].owned else used[d] for d in members)
            m.add(boards <= bx.slots)
            watts = sum(inst.devs[d].watts * (1 if inst.devs[d].owned else used[d]) for d in members)
            m.add(watts <= bx.watts_cap)
            cost_terms.append(bx.dram_price_per_gb * e)
        cost_terms += [r.price * used[d] for d, r in enumerate(inst.devs) if not r.owned]
        hops = sum(r.hop * (used[d] - a[0, d]) for d, r in enumerate(inst.devs))
        # llama.cpp RPC: every remote box holding layers costs its two crossings per token (in and back out through
        # the main process); the logits cross once more when the last layer is remote
        net = sum(bx.net * box_used[b] for b, bx in enumerate(inst.boxes) if bx.net) + inst.net_logits * sum(
            last[d] for d in range(D) if inst.boxes[inst.devs[d].box].remote
        )
        self.step = sum(times) + sum(host_time) + hops + net + inst.fixed_time
        self.cost = sum(cost_terms)
        # pipelined period: when sequences stream through the stages, each stage is busy for its own layers, its
        # CPU/NVMe experts and the hop into it, and each box's CPU serves the expert layers of all its stages
        self.period = None
        if objective == "throughput":
            big = sum(max(x, y) for r in inst.devs for x, y in zip(r.layer_read, r.layer_comp, strict=True)) + 10**12
            per = m.new_int_var(0, big, "period")
            for d, r in enumerate(inst.devs):
                bx = inst.boxes[r.box]
                m.add(
                    per >= times[d] + bx.cpu_time * self.c[d] + bx.nvme_time * self.n[d] + r.hop * (used[d] - a[0, d])
                )
            for b, bx in enumerate(inst.boxes):
                members = [d for d in range(D) if inst.devs[d].box == b]
                m.add(per >= sum(bx.cpu_time * self.c[d] + bx.nvme_time * self.n[d] for d in members))
            self.period = per
        if inst.step_limit is not None:
            m.add(self.step <= inst.step_limit)
        if inst.budget is not None:
            m.add(self.cost <= inst.budget)
        self.starts = starts

    def _assignment(self, s: sat.CpSolver) -> Assignment:
        inst = self.inst
        L = inst.n_layers
        blocks = []
        for d in range(len(inst.devs)):
            ls = [l for l in range(L) if s.boolean_value(self.a[l, d])]
            if ls:
                blocks.append((ls[0], ls[-1] + 1, d))
        blocks.sort()
        # canonical DRAM/NVMe split: inside a box only the totals matter (same CPU, DRAM and drive), so hand the
        # box's DRAM layers to its stages in order and the rest to NVMe (deterministic whatever the search found)
        left: dict[int, int] = {}
        for _, _, d in blocks:
            b = inst.devs[d].box
            left[b] = left.get(b, 0) + int(s.value(self.c[d]))
        stages: list[tuple[int, int, int, int, int, int]] = []
        for st, en, d in blocks:
            g = int(s.value(self.g[d]))
            off = int(s.value(self.c[d])) + int(s.value(self.n[d]))
            b = inst.devs[d].box
            c = min(off, left[b])
            left[b] -= c
            stages.append((d, st, en, g, c, off - c))
        return Assignment(stages=tuple(stages),
                          dram_gb=tuple(int(s.value(self.dram_gb[b])) for b in range(len(inst.boxes))))

    def solve(self, time_limit_s: float = 30.0, workers: int = 1, seed: int = 0) -> MixedSolution:
        t0 = time.perf_counter()
        objectives: dict[str, list[Any]] = {"latency": [self.step], "cost": [self.cost, self.step],
                                            "throughput": [self.period, self.step]}
        stages = objectives[self.objective]
        status, bound, sol = "INFEASIBLE", None, None
        for k, expr in enumerate(stages):
            s = sat.CpSolver()
            s.parameters.max_time_in_seconds = time_limit_s
            s.parameters.num_workers = workers
            s.parameters.random_seed = seed
            self.m.minimize(expr)
            st = s.solve(self.m)
            if st not in (sat.OPTIMAL, sat.FEASIBLE):
                if k == 0:
                    return MixedSolution(STATUS.get(st, str(st)), None, None, None, None, time.perf_counter() - t0)
                break
            sol = self._assignment(s)
            if k == 0:
                status = STATUS.get(st, str(st))
                bound = float(s.best_objective_bound)
            step, cost = int(s.value(self.step)), int(s.value(self.cost))
            if st != sat.OPTIMAL:
                break
            self.m.add(expr == round(s.objective_value))
            self.m.clear_hints()
            for v in self.a.values():
                self.m.add_hint(v, s.boolean_value(v))
        return MixedSolution(status, sol, step, cost, bound, time.perf_counter() - t0)
