"""Load test of `rigopt serve` on 127.0.0.1 (prints figures; bounded in requests and time, stops by itself).

    python bench/serve_load.py                 # 50 concurrent questions, 2 workers
    python bench/serve_load.py -n 100 --workers 2

Starts `rigopt serve` on a free loopback port, sends N questions at once from N client threads (a mix of
`/api/estimate` and `/api/cheapest` over several models and contexts), and prints the latency p50/p99 as the
clients saw it (queueing included), the error count and the status codes. Needs the serve extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.serve_helpers import running_server  # noqa: E402

MODELS = ["qwen3-8b", "llama-3.1-8b", "qwen3-30b-a3b", "gpt-oss-120b", "qwen3-32b"]
CONTEXTS = ["8K", "32K", "128K"]


def questions(n: int) -> list[tuple[str, dict]]:
    out = []
    for i in range(n):
        m, c = MODELS[i % len(MODELS)], CONTEXTS[(i // len(MODELS)) % len(CONTEXTS)]
        if i % 5 < 3:
            out.append(("/api/estimate", {"model": m, "context": c, "gpu": "rtx-4090" if i % 2 else "h100"}))
        else:
            out.append(("/api/cheapest", {"model": m, "context": c, "tok_s": 20 + i % 30}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=600.0, help="per request, seconds")
    a = ap.parse_args()
    qs = questions(a.n)
    with running_server(workers=a.workers) as url:
        # warm the workers (their first question pays for imports and the catalogue), as a running server is
        for path, body in qs[: a.workers]:
            urllib.request.urlopen(urllib.request.Request(url + path, json.dumps(body).encode(),
                                                          {"Content-Type": "application/json"}), timeout=a.timeout)
        lat: list[float] = []
        codes: dict[int, int] = {}
        lock = threading.Lock()
        start = threading.Barrier(len(qs))

        def one(path: str, body: dict) -> None:
            req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
            start.wait()
            t = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=a.timeout) as r:
                    r.read()
                    code = r.status
            except urllib.error.HTTPError as e:
                code = e.code
            except OSError:
                code = -1
            dt = time.perf_counter() - t
            with lock:
                lat.append(dt)
                codes[code] = codes.get(code, 0) + 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=one, args=q) for q in qs]
        for th in threads:
            th.start()
        for th in threads:
            th.join(a.timeout + 30)
        wall = time.perf_counter() - t0
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    errors = sum(v for k, v in codes.items() if k != 200)
    print(f"serve load: {len(qs)} concurrent questions ({sum(1 for p, _ in qs if 'estimate' in p)} estimate, "
          f"{sum(1 for p, _ in qs if 'cheapest' in p)} cheapest), {a.workers} workers, in {wall:.1f} s "
          f"({len(qs) / wall:.2f} questions/s)")
    print(f"serve load: latency p50 {statistics.median(lat):.2f} s, p99 {p99:.2f} s, max {lat[-1]:.2f} s; "
          f"errors {errors}; status codes {dict(sorted(codes.items()))}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
