"""`rigopt solve`: load scenario files, answer every question (cache first, then parallel processes), write plan
files, a summary (Markdown, CSV, JSON) and optional plots. Output order is the order of files and questions,
whatever order the processes finish in."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimizer.errors import InputError, RigoptError
from optimizer.limits import clip_line, exists, is_dir, prepare_out_dir, safe_component, under, write_file
from optimizer.scenarios.cache import ResultCache, catalog_digest, mixed_key, query_key
from optimizer.scenarios.loader import ScenarioError, expand, load_scenario
from optimizer.scenarios.report import (
    BatchReport,
    Row,
    render,
    row_from_mixed,
    row_from_result,
    sweep_value,
    write_summaries,
)
from optimizer.solver.query import Query
from optimizer.solver.search import CheapestResult

if TYPE_CHECKING:
    from optimizer.fleet.solve import FleetQuery, FleetResult
    from optimizer.hetero.query import MixedQuery

FORMATS = ("table", "json", "csv", "md")


@dataclass
class _Job:
    index: int              # position in the output
    scenario: str           # output folder name (file stem, made unique)
    file: str
    question: str
    query: Query | MixedQuery | FleetQuery  # MixedQuery: a mixed-inventory question; FleetQuery: an SLA-form one
    key: str = ""
    result: CheapestResult | FleetResult | None = None
    mixed: dict | None = None  # rigopt.mixed-result/1 of a mixed-inventory question
    cached: bool = False
    error: str = ""
    sweep: dict[str, str] | None = None  # a `sweep:` question's values (pivot axes)


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _solve_one(query_json: str, mixed: bool = False) -> tuple[str | None, str | None]:
    """Worker: solve one question. Returns (CheapestResult JSON, None) or (None, one-line error); for a
    mixed-inventory question (rigopt.mixed-result/1 JSON, None)."""
    from optimizer.solver.search import cheapest
    try:
        if mixed:
            from optimizer.hetero.query import MixedQuery, result_json
            mq = MixedQuery.model_validate_json(query_json)
            return json.dumps(result_json(mq, mq.solve())), None
        q = Query.model_validate_json(query_json)
        return cheapest(q).model_dump_json(), None
    except RigoptError as e:
        return None, f"{type(e).__name__}: {e}"
    except Exception as e:  # an internal error in one question must not stop the batch
        return None, f"internal error: {type(e).__name__}: {e}"


def _solve_fleet_one(query: FleetQuery) -> tuple[str | None, str | None]:
    """Worker: solve one SLA-form question with the fleet solver. (FleetResult JSON, None) or (None, error)."""
    from optimizer.fleet import solve_fleet
    try:
        return solve_fleet(query).model_dump_json(), None
    except RigoptError as e:
        return None, f"{type(e).__name__}: {e}"
    except Exception as e:  # an internal error in one question must not stop the batch
        return None, f"internal error: {type(e).__name__}: {e}"


def _is_fleet(j: _Job) -> bool:
    from optimizer.fleet.solve import FleetQuery
    return isinstance(j.query, FleetQuery)


def _job_call(j: _Job) -> tuple[Any, ...]:
    """(worker, its arguments) for one job: the fleet solver for an SLA-form question, else _solve_one (with the
    mixed-inventory flag)."""
    from optimizer.fleet.solve import FleetQuery
    q = j.query
    if isinstance(q, FleetQuery):
        return (_solve_fleet_one, q)
    return (_solve_one, q.model_dump_json(), not isinstance(q, Query))


def _is_mixed(j: _Job) -> bool:
    from optimizer.hetero.query import MixedQuery
    return isinstance(j.query, MixedQuery)


def _unique_stems(files: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for f in files:
        stem = safe_component(f.stem, "scenario")  # never '..', '.', '' or a path: it names a folder under --out
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        out.append(stem if n == 0 else f"{stem}-{n + 1}")
    return out


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    return Progress(TextColumn("[bold]solve[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled, transient=False)


def solve(paths: Sequence[str | Path], jobs: int | None = None, out_dir: str | Path = "rigopt-out",
          fmt: str = "table", plot: bool = False, use_cache: bool = True, *, cache_dir: str | Path | None = None,
          progress: bool = True, echo: bool = True, executor: str = "local") -> BatchReport:
    """Solve every question of every scenario file (folders are searched for *.yaml, *.yml, *.json).

    Writes `<out>/<file-stem>/<question>.plan.json` (the plan, rigopt.plan/1, when there is one),
    `<question>.result.json` (the full rigopt.cheapest/1 result, also for infeasible questions),
    `<question>.pareto.png` / `.memory.png` with `plot`, and `<out>/summary.{md,csv,json}`.
    Bad files and infeasible questions become rows of the summary; `report.exit_code` is 0 only if every question
    of every file got a plan. With `echo`, the summary is printed to stdout in `fmt` (table|json|csv|md).
    Results are cached by content under `cache_dir` (default `<out>/.cache`) unless `use_cache` is False; each
    answer is cached as it arrives, so an interrupted run resumes where it stopped.
    `executor`: `local` (a process pool of `jobs` workers), `ray` (a Ray instance started here with `jobs` CPUs,
    bound to 127.0.0.1), `ray=ADDRESS` (join that cluster) or `auto` (join a running cluster, else local).
    """
    ray_address = _executor(executor)
    if fmt not in FORMATS:
        raise InputError(f"unknown format '{fmt}' (use {', '.join(FORMATS)})")
    if plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise InputError("--plot needs matplotlib (pip install matplotlib)") from None
    t0 = time.perf_counter()
    jobs = max(1, int(jobs or default_jobs()))
    out = Path(out_dir)
    files = expand(list(paths))
    if not files:
        raise InputError(clip_line(f"no scenario files (*.yaml, *.yml, *.json) in {', '.join(map(str, paths))}"))
    prepare_out_dir(out)
    for name in ("summary.md", "summary.csv", "summary.json"):  # checked before any work: a planted symlink
        under(out, out / name)
    cache_root = (Path(cache_dir) if cache_dir else out / ".cache") if use_cache else None
    if cache_root is not None and exists(cache_root) and not is_dir(cache_root):
        raise InputError(f"cache {cache_root}: exists and is not a folder (remove it or use --no-cache)")
    cache = ResultCache(cache_root)

    # 1. load every file; a bad one becomes a row and the run goes on
    rows: dict[int, Row] = {}
    work: list[_Job] = []
    errors: list[str] = []
    idx = 0
    for f, stem in zip(files, _unique_stems(files), strict=True):
        try:
            sc = load_scenario(f)
        except ScenarioError as e:
            errors += e.messages
            rows[idx] = Row(scenario=stem, file=str(f), question="-", status="BAD_FILE", note=str(e))
            idx += 1
            continue
        for nq in sc.questions:
            sw = {k: sweep_value(v) for k, v in nq.sweep.items()} if nq.sweep else None
            work.append(_Job(idx, stem, str(f), nq.name, nq.query, sweep=sw))
            idx += 1

    # 2. cache
    catalog = catalog_digest() if use_cache else ""
    todo: list[_Job] = []
    for j in work:
        if _is_fleet(j):  # fleet answers are not cached (the solve takes about a second)
            todo.append(j)
            continue
        if use_cache and isinstance(j.query, Query):
            j.key = query_key(j.query, catalog)
            hit = cache.get(j.key)
            if hit is not None:
                j.result, j.cached = hit, True
                continue
        elif use_cache:
            j.key = mixed_key(j.query, catalog)
            mixed_hit = cache.get_mixed(j.key)
            if mixed_hit is not None:
                j.mixed, j.cached = mixed_hit, True
                continue
        todo.append(j)

    # 3. solve the rest: in this process for one job, else in a process pool. Workers are forked (where fork
    #    exists) before the progress bar starts its thread, and inherit the parsed catalogue.
    pool: ProcessPoolExecutor | None = None
    futs: dict[Future, _Job] = {}
    if ray_address is not None and todo:
        _solve_on_ray(todo, jobs, ray_address, progress, len(work), cache, use_cache)
    elif len(todo) > 1 and jobs > 1:
        from optimizer.catalog.hardware import load_hardware
        load_hardware()
        ctx = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
        pool = ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx)
        futs = {pool.submit(*_job_call(j)): j for j in todo}
    try:
        with _progress(progress and bool(todo) and ray_address is None) as bar:
            task = bar.add_task(f"{len(work)} question(s), {len(work) - len(todo)} cached", total=len(work),
                                completed=len(work) - len(todo))

            def finish(j: _Job, res: str | None, err: str | None) -> None:
                _store(j, res, err, cache, use_cache)
                bar.update(task, advance=1, description=f"{j.scenario}/{j.question}")

            if pool is None and ray_address is None:
                for j in todo:
                    fn, *args = _job_call(j)
                    finish(j, *fn(*args))
            for fut in as_completed(futs):
                try:
                    res, err = fut.result()
                except Exception as e:  # a worker died (e.g. out of memory)
                    res, err = None, f"worker failed: {type(e).__name__}: {e}"
                finish(futs[fut], res, err)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    # 4. per-question files, rows, plots
    for j in work:
        folder = under(out, out / j.scenario)
        prepare_out_dir(folder, "output folder")
        if j.mixed is not None:
            row = row_from_mixed(j.scenario, j.file, j.question, j.mixed, j.cached)
            write_file(under(out, folder / f"{j.question}.result.json"), json.dumps(j.mixed, indent=2) + "\n")
            plan_file = under(out, folder / f"{j.question}.plan.json")
            if j.mixed["plan"] is not None:
                write_file(plan_file, json.dumps(j.mixed["plan"], indent=2) + "\n")
                row.plan_file = str(plan_file)
            elif plan_file.exists():
                plan_file.unlink()
            rows[j.index] = row  # no plots: the frontier and memory plots read single-type results
            continue
        if j.result is None:
            errors.append(f"{j.file}: {j.question}: {j.error}")
            rows[j.index] = Row(scenario=j.scenario, file=j.file, question=j.question, model=j.query.model,
                                status="ERROR", note=j.error,
                                objective=j.query.objective if isinstance(j.query, Query) else "capex")
            continue
        if not isinstance(j.result, CheapestResult):  # a fleet: <question>.fleet.json and its summary row
            from optimizer.scenarios.report import row_from_fleet
            write_file(under(out, folder / f"{j.question}.fleet.json"), j.result.model_dump_json(indent=2) + "\n")
            rows[j.index] = row_from_fleet(j.scenario, j.file, j.question, j.result)
            continue
        row = row_from_result(j.scenario, j.file, j.question, j.result, j.cached)
        write_file(under(out, folder / f"{j.question}.result.json"), j.result.model_dump_json(indent=2) + "\n")
        plan_file = under(out, folder / f"{j.question}.plan.json")
        if j.result.plan is not None:
            write_file(plan_file, j.result.plan.model_dump_json(indent=2) + "\n")
            row.plan_file = str(plan_file)
        elif plan_file.exists():
            plan_file.unlink()  # a stale plan from an earlier run must not outlive its question's feasibility
        if plot:
            for suffix in (".pareto.png", ".memory.png"):  # a symlink planted in --out must not redirect a write
                under(out, folder / f"{j.question}{suffix}")
            from optimizer.scenarios.plot import plot_question
            row.plots = [str(p) for p in plot_question(j.result, folder, j.question, f"{j.scenario}/{j.question}")]
        rows[j.index] = row

    for j in work:
        if j.sweep:
            rows[j.index].sweep = j.sweep
    if plot:
        _plot_sweeps(rows, out)

    n_cached = sum(1 for j in work if j.cached)
    rep = BatchReport(out_dir=str(out), files=len(files), rows=[rows[i] for i in sorted(rows)],
                      cache_hits=n_cached, cache_misses=len(work) - n_cached,
                      cache_dir=str(cache.root) if cache.root else None, jobs=jobs,
                      wall_s=round(time.perf_counter() - t0, 3), errors=errors)
    rep = write_summaries(rep, out)
    if echo:
        text = render(rep, fmt)
        if text is not None:
            import sys
            sys.stdout.write(text)
    return rep


def _plot_sweeps(rows: dict[int, Row], out: Path) -> None:
    """`<out>/<scenario>/sweep.png` per swept scenario: the cheapest cost per cell as a heat map."""
    by_sc: dict[str, list[Row]] = {}
    for r in rows.values():
        if r.sweep:
            by_sc.setdefault(r.scenario, []).append(r)
    if not by_sc:
        return
    from optimizer.scenarios.plot import plot_sweep
    for sc, rs in by_sc.items():
        path = under(out, out / sc / "sweep.png")
        plot_sweep(rs, path, sc)


def _executor(text: str) -> str | None:
    """None for the local pool; '' for a Ray instance started here; an address to join ('auto' included)."""
    t = (text or "local").strip()
    if t == "local":
        return None
    if t == "auto":
        try:
            import ray  # noqa: F401
        except ImportError:
            return None  # auto: no Ray installed -> the local pool
        return "auto" if os.environ.get("RAY_ADDRESS") or _ray_running() else None
    if t == "ray":
        return ""
    if t.startswith("ray="):
        addr = t[4:].strip()
        if not addr or len(addr) > 256 or any(c.isspace() for c in addr):
            raise InputError("--executor ray=ADDRESS: give an address such as 127.0.0.1:6379 or ray://host:10001")
        return addr
    raise InputError(f"unknown executor '{clip_line(t, 40)}' (use local, ray, ray=ADDRESS or auto)")


def _ray_running() -> bool:
    """A Ray cluster started on this machine (`ray start --head` leaves its address file in the temp folder)."""
    import tempfile
    return Path(tempfile.gettempdir(), "ray", "ray_current_cluster").exists()


def _solve_on_ray(todo: list[_Job], jobs: int, address: str, progress: bool, total: int, cache: ResultCache,
                  use_cache: bool) -> None:
    """Solve `todo` as Ray tasks (one CPU each); each answer is stored (job fields, cache) as it arrives; a task that
    fails becomes that question's error, the others go on."""
    try:
        import ray
    except ImportError:
        raise InputError("--executor ray needs Ray: pip install 'rigopt[ray]'") from None
    started = not ray.is_initialized()
    if started:
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False,
                              "ignore_reinit_error": True}
        if address:
            ray.init(address=address, **kw)
        else:  # a private instance on this machine only
            ray.init(num_cpus=jobs, _node_ip_address="127.0.0.1", **kw)
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(_call)
        refs = {remote.remote(*_job_call(j)): j for j in todo}
        with _progress(progress) as bar:
            task = bar.add_task(f"{total} question(s) on Ray, {total - len(todo)} cached", total=total,
                                completed=total - len(todo))
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    j = refs[ref]
                    try:
                        res, err = ray.get(ref)
                    except Exception as e:  # the task raised or its worker died: this question only
                        res, err = None, f"worker failed: {type(e).__name__}: {clip_line(str(e), 200)}"
                    _store(j, res, err, cache, use_cache)
                    bar.update(task, advance=1, description=f"{j.scenario}/{j.question}")
    finally:
        if started:
            ray.shutdown()


def _call(fn: Any, *args: Any) -> tuple[str | None, str | None]:
    return fn(*args)


def _store(j: _Job, res: str | None, err: str | None, cache: ResultCache, use_cache: bool) -> None:
    if res is not None and _is_fleet(j):
        from optimizer.fleet.solve import FleetResult
        j.result = FleetResult.model_validate_json(res)
    elif res is not None and _is_mixed(j):
        j.mixed = json.loads(res)
        if use_cache:
            cache.put_mixed(j.key, j.mixed)
    elif res is not None:
        j.result = CheapestResult.model_validate_json(res)
        if use_cache:
            cache.put(j.key, j.result)
    else:
        j.error = err or "unknown error"
