"""The solver layer's CP-SAT adapter (optimizer/solver/sat.py, on ortools' compiled helper) against ortools'
own Python API (ortools.sat.python.cp_model): DeploymentModel built through each gives the same model proto
and the same solution, on random integer tables (the brute-force oracle tests check the answers themselves)."""

import random
import subprocess
import sys
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from ortools.sat.python import cp_model

from optimizer.fleet import model as fleet_model
from optimizer.solver import cpsat, sat
from tests.hyp import examples
from tests.test_fleet_pairing import _rows as fleet_rows
from tests.test_solver_oracle import tables

pytestmark = pytest.mark.skipif(not sat._HAVE_HELPER, reason="ortools without the pybind11 helper: sat is cp_model")


def _build(rows, lim, backend, monkeypatch, tie_breaks=False):
    monkeypatch.setattr(cpsat, "sat", backend)
    model = cpsat.DeploymentModel(rows, lim, tie_breaks=tie_breaks)
    hint = cpsat.greedy_hint(rows, lim)
    if hint:
        model.hint(*hint)
    return model


@settings(max_examples=examples(60, 20), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(tables())
def test_adapter_builds_the_same_model_and_solution_as_cp_model(monkeypatch, data):
    rows, lim = data
    for tie_breaks in (False, True):
        ours = _build(rows, lim, sat, monkeypatch, tie_breaks)
        theirs = _build(rows, lim, cp_model, monkeypatch, tie_breaks)
        assert isinstance(ours.model, sat.CpModel) and isinstance(theirs.model, cp_model.CpModel)
        assert str(ours.model.model_proto) == str(theirs.model.model_proto)
    a = _build(rows, lim, sat, monkeypatch).solve(time_limit_s=10, workers=1)
    b = _build(rows, lim, cp_model, monkeypatch).solve(time_limit_s=10, workers=1)
    assert (a.status, a.index, a.dram_layers, a.nvme_layers, a.extra_dram_gb, a.cost, a.bound) == \
        (b.status, b.index, b.dram_layers, b.nvme_layers, b.extra_dram_gb, b.cost, b.bound)


def _recording(backend, built):
    class Recorded(backend.CpModel):
        def __init__(self):
            super().__init__()
            built.append(self)
    return SimpleNamespace(CpModel=Recorded, CpSolver=backend.CpSolver, OPTIMAL=backend.OPTIMAL,
                           FEASIBLE=backend.FEASIBLE)


@pytest.mark.parametrize("seed", range(12))
def test_fleet_model_same_protos_and_answer_through_cp_model(monkeypatch, seed):
    """The fleet's replica-count model (implications, negated literals, three stages) through both."""
    rng = random.Random(500 + seed)
    rows, rate = fleet_rows(rng), rng.randint(500, 4000)
    answers, protos = [], []
    for backend in (sat, cp_model):
        built: list = []
        monkeypatch.setattr(fleet_model, "sat", _recording(backend, built))
        answers.append(fleet_model.solve(rows, rate, 2, max_types=2, time_limit_s=5))
        protos.append([str(m.model_proto) for m in built])
    assert answers[0] == answers[1]
    assert protos[0] == protos[1] and protos[0]


def test_adapter_rejects_what_it_cannot_express():
    m = sat.CpModel()
    x = m.new_int_var(0, 3, "x")
    m.add(True)
    with pytest.raises(TypeError):
        m.add("x <= 3")
    with pytest.raises(TypeError):
        m.minimize(0.5 * x)
    s = sat.CpSolver()
    with pytest.raises(RuntimeError):
        s.value(x)


def test_bool_constraints_and_negated_hints():
    m = sat.CpModel()
    a, b = m.new_bool_var("a"), m.new_bool_var("b")
    m.add_exactly_one([a, b])
    m.add_hint(~a, True)
    m.minimize(3 * a + 5 * b)
    s = sat.CpSolver()
    assert s.solve(m) == sat.OPTIMAL
    assert (s.boolean_value(a), s.boolean_value(b), s.objective_value) == (True, False, 3.0)
    assert list(m.model_proto.solution_hint.vars) == [a.index] and list(m.model_proto.solution_hint.values) == [0]
    m.add(False)
    assert sat.CpSolver().solve(m) == sat.INFEASIBLE


def test_cheapest_does_not_import_pandas():
    """The CLI's import graph (cheapest, fleet and mixed included) stays free of pandas and cp_model.py (which
    imports pandas at module import)."""
    code = ("import sys, optimizer.cli, optimizer.front, optimizer.solver.search, optimizer.fleet.solve, "
            "optimizer.hetero.api; "
            "print('pandas' in sys.modules, 'ortools.sat.python.cp_model' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
