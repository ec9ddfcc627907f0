"""The HTTP side of `rigopt verify`: the one endpoint the user names, its OpenAI-compatible streaming completions
and its Prometheus `/metrics` page. Standard library only (http.client): nothing else is contacted, every read is
bounded in bytes and in time.

- Streaming: `POST {base}/v1/completions` with `"stream": true` answers with server-sent events, one
  `data: {json}` line per chunk and `data: [DONE]` at the end (the OpenAI API; vLLM, SGLang, llama-server, Ollama,
  LM Studio and mlx_lm.server serve it). `stream_options.include_usage` asks for a last chunk carrying `usage`
  (prompt_tokens, completion_tokens): the server's own token counts.
- Metrics: vLLM 0.33 (vllm/v1/metrics/loggers.py PrometheusStatLogger) exports `vllm:kv_cache_usage_perc`
  ("KV-cache usage. 1 means 100 percent usage"), `vllm:num_requests_running`, `vllm:num_requests_waiting`;
  SGLang 0.5.23 (sglang/srt/metrics/collector.py SchedulerMetricsCollector, with --enable-metrics) exports
  `sglang:token_usage`, `sglang:num_running_reqs`, `sglang:num_queue_reqs`. One series per engine or DP rank:
  usage is the largest, request counts the sum.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from optimizer.errors import InputError
from optimizer.limits import clip_for_message

MAX_LINE_BYTES = 1 << 20          # one SSE line
MAX_BODY_BYTES = 8 << 20          # /metrics, /v1/models, an error body
READ_TIMEOUT_S = 60.0             # a server that sends nothing for this long has failed the request
USER_AGENT = "rigopt-verify"


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    prefix: str            # path before /v1 ('' for http://host:8000)

    @property
    def label(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.prefix}"

    def path(self, p: str) -> str:
        return self.prefix + p

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)


def parse_endpoint(url: str) -> Endpoint:
    """http(s)://host[:port][/prefix][/v1] -> the server's base (the OpenAI routes live under /v1)."""
    shown = clip_for_message(url)
    try:
        u = urlsplit(url.strip())
        port = u.port
    except ValueError:
        raise InputError(f"--endpoint {shown}: not a URL") from None
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InputError(f"--endpoint {shown}: give http://HOST:PORT (or https://) of the OpenAI-compatible server")
    if u.username or u.password or u.query or u.fragment:
        raise InputError(f"--endpoint {shown}: no credentials, query or fragment (use --api-key for a key)")
    path = u.path.rstrip("/")
    for tail in ("/v1/completions", "/v1/chat/completions", "/v1"):
        if path.endswith(tail):
            path = path[: -len(tail)]
            break
    if not re.fullmatch(r"(/[A-Za-z0-9._~%-]+)*", path):
        raise InputError(f"--endpoint {shown}: unusual characters in the path")
    return Endpoint(u.scheme, u.hostname, port or (443 if u.scheme == "https" else 80), path)


def _headers(api_key: str | None, body: bool = False) -> dict[str, str]:
    h = {"User-Agent": USER_AGENT, "Accept": "text/event-stream, application/json, text/plain"}
    if body:
        h["Content-Type"] = "application/json"
    if api_key:
        h["Authorization"] = f"Bearer {api_key}"
    return h


