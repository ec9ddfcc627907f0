"""Batch summary: one row per question (or per bad file), rendered as a rich table, Markdown, CSV or JSON."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, computed_field

from optimizer.solver.search import CheapestResult

if TYPE_CHECKING:
    from optimizer.fleet.solve import FleetResult
from optimizer.units import GiB

BATCH_SCHEMA = "rigopt.batch/1"
SOLVED = ("OPTIMAL", "FEASIBLE")


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scenario: str                     # file stem (the output folder)
    file: str
    question: str                     # "-" for a file that could not be read
    model: str = ""
    status: str                       # OPTIMAL | FEASIBLE | INFEASIBLE | CHECK_FAILED | ERROR | BAD_FILE
    objective: str = ""
    cost: float | None = None         # objective value (USD, USD/h or W)
    capex_usd: float | None = None
    usd_per_hour: float | None = None
    power_watts: float | None = None
    node: str = ""
    n_nodes: int | None = None
    accelerator: str = ""
    devices: int | None = None
    engine: str = ""
    quant: str = ""
    kv_dtype: str = ""
    layout: str = ""
    tok_s: float | None = None        # expected decode tok/s per sequence
    tok_s_target: float | None = None
    headroom_gib: float | None = None
    binding: str = ""
    alternatives: int = 0
    cached: bool = False
    seconds: float = 0.0              # solver wall time (0 for a cache hit)
    note: str = ""                    # error, first infeasibility reason / cheapest relaxation
    plan_file: str = ""
    plots: list[str] = []
    fleet: str = ""                   # SLA-form questions: the fleet's pools (rigopt fleet)
    sweep: dict[str, str] = {}        # a `sweep:` question's values per swept field (the pivot's axes)

    @property
    def solved(self) -> bool:
        return self.status in SOLVED

    @property
    def plan_text(self) -> str:
        if self.fleet:
            return self.fleet
        if not self.node:
            return "-"
        return f"{self.n_nodes}× {self.node} ({self.devices}× {self.accelerator}), {self.engine}, {self.quant}"


class BatchReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_id: str = BATCH_SCHEMA
    out_dir: str
    files: int
    rows: list[Row]
    cache_hits: int = 0
    cache_misses: int = 0             # questions actually solved in this run
    cache_dir: str | None = None
    jobs: int = 1
    wall_s: float = 0.0
    summary_md: str = ""
    summary_csv: str = ""
    errors: list[str] = []            # every file:line: field: message line and solver error

    @computed_field  # type: ignore[prop-decorator]  # pydantic computed fields are properties
    @property
    def questions(self) -> int:
        return sum(1 for r in self.rows if r.status != "BAD_FILE")

    @computed_field  # type: ignore[prop-decorator]  # pydantic computed fields are properties
    @property
    def solved(self) -> int:
        return sum(1 for r in self.rows if r.solved)

    @computed_field  # type: ignore[prop-decorator]  # pydantic computed fields are properties
    @property
    def infeasible(self) -> int:
        return sum(1 for r in self.rows if r.status in ("INFEASIBLE", "CHECK_FAILED"))

    @computed_field  # type: ignore[prop-decorator]  # pydantic computed fields are properties
    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r.status == "ERROR")

    @computed_field  # type: ignore[prop-decorator]  # pydantic computed fields are properties
    @property
    def bad_files(self) -> int:
        return sum(1 for r in self.rows if r.status == "BAD_FILE")

    @computed_field  # type: ignore[prop-decorator]  # pydantic computed fields are properties
    @property
    def exit_code(self) -> int:
        """0 when every question of every file has a plan; 1 when any is infeasible, failed or unreadable."""
        return 0 if self.rows and all(r.solved for r in self.rows) else 1


def money(objective: str, v: float | None) -> str:
    if v is None:
        return "-"
    return {"capex": f"${v:,.0f}", "hourly": f"${v:,.2f}/h", "power": f"{v:,.0f} W"}.get(objective, f"{v:g}")


def row_from_result(scenario: str, file: str, question: str, r: CheapestResult, cached: bool) -> Row:
    q = r.query
    base = dict(scenario=scenario, file=file, question=question, model=q.model, status=r.status,
                objective=r.objective, cost=r.cost, tok_s_target=q.tok_s or None, cached=cached,
                seconds=0.0 if cached else round(r.total_s, 3), alternatives=len(r.alternatives))
    p = r.plan
    if p is None:
        note = r.infeasible_reasons[0] if r.infeasible_reasons else "no plan meets every target"
        if r.relaxations:
            x = r.relaxations[0]
            note += f"; cheapest relaxation: {x.change} -> {money(r.objective, x.cost)}"
        return Row(**base, note=note)
    h = p.hardware
    par = p.parallel
    return Row(**base, capex_usd=p.costs.capex_usd, usd_per_hour=p.costs.usd_per_hour,
               power_watts=p.costs.power_watts, node=h.node, n_nodes=h.n_nodes, accelerator=h.accelerator,
               devices=h.n_nodes * h.gpus_per_node, engine=p.engine, quant=p.quant, kv_dtype=p.kv_dtype,
               layout=f"TP{par.tp} PP{par.pp} DP{par.dp}" + (f" EP{par.ep_size}" if par.ep else ""),
               tok_s=round(p.speed.tok_s_per_seq, 2), headroom_gib=round(p.memory.headroom_bytes / GiB, 2),
               binding=p.binding_constraint)


def row_from_mixed(scenario: str, file: str, question: str, r: dict, cached: bool = False) -> Row:
    """A row for a mixed-inventory answer (rigopt.mixed-result/1): devices = stages, layout = their layer ranges."""
    q = r["query"]
    base = dict(scenario=scenario, file=file, question=question, model=q["model"], status=r["status"],
                objective="capex", tok_s_target=q["tok_s"] or None, cached=cached)
    p = r["plan"]
    if p is None:
        tried = ", ".join(f"{a}: {b}" for a, b in r["tried"])
        return Row(**base, note=f"no mixed plan: {r['reason']} (tried {tried})")
    kinds = list(dict.fromkeys(s["accelerator"] for s in p["stages"]))
    boxes = len({s["box"] for s in p["stages"]})
    buys = [*p["bought"], *(f"{gb} GB DRAM" for gb in p["dram_bought_gb"] if gb)]
    note = f"inventory: {p['inventory']}" + (f"; buy: {', '.join(buys)}" if buys else "")
    return Row(**base, cost=p["cost_usd"], capex_usd=p["cost_usd"], node="mixed", n_nodes=boxes,
               accelerator="+".join(kinds), devices=len(p["stages"]), engine=p["engine"], quant=p["quant"],
               kv_dtype=p["kv_dtype"], layout=" ".join(f"{s['start']}-{s['end'] - 1}" for s in p["stages"]),
               tok_s=round(p["tok_s"], 2), seconds=0.0 if cached else round(p["solve_s"], 3), binding="", note=note)


def row_from_fleet(scenario: str, file: str, question: str, r: FleetResult) -> Row:
    """A summary row for an SLA-form question: the fleet's cost, GPUs and pools."""
    base = dict(scenario=scenario, file=file, question=question, model=r.model, objective=r.objective,
                seconds=round(r.total_s, 3))
    f = r.fleet
    if f is None:
        return Row(**base, status="INFEASIBLE", note="; ".join(r.notes) or "no fleet meets the SLAs")
    pools = " + ".join(f"{p.replicas}x {p.role} {p.gpus_per_replica}x {p.accelerator} {p.engine} {p.quant} {p.layout}"
                       for p in f.pools)
    accs = sorted({p.accelerator for p in f.pools})
    return Row(**base, status=f.status, cost=f.cost, capex_usd=f.capex_usd, usd_per_hour=f.usd_per_hour,
               power_watts=f.power_watts, accelerator=",".join(accs), devices=f.gpus,
               engine=",".join(sorted({p.engine for p in f.pools})), quant=",".join(sorted({p.quant for p in f.pools})),
               layout=f.kind, binding=f"TTFT p{r.percentile * 100:g} {f.ttft_s:.3f} s, TPOT {f.tpot_s * 1000:.1f} ms",
               fleet=f"{f.gpus} GPUs: {pools}")


