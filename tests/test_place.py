import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.errors import InputError
from optimizer.moe.imbalance import expected_imbalance, load_aware_gpu_share
from optimizer.place.ep import greedy_layer, lower_bound, place_layer, slot_caps
from optimizer.place.export import llamacpp_ot, parse_sglang_map, sglang_map
from optimizer.place.loads import generate, parse_csv, parse_json, read_loads, to_csv, to_sglang_json
from optimizer.place.tiers import place_experts, place_layers
from tests.hyp import examples

DATA = "tests/data/loads"


def brute_force(w, caps):
    """Best max load over every replication and every assignment (no two replicas of one expert per GPU)."""
    E, G, P = len(w), len(caps), int(sum(caps))
    best = np.inf
    for extra in itertools.combinations_with_replacement(range(E), P - E):
        r = np.ones(E, dtype=int)
        for e in extra:
            r[e] += 1
        if r.max() > G:
            continue
        # each expert picks r_e distinct GPUs; check slot counts
        choices = [list(itertools.combinations(range(G), int(r[e]))) for e in range(E)]
        for pick in itertools.product(*choices):
            cnt = np.zeros(G, dtype=int)
            load = np.zeros(G)
            for e, gs in enumerate(pick):
                for g in gs:
                    cnt[g] += 1
                    load[g] += w[e] / r[e]
            if np.array_equal(cnt, caps):
                best = min(best, load.max())
    return best


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("R", [1, 2])
def test_small_exact_matches_brute_force(seed, R):
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 50, size=6).astype(float)
    caps = slot_caps(6, R, 3)
    p = place_layer(w, caps, time_limit=5.0)
    bf = brute_force(w, caps)
    assert p.max_load == pytest.approx(bf, rel=1e-9)
    assert lower_bound(w, caps) <= bf + 1e-9
    assert greedy_layer(w, caps).max_load >= bf - 1e-9 or greedy_layer(w, caps).colocated()


def _conserve(p, w, caps, distinct=True):
    """A placement of w over slots `caps`: every expert placed, every slot used once, and load conserved."""
    E = len(w)
    assert set(p.experts.tolist()) == set(range(E))          # every logical expert reachable
    assert np.array_equal(np.bincount(p.gpu, minlength=len(caps)), caps)   # slot budget exactly used
    assert len(p.experts) == len(p.loads) == len(p.gpu) == caps.sum()   # one replica per physical slot
    assert np.allclose(np.bincount(p.experts, weights=p.loads, minlength=E), w)   # an expert's load is split,
    replicas = np.bincount(p.experts, minlength=E)                              # not lost or duplicated,
    assert np.allclose(p.loads, w[p.experts] / replicas[p.experts])             # evenly over its replicas
    assert np.isclose(p.gpu_loads().sum(), w.sum())
    if distinct:
        assert not p.colocated()


@settings(max_examples=examples(25, 4), deadline=None)
@given(st.integers(4, 40), st.integers(2, 8), st.integers(0, 12), st.floats(0, 2), st.integers(0, 10**6))
def test_conservation_and_never_worse_than_greedy(E, G, R, s, seed):
    if E + R < G or E * G < E + R:
        return
    w = generate(f"zipf:{s}", 1, E, seed).counts[0]
    caps = slot_caps(E, R, G)
    base = greedy_layer(w, caps)
    p = place_layer(w, caps, time_limit=0.2, baseline=base)
    _conserve(p, w, caps, distinct=False)   # may keep a co-located greedy result when that is better
    assert p.max_load <= base.max_load * (1 + 1e-12)
    assert p.max_load >= lower_bound(w, caps) * (1 - 1e-9)


def test_large_layer_close_to_bound():
    w = generate("zipf:1.0", 1, 384, 3).counts[0]
    caps = slot_caps(384, 32, 64)
    base = greedy_layer(w, caps)
    p = place_layer(w, caps, time_limit=0.0, baseline=base)
    _conserve(p, w, caps)
    assert p.max_load <= lower_bound(w, caps) * 1.02 and p.max_load <= base.max_load


def test_sglang_json_round_trip(tmp_path):
    ld = parse_json(open(f"{DATA}/small_sglang.json").read(), n_layers=2, n_experts=4)
    assert ld.counts.tolist() == [[12, 1, 5, 2], [4, 4, 4, 4]]  # snapshots summed
    f = tmp_path / "x.json"
    f.write_text(to_sglang_json(ld))
    assert np.array_equal(read_loads(str(f), 2, 4).counts, ld.counts)


