"""Fit mlx-lm's two speed factors on its maintainers' own published figures, check them on everyone else's.

Rows: the `engine: mlx` rows of measurements/local_measurements.yaml. Fit split = rows whose source is an
ml-explore repository (mlx-lm BENCHMARKS.md, mlx-examples PR 1069); check split = the other sources
(independent benchmark harnesses). Parameters (everything else is rigopt's shared physics):

  layer_overhead_s  fixed decode cost per layer (Metal kernel launches, routing), >= 0; the fit rows are one
                    MoE model at four widths plus one dense model, which cannot separate a per-MoE-layer cost
                    from a per-layer one, so it is one per-layer value
  prefill_mfu       achieved fraction of the accelerator's peak FLOPs in prefill (dense and MoE alike)

Least squares in log space over a fixed grid (deterministic). `python -m optimizer.fidelity.mlx_fit` prints the
fit and check errors; `--write` stores the values in optimizer/estimate/factors_mlx.yaml, which
optimizer/estimate/factors.py reads (tests/test_runtimes.py checks the stored values are a refit's).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import yaml

from optimizer.estimate import factors as F
from optimizer.fidelity.heldout import local_rows, speed_rows_of
from optimizer.fidelity.predict import predict_speed

LAYER_GRID = tuple(i * 1e-6 for i in range(0, 301))             # 0 .. 300 us
MFU_GRID = tuple(round(0.05 + i * 0.005, 3) for i in range(0, 191))  # 0.05 .. 1.00
FIT_SOURCES = ("github.com/ml-explore/",)


@dataclass(frozen=True)
class MlxCase:
    id: str
    metric: str
    measured: float
    predicted: float
    split: str

    @property
    def error(self) -> float:
        return self.predicted / self.measured - 1.0


def mlx_speed_rows() -> list[tuple[dict, str]]:
    """(speed row, split) for every comparable mlx row."""
    out = []
    for r in local_rows():
        if r.get("engine") != "mlx":
            continue
        rows, why = speed_rows_of(r)
        split = "fit" if any(s in str(r.get("source", "")) for s in FIT_SOURCES) else "check"
        out += [(s, split) for s in rows]
    return out


@contextmanager
def _params(layer: float, mfu: float):
    old_l, old_p = F.ENGINE_LAYER_OVERHEAD_S["mlx"], F.PREFILL_MFU_BY_ENGINE["mlx"]
    F.ENGINE_LAYER_OVERHEAD_S["mlx"] = F.Factor(layer, "fit in progress")
    F.PREFILL_MFU_BY_ENGINE["mlx"] = {k: F.Factor(mfu, "fit in progress") for k in ("dense", "moe")}
    try:
        yield
    finally:
        F.ENGINE_LAYER_OVERHEAD_S["mlx"], F.PREFILL_MFU_BY_ENGINE["mlx"] = old_l, old_p


def _sse(rows: list[dict], layer: float, mfu: float) -> float:
    with _params(layer, mfu):
        return sum(math.log(predict_speed(r).predicted / r["measured"]) ** 2 for r in rows)


def fit_sources() -> set[str]:
    """The sources (crossval.source_key) of the fit rows."""
    from optimizer.fidelity.crossval import source_key
    return {source_key(r.get("source")) for r, s in mlx_speed_rows() if s == "fit"}


def fit(exclude_source: str | None = None, exclude: Callable[[dict], bool] | None = None) -> dict:
    """The two factors from the fit rows (leaving out the rows of `exclude_source`, a crossval.source_key, and the
    rows `exclude` says: the cross-validation folds refit them so no fit row is predicted by factors that saw
    it)."""
    from optimizer.fidelity.crossval import source_key
    rows = [(r, s) for r, s in mlx_speed_rows() if (exclude_source is None
            or source_key(r.get("source")) != exclude_source) and (exclude is None or not exclude(r))]
    dec = [r for r, s in rows if s == "fit" and r["metric"] == "decode_tok_s"]
    pre = [r for r, s in rows if s == "fit" and r["metric"] == "prefill_tok_s"]
    mfu0 = F.PREFILL_MFU_BY_ENGINE["mlx"]["dense"].value
    # with no rows left for a parameter (a cross-validation fold holding out its only source), the prior: no
    # per-layer cost, and rigopt's unfitted prefill MFU estimate
    layer = min(LAYER_GRID, key=lambda v: (_sse(dec, v, mfu0), v)) if dec else 0.0
    mfu = min(MFU_GRID, key=lambda v: (_sse(pre, layer, v), v)) if pre else F.PREFILL_MFU.value
    return {"layer_overhead_s": layer, "prefill_mfu": mfu,
            "fit_rows": sorted({r["id"] for r in dec + pre})}


def cases(layer: float | None = None, mfu: float | None = None) -> list[MlxCase]:
    layer = F.ENGINE_LAYER_OVERHEAD_S["mlx"].value if layer is None else layer
    mfu = F.PREFILL_MFU_BY_ENGINE["mlx"]["dense"].value if mfu is None else mfu
    out = []
    with _params(layer, mfu):
        for r, split in mlx_speed_rows():
            out.append(MlxCase(r["id"], r["metric"], r["measured"], predict_speed(r).predicted, split))
    return out


def summary(cs: list[MlxCase]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for split in ("fit", "check"):
        for metric in ("decode_tok_s", "prefill_tok_s"):
            e = [abs(c.error) for c in cs if c.split == split and c.metric == metric]
            if e:
                out[f"{split} {metric}"] = {"rows": len(e), "median_abs_error": round(statistics.median(e), 4),
                                            "max_abs_error": round(max(e), 4)}
    return out


def stored_text(f: dict) -> str:
    body = {"schema_id": "rigopt.factors-mlx/1",
            "written_by": "python -m optimizer.fidelity.mlx_fit --write (refit instead of editing)",
            "layer_overhead_s": f["layer_overhead_s"], "prefill_mfu": f["prefill_mfu"], "fit_rows": f["fit_rows"]}
    return ("# mlx-lm speed factors fitted on ml-explore's own published figures (optimizer/fidelity/mlx_fit.py)\n"
            + yaml.safe_dump(body, sort_keys=False))


def main(argv: list[str]) -> None:
    f = fit()
    print(f"fit: layer_overhead_s {f['layer_overhead_s'] * 1e6:.0f} us, prefill_mfu {f['prefill_mfu']:.3f} "
          f"(rows: {', '.join(f['fit_rows'])})")
    cs = cases(f["layer_overhead_s"], f["prefill_mfu"])
    for c in cs:
        print(f"  {c.split:5s} {c.id:58s} {c.metric:14s} measured {c.measured:8.1f} predicted {c.predicted:8.1f} "
              f"error {c.error:+.0%}")
    for k, v in summary(cs).items():
        print(f"  {k}: {v['rows']} rows, median |error| {v['median_abs_error']:.0%}, max {v['max_abs_error']:.0%}")
    if "--write" in argv:
        F.MLX_FACTORS_FILE.write_text(stored_text(f))
        print(f"wrote {F.MLX_FACTORS_FILE}")


if __name__ == "__main__":
    main(sys.argv[1:])
