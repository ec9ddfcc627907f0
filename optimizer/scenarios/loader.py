"""Read scenario files (YAML or JSON) into Queries; every problem is one `file:line: field: message` line."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from optimizer.errors import RigoptError
from optimizer.limits import (
    MAX_MESSAGE_CHARS,
    MAX_NESTING,
    MAX_PATH_CHARS,
    MAX_QUESTIONS,
    MAX_SCENARIO_BYTES,
    MAX_SCENARIO_FILES,
    MAX_YAML_NODES,
    clip_for_message,
    clip_line,
    exists,
    has_control,
    is_dir,
    json_depth_ok,
    read_bounded,
    yaml_depth,
    yaml_safe_loader,
)
from optimizer.scenarios.schema import (
    FLEET_IGNORED,
    FLEET_KEYS,
    REQUIRED,
    BoxSpec,
    InventorySpec,
    OwnedSpec,
    Question,
    QuestionFields,
    Scenario,
    is_mixed,
    merged,
    mixed_problems,
    sla_fields,
    sweep_name,
    sweep_points,
    to_mixed_kwargs,
    to_query_kwargs,
)
from optimizer.solver.query import Query

if TYPE_CHECKING:
    from optimizer.fleet.solve import FleetQuery
    from optimizer.hetero.query import MixedQuery

SUFFIXES = (".yaml", ".yml", ".json")
Loc = tuple[Any, ...]


class ScenarioError(RigoptError):
    """A scenario file that cannot be used; `messages` holds one `file:line: field: message` line per problem."""

    MAX_MESSAGES = 50  # problems listed per file; the rest are counted

    def __init__(self, messages: list[str]):
        messages = [clip_line(m, MAX_MESSAGE_CHARS) for m in messages]
        if len(messages) > self.MAX_MESSAGES:
            messages = messages[:self.MAX_MESSAGES] + [f"... {len(messages) - self.MAX_MESSAGES} more problem(s)"]
        self.messages = list(messages)
        more = f" (+{len(messages) - 1} more)" if len(messages) > 1 else ""
        super().__init__(messages[0] + more)


@dataclass(frozen=True)
class NamedQuery:
    name: str
    query: Query | MixedQuery | FleetQuery  # MixedQuery: `owned` is a mixed inventory (planned per device, as
    # `rigopt mixed`); FleetQuery: an SLA-form question (optimizer/fleet/sla.py)
    line: int
    description: str | None = None
    # a `sweep:` question: its values per swept field (for the report's pivot); None for a listed question
    sweep: dict[str, Any] | None = field(default=None, compare=False, hash=False)


@dataclass
class LoadedScenario:
    path: Path
    title: str
    questions: list[NamedQuery] = field(default_factory=list)


# ------------------------------------------------------------------ YAML with line numbers

def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], dups: list[tuple[Loc, int]]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
            if key == "<<":  # merge key: the merged entries keep the lines of their anchor
                continue
            if key in seen:
                dups.append((loc + (key,), k.start_mark.line + 1))
            seen.add(key)
            lines[loc + (key,)] = k.start_mark.line + 1
            _walk(v, loc + (key,), lines, dups)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, loc + (i,), lines, dups)


def _check_size(path: Path, node: yaml.Node) -> None:
    """Count the nodes of a composed document with aliases expanded, and its depth, without expanding anything
    (each distinct node is sized once): an alias bomb or a recursive alias is refused before any walk."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        n, done = stack.pop()
        i = id(n)
        kids = ([c for kv in n.value for c in kv] if isinstance(n, yaml.MappingNode) else
                list(n.value) if isinstance(n, yaml.SequenceNode) else [])
        if done:
            on_path.discard(i)
            size[i] = 1 + sum(size[id(c)] for c in kids)
            depth[i] = 1 + max((depth[id(c)] for c in kids), default=0)
            if size[i] > MAX_YAML_NODES:
                raise ScenarioError([f"{path}:{n.start_mark.line + 1}: more than {MAX_YAML_NODES:,} values "
                                     "(counting aliases expanded)"])
            if depth[i] > MAX_NESTING:
                raise ScenarioError([f"{path}:{n.start_mark.line + 1}: nested deeper than {MAX_NESTING} levels"])
            continue
        if i in size:
            continue
        if i in on_path:
            raise ScenarioError([f"{path}:{n.start_mark.line + 1}: recursive alias"])
        on_path.add(i)
        stack.append((n, True))
        stack.extend((c, False) for c in kids if id(c) not in size)