def get(ep: Endpoint, path: str, api_key: str | None, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body up to MAX_BODY_BYTES); InputError when the server cannot be reached."""
    conn = ep.connect(timeout)
    try:
        conn.request("GET", ep.path(path), headers=_headers(api_key))
        r = conn.getresponse()
        return r.status, r.read(MAX_BODY_BYTES)
    except (OSError, http.client.HTTPException) as e:
        raise InputError(f"cannot reach {ep.label}{path}: {clip_for_message(str(e) or type(e).__name__)}") from None
    finally:
        conn.close()


def served_model(ep: Endpoint, api_key: str | None) -> str:
    """The first model `GET /v1/models` lists (the name requests must carry)."""
    status, body = get(ep, "/v1/models", api_key)
    try:
        data = json.loads(body) if status == 200 else None
        name = data["data"][0]["id"] if isinstance(data, dict) else None
    except (ValueError, KeyError, IndexError, TypeError):
        name = None
    if not isinstance(name, str) or not name:
        raise InputError(f"{ep.label}/v1/models lists no model (HTTP {status}): pass --model NAME")
    return name


# ------------------------------------------------------------------------------------------------ one request
@dataclass
class RequestResult:
    index: int
    start: float                     # time.perf_counter() when the request was sent
    end: float = 0.0
    ttft_s: float | None = None      # first chunk carrying text
    chunk_times: list[float] = field(default_factory=list)   # arrival of each text chunk, seconds after start
    prompt_tokens: int | None = None      # the server's usage count
    completion_tokens: int | None = None
    error: str = ""
    cut: bool = False                # stopped at the run's time cap

    @property
    def ok(self) -> bool:
        return not self.error and not self.cut and self.ttft_s is not None

    @property
    def output_tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else len(self.chunk_times)

    @property
    def latency_s(self) -> float:
        return self.end - self.start

    @property
    def tpot_s(self) -> float | None:
        """(latency - TTFT) / (output tokens - 1), as vLLM's and SGLang's benchmark scripts define TPOT."""
        n = self.output_tokens
        if self.ttft_s is None or n < 2:
            return None
        return (self.latency_s - self.ttft_s) / (n - 1)

    @property
    def itl_s(self) -> list[float]:
        """Gaps between text chunks (a chunk may carry several tokens when the server batches its stream)."""
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:], strict=False)]


def stream_completion(ep: Endpoint, body: dict, index: int, deadline: float, api_key: str | None) -> RequestResult:
    """Send one streaming completion; stop reading at `deadline` (time.perf_counter()) and mark the result cut."""
    start = time.perf_counter()
    res = RequestResult(index=index, start=start)

    def left() -> float:
        return deadline - time.perf_counter()

    if left() <= 0:
        res.cut, res.end = True, start
        return res
    conn = ep.connect(max(0.05, min(READ_TIMEOUT_S, left())))
    try:
        conn.request("POST", ep.path("/v1/completions"), body=json.dumps(body).encode(),
                     headers=_headers(api_key, body=True))
        r = conn.getresponse()
        if r.status != 200:
            text = r.read(4096).decode("utf-8", "replace")
            res.error = f"HTTP {r.status}: {clip_for_message(' '.join(text.split()))}"
            return res
        while True:
            remaining = left()
            if remaining <= 0:
                res.cut = True
                break
            if conn.sock is not None:
                conn.sock.settimeout(max(0.01, min(READ_TIMEOUT_S, remaining)))
            line = r.readline(MAX_LINE_BYTES)
            now = time.perf_counter()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            try:
                chunk = json.loads(payload)
            except ValueError:
                continue
            if not isinstance(chunk, dict):
                continue
            if isinstance(chunk.get("error"), dict | str):
                res.error = clip_for_message(str(chunk["error"]))
                break
            usage = chunk.get("usage")
            if isinstance(usage, dict):
                pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
                res.prompt_tokens = pt if isinstance(pt, int) else res.prompt_tokens
                res.completion_tokens = ct if isinstance(ct, int) else res.completion_tokens
            choices = chunk.get("choices")
            if isinstance(choices, list) and choices and isinstance(choices[0], dict):
                piece = choices[0].get("text")
                if piece is None and isinstance(choices[0].get("delta"), dict):
                    piece = choices[0]["delta"].get("content")
                if isinstance(piece, str) and piece:
                    if res.ttft_s is None:
                        res.ttft_s = now - start
                    res.chunk_times.append(now - start)
    except TimeoutError:
        if left() <= 0:
            res.cut = True
        else:
            res.error = f"no data for {READ_TIMEOUT_S:.0f} s"
    except (OSError, http.client.HTTPException) as e:
        res.error = clip_for_message(str(e) or type(e).__name__)
    finally:
        res.end = time.perf_counter()
        conn.close()
    return res


# ------------------------------------------------------------------------------------------------ /metrics
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)")

ENGINE_METRICS: dict[str, dict[str, str]] = {
    "vllm": {"kv_usage": "vllm:kv_cache_usage_perc", "running": "vllm:num_requests_running",
             "waiting": "vllm:num_requests_waiting"},
    "sglang": {"kv_usage": "sglang:token_usage", "running": "sglang:num_running_reqs",
               "waiting": "sglang:num_queue_reqs"},
}


def parse_prometheus(text: str) -> dict[str, list[float]]:
    """Sample values by metric name from Prometheus text exposition (comments skipped; labels dropped)."""
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        if v == v:
            out.setdefault(m.group(1), []).append(v)
    return out


@dataclass(frozen=True)
class MetricsSample:
    engine: str
    kv_usage: float | None     # 0..1, largest series
    running: float | None      # sum over series
    waiting: float | None


def read_metrics(ep: Endpoint, api_key: str | None, timeout: float = 5.0) -> MetricsSample | None:
    """One scrape of `/metrics`, None when the server exposes none of the known engines' gauges."""
    try:
        status, body = get(ep, "/metrics", api_key, timeout)
    except InputError:
        return None
    if status != 200:
        return None
    values = parse_prometheus(body.decode("utf-8", "replace"))
    for engine, names in ENGINE_METRICS.items():
        if any(n in values for n in names.values()):
            kv, run, wait = (values.get(names[k]) for k in ("kv_usage", "running", "waiting"))
            return MetricsSample(engine, max(kv) if kv else None, sum(run) if run else None,
                                 sum(wait) if wait else None)
    return None
