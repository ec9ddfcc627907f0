"""Run `rigopt` argv in a forked child of this process (imports and catalogue already loaded, so a run costs
milliseconds, not an interpreter start), with an address-space cap, an optional CPU-time cap and a wall-clock guard
against hangs, and report what a user would see: exit code, stdout, stderr, CPU seconds, peak memory. Used by
tests/test_hostile.py and bench/fuzz.py."""

from __future__ import annotations

import os
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass

GiB = 2**30


@dataclass
class Run:
    argv: list[str]
    code: int            # exit code; -N when killed by signal N; None on timeout
    out: str
    err: str
    seconds: float
    max_rss_bytes: int
    timed_out: bool = False
    cpu_seconds: float = 0.0  # user + system CPU of the child: what limits assert (wall time varies with load)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.err or "Traceback (most recent call last)" in self.out

    @property
    def internal(self) -> bool:
        return "internal error" in self.err


def _child(argv: list[str], cwd: str | None, mem_cap: int, out_fd: int, err_fd: int, cpu_cap: float = 0) -> None:
    try:
        if mem_cap:
            resource.setrlimit(resource.RLIMIT_AS, (mem_cap, mem_cap))
        if cpu_cap:  # SIGXCPU then SIGKILL past the cap: a runaway child costs bounded CPU whatever the load
            used = resource.getrusage(resource.RUSAGE_SELF)
            soft = int(used.ru_utime + used.ru_stime + cpu_cap) + 1
            resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        if cwd:
            os.chdir(cwd)
        sys.argv = ["rigopt", *argv]
        from optimizer.cli import main
        code = 0
        try:
            main()
        except SystemExit as e:
            c = e.code
            code = c if isinstance(c, int) else (0 if c is None else 1)
        except BaseException:  # noqa: BLE001 - report like the interpreter would
            import traceback
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    except BaseException:  # noqa: BLE001
        os._exit(99)


def run_cli(argv: list[str], cwd: str | None = None, timeout: float = 20.0, mem_cap: int = 6 * GiB,
            cpu_cap: float = 0) -> Run:
    """`rigopt *argv` in a forked child; address space capped at `mem_cap`, CPU time at `cpu_cap` seconds (0: no
    cap); killed after `timeout` seconds of wall time only as a guard against a hang (a child that waits on
    nothing uses no CPU). Limits are asserted on `cpu_seconds`, never on the wall `seconds`."""
    argv = [str(a) for a in argv]
    with tempfile.TemporaryFile() as fo, tempfile.TemporaryFile() as fe:
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(argv, cwd, mem_cap, fo.fileno(), fe.fileno(), cpu_cap)
        timed_out = False
        status, rusage = 0, None
        while True:
            wpid, status, rusage = os.wait4(pid, os.WNOHANG)
            if wpid:
                break
            if time.monotonic() - t0 > timeout:
                os.kill(pid, signal.SIGKILL)
                _, status, rusage = os.wait4(pid, 0)
                timed_out = True
                break
            time.sleep(0.005)
        seconds = time.monotonic() - t0
        code = None if timed_out else (os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status))
        fo.seek(0)
        fe.seek(0)
        out = fo.read().decode("utf-8", "replace")
        err = fe.read().decode("utf-8", "replace")
    rss = rusage.ru_maxrss * 1024 if rusage is not None else 0
    cpu = rusage.ru_utime + rusage.ru_stime if rusage is not None else 0.0
    return Run(argv, code, out, err, seconds, rss, timed_out, cpu)
