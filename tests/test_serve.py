"""`rigopt serve`'s JSON API through FastAPI's test client (real worker processes, no network but 127.0.0.1's
in-process transport): the same answers as the CLI, one-line 400s for bad input, bounded queue and time, exports
built in memory, a page whose assets are all local."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra: pip install 'rigopt[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from optimizer.serve.app import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"model": "qwen3-8b", "context": "32K", "tok_s": 30}


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(workers=1)) as c:
        yield c


def _one_line_error(r, status=400) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    msg = body["error"]
    assert "\n" not in msg and 0 < len(msg) < 300 and "Traceback" not in msg
    return msg


def test_page_and_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert sorted(assets) == ["/static/app.js", "/static/style.css"]
    for text in [page.text] + [client.get(a).text for a in assets]:
        assert not re.search(r"(?:src|href)=\"https?://|url\(https?://|fetch\(\"https?://|//cdn", text)
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert not re.search(r"https?://[^\"']*\.(?:js|css)", docs.text)  # Swagger UI from the package, not a CDN
    assert client.get("/static/../pyproject.toml").status_code == 404
    assert client.get("/static/nope.js").status_code == 404


def test_cheapest_is_the_clis_answer(client):
    """The page asks the same question the CLI does and gets the same plan (the web answer vs a fresh
    `rigopt cheapest --json` process)."""
    web = client.post("/api/cheapest", json=SMALL)
    assert web.status_code == 200, web.text
    cli = subprocess.run([sys.executable, "-m", "optimizer", "cheapest", "qwen3-8b", "--context", "32K",
                          "--tok-s", "30", "--json", "--no-profile"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert cli.returncode == 0, cli.stderr[-500:]
    a, b = web.json(), json.loads(cli.stdout)
    for d in (a, b):
        d.pop("solve_s"), d.pop("total_s")
    assert a["schema_id"] == "rigopt.cheapest/1"
    assert a["plan"] == b["plan"] and a["alternatives"] == b["alternatives"] and a["frontier"] == b["frontier"]
    assert a == b


def test_other_commands_answer_with_their_schemas(client):
    est = client.post("/api/estimate", json={"model": "llama-3.1-8b", "gpu": "rtx-4090", "context": 8192})
    assert est.status_code == 200 and est.json()["schema_id"] == "rigopt.estimate/1"
    assert est.json()["hardware"]["accelerator"] == "rtx-4090"
    cat = client.get("/api/catalog/models").json()
    assert any(m["key"] == "deepseek-v4-pro" for m in cat["models"])
    assert client.get("/api/catalog/nope").status_code == 404
    mixed = client.post("/api/mixed", json={"model": "qwen3-30b-a3b", "owned": "1x rtx-4090, 1x rtx-3090, 64GB ddr5",
                                            "context": 8192})
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["schema_id"] == "rigopt.mixed-plan/1"
    assert {s["accelerator"] for s in mixed.json()["stages"]} <= {"rtx-4090", "rtx-3090"}


@pytest.mark.parametrize("body, fragment", [
    ({"model": "/etc/passwd"}, "not a path"),
    ({"model": "../models/qwen3-8b"}, "not a path"),
    ({"model": "config.json"}, "not a path"),
    ({"model": "no-such-model-xyz"}, "no-such-model-xyz"),
    ({"model": "qwen3-8b", "tok_s": -1}, "tok_s"),
    ({"model": "qwen3-8b", "context": "1e30"}, "context"),
    ({"model": "qwen3-8b", "owned": "9x nonsense-gpu"}, "nonsense-gpu"),
    ({"model": "qwen3-8b", "surprise": 1}, "surprise"),
    ({"model": "qwen3-8b", "max_budget": "inf"}, "max_budget"),
    ({}, "model"),
])
def test_bad_input_is_one_line_400(client, body, fragment):
    msg = _one_line_error(client.post("/api/cheapest", json=body))
    assert fragment in msg


def test_malformed_json_is_one_line_400(client):
    r = client.post("/api/cheapest", content=b"{not json", headers={"Content-Type": "application/json"})
    _one_line_error(r)


def test_export_is_built_in_memory(client, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = client.post("/api/cheapest", json=SMALL).json()["plan"]
    r = client.post("/api/export", json={"plan": plan})
    assert r.status_code == 200, r.text
    e = r.json()
    z = zipfile.ZipFile(io.BytesIO(base64.b64decode(e["zip_base64"])))
    names = sorted(n.removeprefix("rigopt-export/") for n in z.namelist())
    assert names == sorted(e["contents"]) == sorted(e["files"])
    from optimizer.export import export_plan
    from optimizer.solver.plan import Plan
    want = {f.name: f.content for f in export_plan(Plan.model_validate(plan), None, None).files}
    assert {n: z.read("rigopt-export/" + n).decode() for n in names} == want
    assert list(tmp_path.iterdir()) == []  # nothing written
    bad = dict(plan, schema_id="something-else")
    assert "plan" in _one_line_error(client.post("/api/export", json={"plan": bad}))


def test_concurrent_questions_get_their_own_answers():
    """Several questions at once over 2 workers: every answer is its own question's."""
    contexts = [4096, 8192, 16384, 32768]
    out: dict[int, dict] = {}
    with TestClient(create_app(workers=2)) as c:
        def ask(ctx):
            out[ctx] = c.post("/api/estimate", json={"model": "qwen3-8b", "gpu": "rtx-4090", "context": ctx}).json()
        threads = [threading.Thread(target=ask, args=(x,)) for x in contexts]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert sorted(out) == contexts
    assert all(out[x]["context"] == x for x in contexts)
    kv = [out[x]["hardware"]["per_device"]["kv_bytes"] for x in contexts]
    assert kv == sorted(kv) and len(set(kv)) == len(kv)


def test_time_limit_and_queue_bound():
    with TestClient(create_app(workers=1, time_limit_s=0.001)) as c:
        assert "timed out" in _one_line_error(c.post("/api/cheapest", json=SMALL), 504)
    with TestClient(create_app(workers=1, queue=0)) as c:
        assert "busy" in _one_line_error(c.post("/api/cheapest", json=SMALL), 503)


def test_openapi_documents_the_bounds(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/cheapest", "/api/estimate", "/api/fleet", "/api/mixed", "/api/export"} <= set(spec["paths"])
    props = spec["components"]["schemas"]["CheapestRequest"]["properties"]

    def bound(field, key):  # optional fields: the number's schema inside anyOf [number, null]
        return next(s[key] for s in props[field].get("anyOf", [props[field]]) if key in s)
    assert bound("tok_s", "minimum") == 0 and bound("confidence", "exclusiveMaximum") == 1
    assert bound("context", "type") in ("string", "integer")


def test_serve_binds_loopback_by_default():
    import inspect

    from optimizer.cli import serve
    from optimizer.serve.app import serve as run
    assert inspect.signature(run).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