def read_with_lines(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse a YAML/JSON file; return the data and the 1-based line of every mapping key and list item."""
    try:
        raw = read_bounded(path, MAX_SCENARIO_BYTES, "scenario file")
    except RigoptError as e:
        raise ScenarioError([f"{path}:0: {e}"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad_line = raw[:e.start].count(b"\n") + 1
        raise ScenarioError([f"{path}:{bad_line}: not valid UTF-8 (byte {e.start})"]) from None
    lines: dict[Loc, int] = {}
    dups: list[tuple[Loc, int]] = []
    # libyaml's parser when present (fast), else PyYAML's.
    try:  # nesting from the event stream first: libyaml's composer recurses in C and a deep file crashes it
        too_deep = yaml_depth(text) > MAX_NESTING
    except yaml.YAMLError:
        too_deep = path.suffix == ".json" and not json_depth_ok(text)
    if too_deep:
        raise ScenarioError([f"{path}:1: nested deeper than {MAX_NESTING} levels"])
    loader = yaml_safe_loader()(text)
    try:
        node = loader.get_single_node()
        data = None
        if node is not None:
            _check_size(path, node)  # before anything expands aliases
            data = loader.construct_document(node)
    except RecursionError:
        raise ScenarioError([f"{path}:1: nested deeper than {MAX_NESTING} levels"]) from None
    except yaml.YAMLError as e:
        if path.suffix == ".json":
            if not json_depth_ok(text):
                raise ScenarioError([f"{path}:1: nested deeper than {MAX_NESTING} levels"]) from None
            try:
                return json.loads(text), {}
            except json.JSONDecodeError as je:
                raise ScenarioError([f"{path}:{je.lineno}: invalid JSON: {je.msg}"]) from None
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark else 1
        problem = clip_for_message(getattr(e, "problem", None) or str(e).splitlines()[0], 120)
        raise ScenarioError([f"{path}:{line}: invalid YAML: {problem}"]) from None
    finally:
        loader.dispose()
    if node is not None:
        _walk(node, (), lines, dups)
    if dups:
        raise ScenarioError([f"{path}:{line}: {fmt_loc(loc)}: duplicate key" for loc, line in dups])
    return data, lines


def fmt_loc(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def line_of(lines: dict[Loc, int], loc: Loc) -> int:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return 1


def _allowed(top: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model that holds the key at `loc` (for 'unknown key' hints)."""
    parent = loc[:-1]
    if "boxes" in parent:
        return list(BoxSpec.model_fields)
    if "owned" in parent:
        return list(InventorySpec.model_fields) if "mixed" in parent else list(OwnedSpec.model_fields)
    if parent[:1] == ("defaults",):
        return list(QuestionFields.model_fields)
    if parent[:1] == ("questions",) and len(parent) >= 2:
        return list(Question.model_fields)
    return list(top.model_fields)


def _message(err: ErrorDetails, model_fields: list[str]) -> str:
    if err["type"] == "extra_forbidden":
        key = str(err["loc"][-1]) if err["loc"] else "?"
        close = difflib.get_close_matches(key, model_fields, n=1, cutoff=0.6)
        return "unknown key" + (f" (did you mean '{close[0]}'?)" if close else
                                f" (allowed: {', '.join(model_fields)})")
    if err["type"] == "missing":
        return "required field missing"
    msg = err["msg"]
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def _errors(path: Path, e: ValidationError, lines: dict[Loc, int], top: type) -> list[str]:
    out = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if isinstance(p, (int, str)) and "[" not in str(p))
        hint = _allowed(top, loc)
        # the owned union's tags (single / mixed) are not keys of the file
        loc = tuple(p for i, p in enumerate(loc) if not (i and loc[i - 1] == "owned" and p in ("single", "mixed")))
        out.append(f"{path}:{line_of(lines, loc)}: {fmt_loc(loc)}: {_message(err, hint)}")
    return out


