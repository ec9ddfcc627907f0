"""The part of CP-SAT's Python model-building API the solver layer uses, on ortools' compiled helper module.

`ortools.sat.python.cp_model` (ortools >= 9.12) is a thin Python layer over the pybind11 module
`ortools.sat.python.cp_model_helper`, which holds the model (`CpBaseModel`, `CpModelProto`), the variables and
linear expressions (`IntVar`, `LinearExpr`, `BoundedLinearExpression`, `Constraint`) and the solver
(`SolveWrapper`, `CpSolverResponse`, `ResponseHelper`). cp_model.py also imports numpy and pandas at module
import for its Series helpers (`new_int_var_series`, `CpSolver.values`), about 0.4 s of CPU in a fresh
process, which `rigopt cheapest` never uses. `CpModel` and `CpSolver` here implement the methods rigopt calls
with the same names and semantics (each one the helper call cp_model.py makes for it), so the models build the
same protos and solve to the same answers; tests/test_sat_adapter.py solves models through both and compares.

With an ortools whose helper lacks these classes (before 9.12) or the two CpBaseModel methods the adapter calls,
cp_model's own classes are used instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

try:
    from ortools.sat.python import cp_model_helper as _cmh
    from ortools.util.python.sorted_interval_list import Domain as _Domain

    _HAVE_HELPER = all(hasattr(_cmh, n) for n in ("CpBaseModel", "SolveWrapper", "ResponseHelper", "SatParameters",
                                                   "BoolArgumentConstraint", "BoundedLinearExpression")) and all(
        # the two underscore methods of CpBaseModel the adapter calls (cp_model.py's own calls for add() and the
        # bool constraints, ortools 9.12-9.15): an ortools that renames them falls back to cp_model, not to an error
        hasattr(_cmh.CpBaseModel, n) for n in ("_add_bounded_linear_expression", "_add_bool_argument_constraint"))
except ImportError:  # pragma: no cover - an ortools without the pybind11 helper
    _HAVE_HELPER = False

IntVar = Any           # an ortools IntVar (the helper's class; cp_model re-exports the same one)
LinearExprT = Any      # an ortools linear expression, an IntVar or an int


if _HAVE_HELPER:
    OPTIMAL: Any = _cmh.CpSolverStatus.OPTIMAL
    FEASIBLE: Any = _cmh.CpSolverStatus.FEASIBLE
    INFEASIBLE: Any = _cmh.CpSolverStatus.INFEASIBLE
    MODEL_INVALID: Any = _cmh.CpSolverStatus.MODEL_INVALID
    UNKNOWN: Any = _cmh.CpSolverStatus.UNKNOWN

    class CpModel(_cmh.CpBaseModel):
        """new_int_var / new_bool_var / add / add_bool_or / add_exactly_one / add_implication / minimize /
        add_hint / clear_hints,
        as cp_model.CpModel defines them."""

        def __init__(self) -> None:
            _cmh.CpBaseModel.__init__(self, None)

        def new_int_var(self, lb: int, ub: int, name: str) -> Any:
            return _cmh.IntVar(self.model_proto).with_name(name).with_domain(_Domain(lb, ub))

        def new_bool_var(self, name: str) -> Any:
            return self.new_int_var(0, 1, name)

        def add(self, ct: Any) -> Any:
            """A bounded linear expression (`a + b * x <= c`), or a Python bool (True: nothing; False: infeasible)."""
            if isinstance(ct, _cmh.BoundedLinearExpression):
                return cast(Any, self)._add_bounded_linear_expression(ct)
            if self.is_boolean_value(ct):
                return self.add_bool_or([True]) if ct else self.add_bool_or([])
            raise TypeError(f"not supported: CpModel.add({type(ct).__name__!r})")

        def _bool_arg(self, kind: Any, *args: Any) -> Any:
            return cast(Any, self)._add_bool_argument_constraint(kind, *args)

        def add_bool_or(self, literals: Iterable[Any]) -> Any:
            return self._bool_arg(_cmh.BoolArgumentConstraint.bool_or, list(literals))

        def add_exactly_one(self, literals: Iterable[Any]) -> Any:
            return self._bool_arg(_cmh.BoolArgumentConstraint.exactly_one, list(literals))

        def add_implication(self, a: Any, b: Any) -> Any:
            """a => b (a bool_and of b enforced by a)."""
            return self._bool_arg(_cmh.BoolArgumentConstraint.bool_and, b).only_enforce_if(a)

        def minimize(self, obj: Any) -> None:
            """An integer objective (an int or an integer linear expression), minimised."""
            proto = self.model_proto
            proto.clear_objective()
            proto.clear_floating_point_objective()
            if isinstance(obj, int):
                proto.objective.offset = int(obj)
                proto.objective.scaling_factor = 1.0
                return
            if not isinstance(obj, _cmh.LinearExpr) or not obj.is_integer():
                raise TypeError(f"not an integer objective: {type(obj).__name__!r}")
            flat = _cmh.FlatIntExpr(obj)
            for var in flat.vars:
                proto.objective.vars.append(var.index)
            proto.objective.scaling_factor = 1.0
            proto.objective.offset = flat.offset
            proto.objective.coeffs.extend(flat.coeffs)

        def add_hint(self, var: Any, value: int | bool) -> None:
            hint = self.model_proto.solution_hint
            if var.index >= 0:
                hint.vars.append(var.index)
                hint.values.append(int(value))
            else:  # a negated literal: hint its variable with the opposite value
                hint.vars.append(-var.index - 1)
                hint.values.append(int(not value))

        def clear_hints(self) -> None:
            self.model_proto.clear_solution_hint()

    class CpSolver:
        """parameters / solve / value / boolean_value / objective_value / best_objective_bound / wall_time, as
        cp_model.CpSolver defines them (no callbacks)."""

        def __init__(self) -> None:
            self.parameters: Any = _cmh.SatParameters()
            self._response: Any = None

        def solve(self, model: CpModel) -> Any:
            wrapper = _cmh.SolveWrapper()
            wrapper.set_parameters(self.parameters)
            self._response = wrapper.solve(model.model_proto)
            return self._response.status

        @property
        def _checked(self) -> Any:
            if self._response is None:
                raise RuntimeError("solve() has not been called.")
            return self._response

        def value(self, expression: Any) -> int:
            return int(_cmh.ResponseHelper.value(self._checked, expression))

        def boolean_value(self, literal: Any) -> bool:
            return bool(_cmh.ResponseHelper.boolean_value(self._checked, literal))

        @property
        def objective_value(self) -> float:
            return float(self._checked.objective_value)

        @property
        def best_objective_bound(self) -> float:
            return float(self._checked.best_objective_bound)

        @property
        def wall_time(self) -> float:
            return float(self._checked.wall_time)
else:  # pragma: no cover - older ortools: the full Python API
    from ortools.sat.python.cp_model import (  # type: ignore[assignment]
        CpModel,
    )
