"""A Hugging Face Hub stand-in on 127.0.0.1 for tests (no test needs the internet).

It serves the two URL layouts huggingface_hub uses for what rigopt fetches:
- `GET /api/models/{org}/{name}/revision/{rev}`: the model listing (`sha`, `siblings[].rfilename`, `gated`),
  as HfApi.model_info reads it (huggingface_hub hf_api.py ModelInfo);
- `HEAD`/`GET /{org}/{name}/resolve/{rev}/{file}`: the file, with the headers hf_hub_download and
  get_hf_file_metadata require (`ETag`, `X-Repo-Commit`, `Content-Length`) and `Range: bytes=a-b` answered with
  206 + `Content-Range` (parse_safetensors_file_metadata reads a shard header that way).
Errors carry the `X-Error-Code` header that huggingface_hub's hf_raise_for_status maps to its exceptions:
RepoNotFound (404), RevisionNotFound (404), EntryNotFound (404), GatedRepo (401).
Every request is logged in `FakeHub.log` as (method, path, Range header) so tests can assert what was fetched.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "0123456789abcdef0123456789abcdef01234567"
    gated: bool = False
    lie_size: dict[str, int] = field(default_factory=dict)  # Content-Length to announce on HEAD instead of the real one
    # hostile behaviours (tests/test_hostile_surfaces.py, bench/fuzz.py):
    trickle_s: float = 0.0        # send every answer body one byte at a time, this many seconds apart
    redirect_to: str | None = None  # answer the listing and every file with a 302 to this base URL (another host)
    bad_header: bool = False      # answer the listing with a malformed HTTP header line


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.log: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                hub.handle(self, "GET")

            def do_HEAD(self):
                hub.handle(self, "HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ responses
    @staticmethod
    def _send(h: BaseHTTPRequestHandler, method: str, status: int, body: bytes, headers: dict[str, str],
              trickle_s: float = 0.0) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        if "Content-Length" not in headers:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if method == "GET":
            if trickle_s <= 0:
                h.wfile.write(body)
                return
            import time
            for i in range(len(body)):  # a byte at a time: every read returns before its timeout
                try:
                    h.wfile.write(body[i:i + 1])
                    h.wfile.flush()
                except OSError:
                    return
                time.sleep(trickle_s)

    def _error(self, h, method, status: int, code: str) -> None:
        body = json.dumps({"error": code}).encode()
        self._send(h, method, status, body, {"Content-Type": "application/json", "X-Error-Code": code,
                                             "X-Error-Message": code})

    def handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = urlsplit(h.path).path
        self.log.append((method, unquote(path), h.headers.get("Range")))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/(.+)", path)
        if m:
            return self.listing(h, method, unquote(m.group(1)), unquote(m.group(2)))
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self.resolve(h, method, unquote(m.group(1)), unquote(m.group(2)), unquote(m.group(3)))
        self._error(h, method, 404, "RepoNotFound")

    def _repo(self, h, method, repo: str, rev: str) -> Repo | None:
        r = self.repos.get(repo)
        if r is None:
            self._error(h, method, 404, "RepoNotFound")
            return None
        if r.redirect_to:
            self._send(h, method, 302, b"", {"Location": r.redirect_to.rstrip("/") + h.path})
            return None
        if r.bad_header:
            h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: x\x00y\r\nBroken header without colon\r\n\r\n{}")
            return None
        if rev not in ("main", r.commit):
            self._error(h, method, 404, "RevisionNotFound")
            return None
        return r

    def listing(self, h, method, repo: str, rev: str) -> None:
        r = self._repo(h, method, repo, rev)
        if r is None:
            return
        body = json.dumps({"_id": "x", "id": repo, "modelId": repo, "sha": r.commit, "private": False,
                           "gated": "manual" if r.gated else False, "disabled": False, "tags": [],
                           "siblings": [{"rfilename": f} for f in sorted(r.files)]}).encode()
        self._send(h, method, 200, body, {"Content-Type": "application/json"}, r.trickle_s)

    def resolve(self, h, method, repo: str, rev: str, filename: str) -> None:
        r = self._repo(h, method, repo, rev)
        if r is None:
            return
        if r.gated:
            return self._error(h, method, 401, "GatedRepo")
        if filename not in r.files:
            return self._error(h, method, 404, "EntryNotFound")
        data = r.files[filename]
        headers = {"ETag": '"' + hashlib.sha256(data).hexdigest() + '"', "X-Repo-Commit": r.commit,
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if method == "HEAD" and filename in r.lie_size:
            headers["Content-Length"] = str(r.lie_size[filename])
            return self._send(h, method, 200, b"", headers)
        rng = h.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m is None:
                return self._error(h, method, 416, "BadRange")
            a = int(m.group(1))
            b = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
            headers["Content-Range"] = f"bytes {a}-{b}/{len(data)}"
            return self._send(h, method, 206, data[a:b + 1], headers)
        self._send(h, method, 200, data, headers, r.trickle_s)


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]], bytes_per: dict[str, int]) -> bytes:
    """A real safetensors file (header + zero-filled data) holding `tensors` {name: (dtype, shape)}."""
    header, off = {}, 0
    for name, (dtype, shape) in tensors.items():
        n = bytes_per[dtype]
        for s in shape:
            n *= s
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + bytes(off)