# ------------------------------------------------------------------ files -> queries

def _looks_like_path(name: str) -> bool:
    return name.endswith((".json", ".gguf")) or "/" in name or name.startswith(".") or name.startswith("~")


def _model(name: str, base: Path) -> str:
    """Catalogue aliases -> canonical key; paths -> absolute (relative to the scenario file's folder); Hub ids as
    given (optimizer/catalog/models.py decides: a card's hf_id is the catalogue model, anything else the Hub)."""
    if len(name) > MAX_PATH_CHARS or has_control(name):
        raise ValueError(f"not a model name or path: {clip_for_message(name)} ({len(name)} characters)")
    if _looks_like_path(name):
        p = Path(name).expanduser()
        p = p if p.is_absolute() else (base / p)
        from optimizer.catalog.hub import parse_hub_id
        if not exists(p) and parse_hub_id(name) is not None:
            return name  # a Hugging Face id (org/name[@rev]): resolved, and fetched, when the question is solved
        if not exists(p):
            raise ValueError(f"{clip_for_message(name)}: no such file or folder "
                             "(paths are relative to the scenario file)")
        return str(p.resolve())
    from optimizer.catalog.models import catalogue_key
    try:
        return catalogue_key(name)
    except RigoptError as e:
        raise ValueError(str(e)) from None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:80].strip("-.") or "scenario"


