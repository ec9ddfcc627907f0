"""A fake OpenAI-compatible server on 127.0.0.1 with scripted latencies, for `rigopt verify` tests.

POST /v1/completions (stream): the first text chunk `ttft_s` after the request arrived, then one chunk per token
every `itl_s` (on an absolute schedule, so sleeps do not drift), a usage chunk (prompt tokens = words of the
prompt x `tokens_per_word`, rounded; completion tokens = max_tokens) and `data: [DONE]`. GET /v1/models lists one
model; GET /metrics prints vLLM 0.33's gauges with the requests in flight as `vllm:num_requests_running`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Script:
    ttft_s: float = 0.06
    itl_s: float = 0.015
    tokens_per_word: float = 1.5
    model: str = "fake-model"
    metrics: bool = True
    kv_per_request: float = 0.1


@dataclass
class State:
    script: Script
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    completions: int = 0          # POST /v1/completions received
    prompt_tokens: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    state: State
    protocol_version = "HTTP/1.0"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _json(self, code: int, obj) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        st = self.state
        st.paths.append(self.path)
        if self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": st.script.model, "object": "model"}]})
        elif self.path == "/metrics" and st.script.metrics:
            n = st.in_flight
            text = ("# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
                    "# TYPE vllm:num_requests_running gauge\n"
                    f'vllm:num_requests_running{{engine="0",model_name="{st.script.model}"}} {n}.0\n'
                    f'vllm:num_requests_waiting{{engine="0",model_name="{st.script.model}"}} 0.0\n'
                    f'vllm:kv_cache_usage_perc{{engine="0",model_name="{st.script.model}"}} '
                    f"{n * st.script.kv_per_request}\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)
        else:
            self._json(404, {"error": "not found"})

    def do_POST(self) -> None:
        t0 = time.perf_counter()
        st, sc = self.state, self.state.script
        st.paths.append(self.path)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        if self.path != "/v1/completions":
            self._json(404, {"error": "not found"})
            return
        n_out = int(body["max_tokens"])
        n_in = round(len(body["prompt"].split()) * sc.tokens_per_word)
        with st.lock:
            st.in_flight += 1
            st.completions += 1
            st.prompt_tokens.append(n_in)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for i in range(n_out):
                wait = t0 + sc.ttft_s + i * sc.itl_s - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                chunk = {"id": "x", "object": "text_completion", "model": sc.model,
                         "choices": [{"index": 0, "text": " tok", "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
            usage = {"id": "x", "object": "text_completion", "model": sc.model, "choices": [],
                     "usage": {"prompt_tokens": n_in, "completion_tokens": n_out,
                               "total_tokens": n_in + n_out}}
            self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            with st.lock:
                st.in_flight -= 1


class FakeServer:
    def __init__(self, script: Script | None = None) -> None:
        self.state = State(script or Script())
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
