"""The bounded benchmark `rigopt verify` sends: prompts generated locally to the plan's input length (calibrated
against the server's own token count), a closed loop of `concurrency` clients or Poisson arrivals at `rate`, a
request cap and a time cap that nothing outlives.

Prompt length: a prompt is a request number followed by common English words drawn with a seeded generator (each
a single token in the BPE vocabularies of the Llama, Qwen, DeepSeek and GPT families when preceded by a space).
A probe request first asks the server how many tokens a prompt of `isl` words is (`usage.prompt_tokens`), and
every prompt is then sized with that ratio; the report gives the prompt lengths the server counted. The leading
request number makes every prompt differ from its first token, so no prompt is served from another's prefix
cache.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from optimizer.verify.client import Endpoint, MetricsSample, RequestResult, read_metrics, stream_completion

WORDS = ("the of and to in is that for it as with was on be by at this are from or have an they which one you "
         "were all we can her has there been if more when will would who so no time out up about into than them "
         "some could only other new its then two like made may first after also over many where way well work "
         "people back years year day most just good through should because each even much those how state world "
         "three down both last long great own same under never water city still between high same small part "
         "place case week company system program question number night point home group government service "
         "house area money story fact month lot right study book eye job word business issue side kind head far "
         "black long both little important until children enough").split()
MAX_IN_FLIGHT = 1024      # open-loop requests in flight at once (threads); beyond it arrivals wait


def make_prompt(index: int, n_words: int, rng: random.Random) -> str:
    return f"{index}:" + "".join(" " + rng.choice(WORDS) for _ in range(max(1, n_words)))


@dataclass
class LoadSpec:
    isl: int
    osl: int
    concurrency: int | None
    rate_rps: float | None
    max_requests: int
    max_time_s: float
    seed: int = 0
    metrics_interval_s: float = 1.0
    temperature: float = 0.0


@dataclass
class LoadResult:
    requests: list[RequestResult]
    words_per_prompt: int
    tokens_per_word: float | None      # from the probe; None when the server reports no usage
    elapsed_s: float
    metrics: list[MetricsSample] = field(default_factory=list)
    metrics_before: MetricsSample | None = None
    stopped_by: str = "requests"       # requests | time


def _body(model: str, prompt: str, osl: int, temperature: float) -> dict:
    # ignore_eos / min_tokens: vLLM and SGLang sampling parameters that keep generating to max_tokens (the plan's
    # output length); servers that do not know them ignore unknown fields
    return {"model": model, "prompt": prompt, "max_tokens": osl, "min_tokens": osl, "ignore_eos": True,
            "temperature": temperature, "stream": True, "stream_options": {"include_usage": True}}


def probe(ep: Endpoint, model: str, spec: LoadSpec, api_key: str | None, deadline: float) -> tuple[int, float | None]:
    """(words per prompt, tokens per word): one short request whose usage says how the server counts a prompt."""
    rng = random.Random(spec.seed ^ 0x5EED)
    r = stream_completion(ep, _body(model, make_prompt(0, spec.isl, rng), 1, spec.temperature), -1, deadline,
                          api_key)
    if r.error:
        raise ProbeError(r.error)
    if not r.prompt_tokens:
        return spec.isl, None
    per_word = r.prompt_tokens / (spec.isl + 1)
    return max(1, round(spec.isl / per_word) - 1), per_word


class ProbeError(Exception):
    pass


def run_load(ep: Endpoint, model: str, spec: LoadSpec, api_key: str | None,
             progress: Callable[[int, int], None] | None = None) -> LoadResult:
    """Send the benchmark; return every request's timings. Nothing runs past `max_time_s` after the start: no new
    request is sent after it and requests still streaming are cut (reported, not measured)."""
    t0 = time.perf_counter()
    deadline = t0 + spec.max_time_s
    before = read_metrics(ep, api_key)
    words, per_word = probe(ep, model, spec, api_key, deadline)
    rng = random.Random(spec.seed)
    prompts = [make_prompt(i + 1, words, rng) for i in range(spec.max_requests)]
    results: list[RequestResult] = []
    lock = threading.Lock()
    issued = 0
    stop = threading.Event()
    samples: list[MetricsSample] = []

    def send(i: int) -> None:
        r = stream_completion(ep, _body(model, prompts[i], spec.osl, spec.temperature), i, deadline, api_key)
        with lock:
            results.append(r)
            done = len(results)
        if progress:
            progress(done, spec.max_requests)

    def take() -> int | None:
        nonlocal issued
        with lock:
            if issued >= spec.max_requests or time.perf_counter() >= deadline:
                return None
            issued += 1
            return issued - 1

    def sampler() -> None:
        if before is None:
            return
        while not stop.wait(spec.metrics_interval_s):
            s = read_metrics(ep, api_key, timeout=min(5.0, max(0.05, deadline - time.perf_counter())))
            if s is not None:
                samples.append(s)

    mt = threading.Thread(target=sampler, daemon=True)
    mt.start()
    threads: list[threading.Thread] = []
    if spec.rate_rps:
        arrivals = random.Random(spec.seed ^ 0xA221)
        slots = threading.BoundedSemaphore(MAX_IN_FLIGHT)
        next_t = time.perf_counter()

        def one(i: int) -> None:
            try:
                send(i)
            finally:
                slots.release()

        while True:
            next_t += arrivals.expovariate(spec.rate_rps)
            wait = next_t - time.perf_counter()
            if wait > 0 and time.perf_counter() + wait >= deadline:
                break
            if wait > 0:
                time.sleep(wait)
            i = take()
            if i is None:
                break
            slots.acquire()
            t = threading.Thread(target=one, args=(i,), daemon=True)
            t.start()
            threads.append(t)
    else:
        def worker() -> None:
            while (i := take()) is not None:
                send(i)

        for _ in range(max(1, spec.concurrency or 1)):
            t = threading.Thread(target=worker, daemon=True)
            t.start()
            threads.append(t)
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()) + 1.0)
    stop.set()
    mt.join(6.0)
    elapsed = time.perf_counter() - t0
    with lock:
        done = sorted(results, key=lambda r: r.index)
    stopped = "requests" if issued >= spec.max_requests and not any(r.cut for r in done) else "time"
    return LoadResult(done, words, per_word, elapsed, samples, before, stopped)


# ------------------------------------------------------------------------------------------------ statistics
def percentile(xs: list[float], p: float) -> float | None:
    """Linear interpolation between order statistics (numpy's default), None for no data."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


@dataclass(frozen=True)
class Measured:
    completed: int
    failed: int
    cut: int
    duration_s: float              # first send to last completion
    ttft_s: dict[str, float | None]
    tpot_s: dict[str, float | None]
    itl_s: dict[str, float | None]
    output_tok_s: float | None
    total_tok_s: float | None
    request_rate_rps: float | None
    prompt_tokens_mean: float | None
    output_tokens_mean: float | None
    mean_in_flight: float | None    # Little's law: completion rate x mean latency
    errors: list[str]


PCTS = (50, 90, 99)


def summarize(res: LoadResult) -> Measured:
    ok = [r for r in res.requests if r.ok]
    failed = [r for r in res.requests if r.error]
    cut = [r for r in res.requests if r.cut]

    def pcts(xs: list[float]) -> dict[str, float | None]:
        return {"mean": sum(xs) / len(xs) if xs else None, **{f"p{p}": percentile(xs, p) for p in PCTS}}

    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [t for r in ok if (t := r.tpot_s) is not None]
    itl = [g for r in ok for g in r.itl_s]
    if ok:
        span = max(r.end for r in ok) - min(r.start for r in ok)
        out_tok = sum(r.output_tokens for r in ok)
        prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
        in_tok = sum(prompts) if len(prompts) == len(ok) else None
        rate = len(ok) / span if span > 0 else None
        lat = sum(r.latency_s for r in ok) / len(ok)
    else:
        span, out_tok, prompts, in_tok, rate, lat = 0.0, 0, [], None, None, 0.0
    return Measured(
        completed=len(ok), failed=len(failed), cut=len(cut), duration_s=span, ttft_s=pcts(ttft), tpot_s=pcts(tpot),
        itl_s=pcts(itl), output_tok_s=out_tok / span if span > 0 else None,
        total_tok_s=(out_tok + in_tok) / span if span > 0 and in_tok is not None else None,
        request_rate_rps=rate, prompt_tokens_mean=sum(prompts) / len(prompts) if prompts else None,
        output_tokens_mean=out_tok / len(ok) if ok else None,
        mean_in_flight=rate * lat if rate else None,
        errors=sorted({r.error for r in failed})[:5])