def load_scenario(path: str | Path) -> LoadedScenario:
    """Validate one scenario file. Raises ScenarioError listing every problem (file:line: field: message)."""
    path = Path(path)
    if not exists(path):
        raise ScenarioError([f"{path}:0: no such file"])
    data, lines = read_with_lines(path)
    if data is None:
        raise ScenarioError([f"{path}:1: empty scenario file"])
    if not isinstance(data, dict):
        raise ScenarioError([f"{path}:1: (top level): expected a mapping (one question, or name/defaults/questions)"])
    multi = "questions" in data or "defaults" in data or "sweep" in data
    if isinstance(data.get("questions"), list) and len(data["questions"]) > MAX_QUESTIONS:
        raise ScenarioError([f"{path}:{line_of(lines, ('questions',))}: questions: {len(data['questions']):,} "
                             f"questions, more than the {MAX_QUESTIONS:,} a file may ask"])
    if multi:
        try:
            sc = Scenario.model_validate(data)
        except ValidationError as e:
            raise ScenarioError(_errors(path, e, lines, Scenario)) from None
        title, defaults, items = sc.name or path.stem, sc.defaults, list(enumerate(sc.questions))
        sweeps: dict[int, dict[str, Any]]
        n_listed = len(items)
        for j, point in enumerate(sweep_points(sc.sweep)):
            try:
                items.append((n_listed + j, Question.model_validate({"name": sweep_name(point), **point})))
            except ValidationError as e:
                err = e.errors()[0]
                field = str(err["loc"][0]) if err["loc"] else "?"
                raise ScenarioError([f"{path}:{line_of(lines, ('sweep', field))}: sweep.{field}: "
                                     f"{_message(err, list(Question.model_fields))}"]) from None
        sweeps = {n_listed + j: point for j, point in enumerate(sweep_points(sc.sweep))}
    else:
        try:
            q = Question.model_validate(data)
        except ValidationError as e:
            raise ScenarioError(_errors(path, e, lines, Question)) from None
        title, defaults, items = q.name or path.stem, QuestionFields(), [(0, q)]
        sweeps = {}

    def prefix(i: int) -> Loc:
        if not multi:
            return ()
        return ("sweep",) if i in sweeps else ("questions", i)
    problems: list[str] = []
    out: list[NamedQuery] = []
    names: set[str] = set()
    for i, q in items:
        pre = prefix(i)
        name = q.name or (f"q{i + 1}" if multi else _slug(title))
        if name in names:
            problems.append(f"{path}:{line_of(lines, pre + ('name',))}: {fmt_loc(pre + ('name',))}: "
                            f"duplicate question name '{name}'")
            continue
        names.add(name)
        kw = merged(defaults, q)

        def where(key: str, pre=pre) -> tuple[int, str]:
            """The line that set `key` for this question: on the question itself, else in defaults."""
            loc = pre + (key,)
            if loc not in lines and multi and ("defaults", key) in lines:
                loc = ("defaults", key)
            return line_of(lines, loc), fmt_loc(loc)

        missing = [k for k in REQUIRED if k not in kw]
        for k in missing:
            line, loc = line_of(lines, pre), fmt_loc(pre + (k,))
            problems.append(f"{path}:{line}: {loc}: required (set it on the question or in defaults)")
        if missing:
            continue
        try:
            kw["model"] = _model(kw["model"], path.parent)
        except ValueError as e:
            line, loc = where("model")
            problems.append(f"{path}:{line}: {loc}: {e}")
            continue
        from optimizer.fleet.sla import fleet_query, wants_fleet
        sla = sla_fields(kw)
        if wants_fleet(sla):  # the SLA form: the cheapest fleet (the same FleetQuery as `rigopt cheapest`)
            other = sorted(k for k in kw if k not in FLEET_KEYS and k not in FLEET_IGNORED)
            try:
                if other:
                    raise RigoptError(f"{', '.join(other)}: not used by the SLA form (tpot_s / percentile: the "
                                      "cheapest fleet for a request rate)")
                fq = fleet_query(sla)
            except RigoptError as e:
                problems.append(f"{path}:{line_of(lines, pre)}: {fmt_loc(pre)}: {e}")
                continue
            out.append(NamedQuery(name=name, query=fq, line=line_of(lines, pre), description=q.description,
                                  sweep=sweeps.get(i)))
            continue
        bad = mixed_problems(kw)
        for key, msg in bad:
            line, loc = where(key)
            problems.append(f"{path}:{line}: {loc}: {msg}")
        if bad:
            continue
        try:
            query: Query | MixedQuery
            if is_mixed(kw):
                from optimizer.hetero.query import MixedQuery  # only for mixed-inventory questions (start-up time)
                query = MixedQuery(**to_mixed_kwargs(kw))
            else:
                query = Query(**to_query_kwargs(kw))
        except ValidationError as e:
            for err in e.errors():
                key = str(err["loc"][0]) if err["loc"] else "?"
                line, loc = where(key)
                problems.append(f"{path}:{line}: {loc}: {_message(err, list(Question.model_fields))}")
            continue
        except RigoptError as e:
            problems.append(f"{path}:{line_of(lines, pre)}: {fmt_loc(pre)}: {e}")
            continue
        out.append(NamedQuery(name=name, query=query, line=line_of(lines, pre), description=q.description,
                              sweep=sweeps.get(i)))
    if problems:
        raise ScenarioError(problems)
    return LoadedScenario(path=path, title=title, questions=out)


def expand(paths: list[str | Path]) -> list[Path]:
    """Files as given; folders -> their *.yaml/*.yml/*.json files (recursively, sorted). Missing paths are kept
    so that loading them reports 'no such file'."""
    out: list[Path] = []
    for p in map(Path, paths):
        if is_dir(p):
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES
                          and not any(part.startswith(".") for part in f.relative_to(p).parts))
        else:
            out.append(p)
        if len(out) > MAX_SCENARIO_FILES:
            from optimizer.errors import InputError
            raise InputError(f"more than {MAX_SCENARIO_FILES:,} scenario files in one run")
    return list(dict.fromkeys(out))
