"""CP-SAT's optimum equals the exhaustive enumerator's on small random mixed-hardware instances."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.catalog.models import resolve_model
from optimizer.estimate.layers import model_layers
from optimizer.hetero.inventory import parse_inventory
from optimizer.hetero.model import MixedModel
from optimizer.hetero.oracle import assignments, brute_force, count_assignments
from optimizer.hetero.table import BoxRow, DevRow, Instance, build_instance, evaluate_int, period_int


@st.composite
def instances(draw, buy: bool = False):
    L = draw(st.integers(2, 7))
    moe = tuple(draw(st.lists(st.booleans(), min_size=L, max_size=L)))
    n_dev = draw(st.integers(2, 3))
    n_box = draw(st.integers(1, 2))
    devs = []
    for d in range(n_dev):
        owned = not (buy and d == n_dev - 1)
        devs.append(
            DevRow(
                uid=f"box/d{d}",
                box=draw(st.integers(0, n_box - 1)),
                acc=f"t{draw(st.integers(0, 1))}",
                owned=owned,
                price=0 if owned else draw(st.integers(100, 3000)),
                watts=draw(st.integers(100, 600)),
                budget=draw(st.integers(30, 200)),
                runtime=draw(st.integers(0, 5)),
                layer_mem=tuple(draw(st.lists(st.integers(1, 15), min_size=L, max_size=L))),
                expert_mem=draw(st.integers(1, 30)),
                global_mem=draw(st.integers(0, 10)),
                first_mem=draw(st.integers(0, 10)),
                layer_read=tuple(draw(st.lists(st.integers(1, 50), min_size=L, max_size=L))),
                layer_comp=tuple(draw(st.lists(st.integers(1, 50), min_size=L, max_size=L))),
                expert_read=draw(st.integers(1, 60)),
                expert_comp=draw(st.integers(1, 60)),
                global_read=draw(st.integers(0, 20)),
                global_comp=draw(st.integers(0, 20)),
                hop=draw(st.integers(0, 9)),
            )
        )
    boxes = []
    for b in range(n_box):
        nvme = draw(st.booleans())
        base = draw(st.integers(0, 40)) * 1000
        boxes.append(
            BoxRow(
                name=f"box{b}",
                dram_base=base,
                dram_max=base + (draw(st.integers(0, 30)) * 1000 if buy else 0),
                dram_price_per_gb=draw(st.integers(1, 20)) if buy else 0,
                reserve=draw(st.integers(0, 4000)),
                expert_host=draw(st.integers(500, 9000)),
                cpu_time=draw(st.integers(20, 400)),
                nvme_time=draw(st.integers(200, 2000)) if nvme else 0,
                nvme_cap=draw(st.integers(0, 40000)) if nvme else 0,
                # a box powers and seats what it owns (build_instance guarantees it); purchases must fit the rest
                slots=sum(1 for r in devs if r.box == b and r.owned) + draw(st.integers(0, 2)),
                watts_cap=sum(r.watts for r in devs if r.box == b and r.owned) + draw(st.integers(0, 900)),
                # box 0 runs the engine; the others are RPC servers (network crossings, experts on their GPUs)
                net=draw(st.integers(0, 50)) if b else 0,
                remote=b > 0,
            )
        )
    limit = (
        draw(st.one_of(st.none(), st.integers(50, 3000)))
        if buy
        else draw(st.one_of(st.none(), st.none(), st.integers(100, 5000)))
    )
    return Instance(
        n_layers=L,
        moe=moe,
        devs=tuple(devs),
        boxes=tuple(boxes),
        net_logits=draw(st.integers(0, 30)),
        host_experts=draw(st.booleans()),
        fixed_time=draw(st.integers(0, 9)),
        step_limit=limit,
        budget=None,
    )


def _check(inst, objective):
    bf = brute_force(inst, objective)
    sol = MixedModel(inst, objective).solve(time_limit_s=20, workers=1, seed=0)
    if bf is None:
        assert sol.status == "INFEASIBLE"
        return
    assert sol.status == "OPTIMAL"
    ok, t, cost, why = evaluate_int(inst, sol.assignment)
    assert ok, why
    if objective == "latency":
        assert (t, sol.time_units) == (bf[0], bf[0])
    elif objective == "throughput":
        assert (period_int(inst, sol.assignment), t) == (period_int(inst, bf[2]), bf[0])
    else:
        assert (cost, t) == (bf[1], bf[0])


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(instances())
def test_cpsat_latency_optimum_equals_oracle(inst):
    _check(inst, "latency")


@settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(instances(buy=True))
def test_cpsat_cost_optimum_equals_oracle(inst):
    _check(inst, "cost")


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(instances())
def test_cpsat_throughput_optimum_equals_oracle(inst):
    _check(inst, "throughput")


def test_count_matches_enumeration():
    m = resolve_model("deepseek-v3")
    ml = model_layers(m, "q2_k", "llamacpp", 8192, 1)
    small = type(ml)(**{**ml.__dict__, "layers": ml.layers[:6]})
    inv = parse_inventory("1x rtx-4090, 1x rtx-3090, 1x rtx-a6000, 64GB ddr5, 1TB nvme")
    inst = build_instance(m, small, inv)
    assert count_assignments(inst) == sum(1 for _ in assignments(inst))


def test_real_small_instance_matches_oracle():
    """Three real cards of three types, the first 8 layers of DeepSeek-V3 (3 dense + 5 MoE), budgets scaled."""
    m = resolve_model("deepseek-v3")
    ml = model_layers(m, "q2_k", "llamacpp", 32768, 1)
    small = type(ml)(**{**ml.__dict__, "layers": ml.layers[:8]})
    inst = build_instance(m, small, parse_inventory("1x rtx-4090, 1x rtx-3090, 1x rtx-a6000, 32GB ddr5, 1TB nvme"))
    devs = tuple(type(r)(**{**r.__dict__, "budget": r.budget // 5}) for r in inst.devs)
    inst = type(inst)(**{**inst.__dict__, "devs": devs})
    bf = brute_force(inst)
    sol = MixedModel(inst).solve(workers=1)
    assert bf is not None and sol.time_units == bf[0]
    assert len(sol.assignment.stages) >= 2  # the scaled budgets force a split


def test_plans_are_deterministic():
    m = resolve_model("deepseek-v3")
    ml = model_layers(m, "q4_k_m", "llamacpp", 32768, 1)
    inv = parse_inventory("1x rtx-5090, 2x rtx-4090, 1x rtx-3090, 1x rtx-a6000, 192GB ddr5, 2TB nvme")
    runs = [MixedModel(build_instance(m, ml, inv)).solve(seed=0) for _ in range(2)]
    assert runs[0].status == "OPTIMAL" and runs[0].assignment == runs[1].assignment


def _tiny(boxes_of):
    L = 3
    devs = tuple(
        DevRow(
            uid=f"d{d}",
            box=b,
            acc="t",
            owned=True,
            price=0,
            watts=100,
            budget=100,
            runtime=0,
            layer_mem=(1,) * L,
            expert_mem=1,
            global_mem=0,
            first_mem=0,
            layer_read=(1,) * L,
            layer_comp=(1,) * L,
            expert_read=1,
            expert_comp=1,
            global_read=0,
            global_comp=0,
            hop=d + 1,
        )
        for d, b in enumerate(boxes_of)
    )
    boxes = tuple(
        BoxRow(
            name=f"b{b}",
            dram_base=0,
            dram_max=0,
            dram_price_per_gb=0,
            reserve=0,
            expert_host=1,
            cpu_time=1,
            nvme_time=0,
            nvme_cap=0,
            slots=3,
            watts_cap=1000,
            net=7 if b else 0,  # box b1 is remote: 7 units for its two crossings per token
            remote=b > 0,
        )
        for b in range(2)
    )
    return Instance(
        n_layers=L, moe=(False,) * L, devs=devs, boxes=boxes, net_logits=4, fixed_time=0, step_limit=None, budget=None
    )


def test_box_layers_must_be_contiguous():
    inst = _tiny([0, 1, 0])
    for layout, feasible in (((0, 1, 2), False), ((0, 2, 1), True)):
        mm = MixedModel(inst)
        for l, d in enumerate(layout):
            mm.m.add(mm.a[l, d] == 1)
        sol = mm.solve()
        assert (sol.status == "OPTIMAL") == feasible
        if feasible:  # 3 layers x 1 unit; PCIe hops into the 2nd (d2: 3) and 3rd stage (d1: 2); the remote box's
            # two crossings (7); the last layer is on the remote box, so its logits cross back too (4)
            assert sol.time_units == 3 * 1 + (3 + 2) + 7 + 4