CSV_COLUMNS = ["scenario", "question", "status", "model", "node", "n_nodes", "accelerator", "devices", "engine",
               "quant", "kv_dtype", "layout", "objective", "cost", "capex_usd", "usd_per_hour", "power_watts", "tok_s",
               "tok_s_target", "headroom_gib", "binding", "alternatives", "cached", "seconds", "plan_file", "file",
               "note", "fleet"]


def to_csv(rep: BatchReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rep.rows:
        d = r.model_dump()
        w.writerow(["" if d[c] is None else d[c] for c in CSV_COLUMNS])
    return buf.getvalue()


def _cells(r: Row) -> list[str]:
    return [r.scenario, r.question, r.status, r.plan_text, money(r.objective, r.cost),
            "-" if r.tok_s is None else f"{r.tok_s:,.1f}" + (f" (≥{r.tok_s_target:g})" if r.tok_s_target else ""),
            "-" if r.headroom_gib is None else f"{r.headroom_gib:,.1f}", "yes" if r.cached else "no", r.note]


HEADERS = ["scenario", "question", "status", "plan (nodes, devices, engine, quant)", "cost", "tok/s per seq",
           "headroom GiB", "cached", "note"]


def totals_line(rep: BatchReport) -> str:
    return (f"{rep.files} file(s), {rep.questions} question(s): {rep.solved} solved, {rep.infeasible} infeasible, "
            f"{rep.failed} failed, {rep.bad_files} bad file(s); cache {rep.cache_hits} hit(s), "
            f"{rep.cache_misses} solved now; {rep.wall_s:.1f} s with {rep.jobs} job(s); exit code {rep.exit_code}")


def to_markdown(rep: BatchReport) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")
    lines = ["# rigopt batch summary", "", totals_line(rep), "",
             "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(esc(c) for c in _cells(r)) + " |" for r in rep.rows]
    return "\n".join(lines) + "\n"


def render_table(rep: BatchReport, console) -> None:
    from rich.table import Table
    t = Table(title="rigopt solve: summary")
    for h in HEADERS:
        t.add_column(h, overflow="fold")
    for r in rep.rows:
        style = None if r.solved else "red"
        t.add_row(*_cells(r), style=style)
    console.print(t)
    console.print(totals_line(rep))


def render(rep: BatchReport, fmt: str, console=None) -> str | None:
    """Text for `fmt` in json|csv|md (returned); `table` prints to `console` (rich) and returns None."""
    if fmt == "json":
        return rep.model_dump_json(indent=2) + "\n"
    if fmt == "csv":
        return to_csv(rep)
    if fmt == "md":
        return to_markdown(rep)
    if fmt == "table":
        from rich.console import Console
        if console is None:
            console = Console()
            if not console.is_terminal:
                console = Console(width=200)
        render_table(rep, console)
        return None
    raise ValueError(f"unknown format '{fmt}' (use table, json, csv or md)")


def sweep_value(v: object) -> str:
    """A swept value as a pivot label: lists joined with '+', numbers as written."""
    if isinstance(v, list | tuple):
        return "+".join(sweep_value(x) for x in v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def cell(r: Row) -> str:
    """A pivot cell: the cheapest cost and its hardware, or the status."""
    if not r.solved:
        return r.status
    if r.fleet:
        return f"{money(r.objective, r.cost)} {r.fleet}"
    return f"{money(r.objective, r.cost)} {r.devices}x {r.accelerator}"


def pivots(rep: BatchReport) -> dict[str, tuple[list[str], list[str], list[list[str]]]]:
    """Per scenario with a sweep: (row labels' fields, column labels, rows). The last swept field makes the
    columns, the others (joined) the rows; cells are `cell()`."""
    out: dict[str, tuple[list[str], list[str], list[list[str]]]] = {}
    by_sc: dict[str, list[Row]] = {}
    for r in rep.rows:
        if r.sweep:
            by_sc.setdefault(r.scenario, []).append(r)
    for sc, rows in by_sc.items():
        fields = list(rows[0].sweep)
        col_f, row_fs = fields[-1], fields[:-1]
        cols = list(dict.fromkeys(r.sweep[col_f] for r in rows))
        keys = list(dict.fromkeys(tuple(r.sweep[f] for f in row_fs) for r in rows))
        grid = {(tuple(r.sweep[f] for f in row_fs), r.sweep[col_f]): cell(r) for r in rows}
        table = [[" / ".join(k) or "-"] + [grid.get((k, c), "") for c in cols] for k in keys]
        out[sc] = (row_fs, [col_f + "=" + c for c in cols], table)
    return out


def pivot_csv(row_fs: list[str], cols: list[str], table: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([" / ".join(row_fs) or "-"] + cols)
    w.writerows(table)
    return buf.getvalue()


def pivot_markdown(title: str, row_fs: list[str], cols: list[str], table: list[list[str]]) -> str:
    head = [" / ".join(row_fs) or "-"] + cols
    lines = [f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def write_summaries(rep: BatchReport, out_dir: Path) -> BatchReport:
    md, cs = out_dir / "summary.md", out_dir / "summary.csv"
    rep = rep.model_copy(update={"summary_md": str(md), "summary_csv": str(cs)})
    from optimizer.limits import write_file
    write_file(md, to_markdown(rep))
    write_file(cs, to_csv(rep))
    write_file(out_dir / "summary.json", rep.model_dump_json(indent=2) + "\n")
    for sc, (row_fs, cols, table) in pivots(rep).items():  # a sweep's pivot: <out>/<scenario>/sweep.{csv,md}
        write_file(out_dir / sc / "sweep.csv", pivot_csv(row_fs, cols, table))
        write_file(out_dir / sc / "sweep.md", pivot_markdown(sc, row_fs, cols, table))
    return rep
