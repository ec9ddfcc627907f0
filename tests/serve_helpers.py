"""A `rigopt serve` process on 127.0.0.1 for the browser test and the load benchmark."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(workers: int = 2, cwd: Path | None = None, timeout_s: float = 60.0) -> Iterator[str]:
    """Start `python -m optimizer serve` on a free 127.0.0.1 port; yield its base URL; stop it."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "optimizer", "serve", "--port", str(port), "--workers", str(workers)],
                         cwd=cwd or ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(url + "/api/catalog/gpus", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                if p.poll() is not None:
                    err = p.stderr.read().decode()[-800:] if p.stderr else ""
                    raise RuntimeError("rigopt serve exited: " + err) from None
                if time.monotonic() > deadline:
                    raise RuntimeError("rigopt serve did not answer") from None
                time.sleep(0.2)
        yield url
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)