def test_csv_round_trip(tmp_path):
    ld = read_loads(f"{DATA}/small.csv", 2, 4)
    assert ld.counts[0].tolist() == [12, 0, 5, 2]
    f = tmp_path / "x.csv"
    f.write_text(to_csv(ld))
    assert np.array_equal(read_loads(str(f), 2, 4).counts, ld.counts)


def test_vllm_physical_fold():
    ld = read_loads(f"{DATA}/small_vllm.json", 2, 4)
    assert ld.counts[0].tolist() == [10, 4, 1, 1]


def test_sglang_map_round_trip():
    w = generate("zipf:1", 1, 16, 0).counts[0]
    p = place_layer(w, slot_caps(16, 4, 4), time_limit=0.5)
    m = sglang_map([p.slots(), p.slots()])
    rows = parse_sglang_map(json.dumps(m))
    assert len(rows) == 2 and len(rows[0]) == 20 and set(rows[0]) == set(range(16))
    with pytest.raises(InputError):
        sglang_map([[[0, 1], [2]]])


@pytest.mark.parametrize("text,frag", [
    ('{"foo": 1}', "logical_count"),
    ('{"logical_count": [[1, 2], [3]]}', "rectangular"),
    ('{"logical_count": [[1, -2, 3, 4], [1, 1, 1, 1]]}', ">= 0"),
    ('{"logical_count": [[1, 2, 3], [1, 1, 1]]}', "experts per layer"),
    ('{"logical_count": [[1, 2, 3, 4]]}', "MoE layers"),
    ('{"logical_count": [[0, 0, 0, 0], [0, 0, 0, 0]]}', "zero"),
    ("{nope", "not valid JSON"),
])
def test_bad_json_one_line(text, frag):
    with pytest.raises(InputError) as e:
        parse_json(text, "f.json", 2, 4)
    assert frag in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["layer,expert,count\n0,1\n", "0,x,3\n", "0,9,3\n1,0,1\n", "0,0,1\n"])
def test_bad_csv_one_line(text):
    with pytest.raises(InputError) as e:
        parse_csv(text, "f.csv", 2, 4)
    assert "\n" not in str(e.value)


def test_bad_generated_and_missing():
    with pytest.raises(InputError):
        generate("zipf:abc", 2, 4)
    with pytest.raises(InputError):
        read_loads("/nonexistent.json", 2, 4)


def test_generated_deterministic():
    a, b = generate("zipf:1.2", 3, 10, 7), generate("zipf:1.2", 3, 10, 7)
    assert np.array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, generate("zipf:1.2", 3, 10, 8).counts)


def test_tiers_hot_first_and_memory():
    sh = generate("zipf:1", 4, 8, 0).shares()
    eb = np.full(4, 10.0)
    tp = place_experts(sh, eb, gpu_bytes=2 * 8 * 10.0, dram_bytes=10 * 10.0)
    assert tp.gpu_experts_per_layer == 4
    assert ((tp.tier == 0).sum(axis=1) * 10.0).sum() <= 2 * 8 * 10.0
    assert ((tp.tier == 1) * 10.0).sum() <= 100.0                   # DRAM respected, rest on NVMe
    assert (tp.tier == 2).sum() == 32 - 16 - 10
    for l in range(4):   # every GPU expert is hotter than every off-GPU one
        assert sh[l][tp.tier[l] == 0].min() >= sh[l][tp.tier[l] != 0].max()
    assert tp.activation_share(0) > 0.5
    lay = place_layers(sh, eb, k=2, batch=1, gpu_bytes=2 * 80.0)
    assert lay.layers_on(0) == [0, 1] and lay.activation_share(0) == pytest.approx(0.5)


def test_llamacpp_ot():
    assert llamacpp_ot([3, 4, 10])[1] == "blk\\.(3|4|10)\\.ffn_(up|down|gate|gate_up)_(ch|)exps\\.=CPU"
    assert llamacpp_ot([]) == []


def test_api_for_cheapest(spec_of):
    spec = spec_of("deepseek-v4-flash").spec
    assert expected_imbalance(spec, 8, 0, "uniform") == pytest.approx(1.0)
    z = generate("zipf:1", len(spec.moe_layers), 256, 0)
    assert expected_imbalance(spec, 8, 8, z) <= expected_imbalance(spec, 8, 8, z, baseline=True)
    assert load_aware_gpu_share(spec, 256, z) == pytest.approx(1.0)
    assert load_aware_gpu_share(spec, 32, "uniform") == pytest.approx(32 / 256)
    assert load_aware_gpu_share(spec, 32, z) > 0.5
    assert load_aware_gpu_share(spec, [0, 1], z) == pytest.approx(2 / 43)
