"""Mixed hardware benchmark (issue 15). Prints:

1. A 5-device, 4-type inventory with DRAM and NVMe, DeepSeek-V3 (61 layers, 58 MoE): CP-SAT's proven optimum and
   its time; the size of the exhaustive assignment space and the enumerator's measured rate, so the enumeration time
   is extrapolated (it is astronomically large; said so). On reduced instances of the same inventory (first N
   layers, every capacity scaled by N/61) both run to the end in this process: same optimum, measured ratio.
2. V4-Flash at 384K, >= 10 tok/s on "1x rtx-4090, 1x rtx-3090, 128GB ddr5" vs the 4090 alone.
3. Owned + buy: V4-Flash at 128K, >= 20 tok/s from "2x rtx-3090, 128GB ddr4".

    python bench/hetero.py
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from optimizer.catalog.models import resolve_model  # noqa: E402
from optimizer.estimate.layers import model_layers  # noqa: E402
from optimizer.hetero import cheapest_mixed, describe  # noqa: E402
from optimizer.hetero.inventory import parse_inventory  # noqa: E402
from optimizer.hetero.model import MixedModel  # noqa: E402
from optimizer.hetero.oracle import brute_force, count_assignments  # noqa: E402
from optimizer.hetero.plan import stages_of  # noqa: E402
from optimizer.hetero.table import BOX_BASE_WATTS, DEFAULT_PSU_WATTS, TIME_UNIT, build_instance  # noqa: E402
from optimizer.hetero.validate import check_plan  # noqa: E402

BIG = "1x rtx-5090, 2x rtx-4090, 1x rtx-3090, 1x rtx-a6000, 192GB ddr5, 2TB nvme"


def reduced(inst, n: int, total: int):
    f = n / total
    devs = tuple(
        replace(
            r,
            budget=int(r.budget * f),
            layer_mem=r.layer_mem[:n],
            layer_read=r.layer_read[:n],
            layer_comp=r.layer_comp[:n],
        )
        for r in inst.devs
    )
    boxes = tuple(
        replace(
            b,
            dram_base=int(b.dram_base * f),
            dram_max=int(b.dram_max * f),
            nvme_cap=int(b.nvme_cap * f),
            reserve=int(b.reserve * f),
        )
        for b in inst.boxes
    )
    return replace(inst, n_layers=n, moe=inst.moe[:n], devs=devs, boxes=boxes)


CHECKED: list[bool] = []  # the independent check's verdict on every plan of the run


def part1() -> None:
    m = resolve_model("deepseek-v3")
    inv = parse_inventory(BIG)
    quant, ctx = "q4_k_m", 32768
    ml = model_layers(m, quant, "llamacpp", ctx, 1)
    inst = build_instance(m, ml, inv)
    print(f"== 1. {m.key} ({ml.n} layers, {len(ml.moe_indices)} MoE), {quant}, context {ctx:,}, llama.cpp")
    print(f"   inventory: {BIG}")
    t0 = time.perf_counter()
    sol = MixedModel(inst).solve(workers=1, seed=0)
    t_cp = time.perf_counter() - t0
    stages = stages_of(inst, sol.assignment)
    chk = check_plan(m, ml, inv, stages, sol.assignment.dram_gb)
    CHECKED.append(chk.ok)
    print(
        f"   CP-SAT: {sol.status}, {sol.time_units * TIME_UNIT * 1e3:.3f} ms/token (bound "
        f"{sol.bound * TIME_UNIT * 1e3:.3f}), {t_cp:.2f} s; "
        f"independent check {'passes' if chk.ok else chk.violations}, "
        f"{chk.tok_s:.2f} tok/s"
    )
    for sc in chk.stages:
        s = sc.stage
        print(
            f"     {s.uid:<11} {s.accelerator:<10} layers {s.start:>2}-{s.end - 1:<2} experts GPU "
            f"{len(s.gpu_expert_layers):>2} / DRAM {len(s.cpu_expert_layers):>2} / NVMe {len(s.nvme_expert_layers):>2}"
        )
    space = count_assignments(inst)
    # enumerator rate, measured on the largest reduced instance below
    rows = []
    for n in (6, 7, 8):
        r = reduced(inst, n, ml.n)
        t0 = time.perf_counter()
        s = MixedModel(r).solve(workers=1, seed=0)
        tc = time.perf_counter() - t0
        t0 = time.perf_counter()
        bf = brute_force(r)
        tb = time.perf_counter() - t0
        rows.append((n, count_assignments(r), s.time_units, bf[0] if bf else None, tc, tb))
    print("   reduced instances (same inventory, first N layers, capacities x N/61), both run to the end:")
    for n, cnt, t_cp_u, t_bf_u, tc, tb in rows:
        same = "same optimum" if t_cp_u == t_bf_u else f"DIFFERENT: {t_cp_u} vs {t_bf_u}"
        print(
            f"     N={n}: {cnt:>9,} assignments; CP-SAT {tc:.3f} s, enumeration {tb:.2f} s, {same}; "
            f"CP-SAT {tb / tc:,.0f}x faster"
        )
    n, cnt, *_, tb = rows[-1]
    rate = cnt / tb
    est = space / rate
    print(
        f"   full instance: {space:.3e} assignments; at the enumerator's measured {rate:,.0f} assignments/s that is "
        f"{est:.2e} s (~{est / 3.15e7:,.0f} years), extrapolated, not run; CP-SAT {t_cp:.2f} s: "
        f"~{est / t_cp:.1e}x faster"
    )


def part2() -> None:
    print("== 2. deepseek-v4-flash @ 393,216 tokens, >= 10 tok/s, owned '1x rtx-4090, 1x rtx-3090, 128GB ddr5'")
    both = cheapest_mixed("deepseek-v4-flash", "1x rtx-4090, 1x rtx-3090, 128GB ddr5", context=393216, tok_s=10)
    alone = cheapest_mixed("deepseek-v4-flash", "1x rtx-4090, 128GB ddr5", context=393216, tok_s=10)
    same_q = cheapest_mixed(
        "deepseek-v4-flash", "1x rtx-4090, 1x rtx-3090, 128GB ddr5", context=393216, tok_s=10, quants=[alone.plan.quant]
    )
    print("   " + describe(both).replace("\n", "\n   "))
    print(
        f"   4090 alone (what `rigopt cheapest --owned` returns today): {alone.plan.quant}, "
        f"{alone.plan.tok_s:.1f} tok/s"
    )
    print(
        f"   both GPUs at the same {same_q.plan.quant}: {same_q.plan.tok_s:.1f} tok/s "
        f"({same_q.plan.tok_s / alone.plan.tok_s - 1:+.0%} over the 4090 alone; devices "
        f"{', '.join(s.accelerator for s in same_q.plan.stages)})"
    )
    print(
        f"   the mixed planner's own choice spends the 3090's 24 GB on quality instead: {both.plan.quant} "
        f"(higher expert bits than {alone.plan.quant}) at {both.plan.tok_s:.1f} tok/s, still >= 10"
    )


def part3() -> None:
    inv = "2x rtx-3090, 128GB ddr4"
    print(f"== 3. deepseek-v4-flash @ 131,072 tokens, >= 20 tok/s, owned '{inv}', buying allowed")
    free = cheapest_mixed("deepseek-v4-flash", inv, context=131072, tok_s=20, buy=True)
    print(
        f"   any quality: ${free.plan.cost_usd:,.0f} to buy: {free.plan.quant} already gives "
        f"{free.plan.tok_s:.1f} tok/s"
    )
    t0 = time.perf_counter()
    q4 = cheapest_mixed("deepseek-v4-flash", inv, context=131072, tok_s=20, buy=True, min_bits=4)
    print(f"   experts >= 4 bits ({time.perf_counter() - t0:.1f} s over {len(q4.tried)} quantizations):")
    print("   " + describe(q4).replace("\n", "\n   "))
    from optimizer.catalog.hardware import purchase_usd

    for key in q4.plan.bought:
        p = purchase_usd(key)
        print(f"   price: {key} ${p.usd:,.0f} (prices.yaml, as of {p.as_of}, source {p.source})")
    cheaper = cheapest_mixed(
        "deepseek-v4-flash", inv, context=131072, tok_s=20, buy=("rtx-3090", "rtx-4090", "rtx-5090"), min_bits=4
    )
    print(
        f"   why not a cheaper card: 2x 3090 (700 W) + {BOX_BASE_WATTS:.0f} W platform leave "
        f"{DEFAULT_PSU_WATTS - 700 - BOX_BASE_WATTS:.0f} W of the default {DEFAULT_PSU_WATTS:.0f} W supply, so one "
        "card fits; with only 3090/4090/5090 on offer: "
        + (
            f"{cheaper.plan.bought} ${cheaper.plan.cost_usd:,.0f}"
            if cheaper.plan
            else "no plan meets 20 tok/s at >= 4 bits"
        )
    )


def part4() -> None:
    inv = "1x rtx-4090, 1x rtx-3090, 1x rtx-a6000, 64GB ddr5"
    print(f"== 4. vLLM uneven pipeline stages: qwen3-30b-a3b @ 32,768 x 4 on '{inv}'")
    r = cheapest_mixed("qwen3-30b-a3b", inv, context=32768, concurrency=4, engine="vllm")
    print("   " + describe(r).replace("\n", "\n   "))
    print("   VLLM_PP_LAYER_PARTITION=" + ",".join(str(s.end - s.start) for s in r.plan.stages))


def part5() -> None:
    base = "box1: 2x rtx-4090, 128GB ddr5; box2: 1x rtx-3090, 64GB ddr4"
    print(f"== 5. two boxes over llama.cpp RPC: deepseek-v4-flash @ 131,072 tokens, >= 5 tok/s, '{base}; net: ...'")
    from optimizer.export.hetero import launch_scripts

    for net in ("10gbe", "2.5gbe"):
        r = cheapest_mixed("deepseek-v4-flash", f"{base}; net: {net}", context=131072, tok_s=5)
        c = r.check
        boxes = sorted({s.box for s in r.plan.stages})
        print(
            f"   net {net}: {r.plan.quant}, {r.plan.tok_s:.1f} tok/s, stages on boxes {boxes}, network "
            f"{c.terms_s['network_hops'] * 1e3:.3f} ms of {c.step_time_s * 1e3:.2f} ms per token; check "
            f"{'passes' if c.ok else 'FAILS'}"
        )
    scripts = launch_scripts(r.plan)
    print(f"   export: one script per box: {', '.join(b for b, _ in scripts)} (llama-server --rpc; ggml-rpc-server)")


def checked_summary() -> None:
    n = len(CHECKED)
    ok = sum(CHECKED)
    print(f"== every mixed plan of this run re-checked in floats per device: {ok} of {n} pass")


if __name__ == "__main__":
    _orig = cheapest_mixed

    def cheapest_mixed(*a, **k):  # noqa: F811  (count every plan's independent check)
        r = _orig(*a, **k)
        if r.plan is not None:
            CHECKED.append(bool(r.check and r.check.ok))
        return r

    part1()
    part2()
    part3()
    part4()
    part5()
    checked_summary()
