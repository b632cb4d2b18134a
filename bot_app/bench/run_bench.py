#!/usr/bin/env python3
"""clawbot-app benchmark (wrk, loopback only, each wrk run <= 10 s).

Scenarios:
  1. /health of clawbot-app vs a bare Starlette hello-world on the same uvicorn settings
     (goal: ratio >= 0.7).
  2. POST /api/v1/chat, 50 connections, fake model at a fixed 100 ms latency, vs the ideal
     50 / 0.1 s = 500 req/s (goal: >= 90 % and p99 <= 120 ms), with p50/p99 and the service's
     CPU per request (from /proc: the one figure that another load on the machine does not move).
  3. Extra scenarios: every ``bench/scenario_*.py`` exposing ``run(ctx) -> list[Result]``
     (hook for the IM engineer, e.g. Feishu callback ack p99).

Usage: python bot_app/bench/run_bench.py [--duration 8] [--workers 1]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

BENCH_DIR = Path(__file__).resolve().parent
APP_DIR = BENCH_DIR.parent
# The repository's one fake model provider (asyncio, stdlib only; uvloop when installed).
FAKE_PROVIDER = APP_DIR.parent / "tests" / "fakes" / "openai_provider.py"
PY = sys.executable
CLI = shutil.which("clawbot-app") or str(Path(PY).parent / "clawbot-app")
MODEL_LATENCY = 0.1
CONNECTIONS = 50


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    baseline: float | None = None
    goal: float | None = None
    p99_goal_ms: float | None = None
    requests: int = 0
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.rps / self.baseline if self.baseline else None


@dataclass
class BenchContext:
    """Handed to scenario hooks: running service URL, a valid token, helpers."""

    base_url: str
    token: str
    config_path: Path
    workdir: Path
    duration: int
    env: dict[str, str] = field(default_factory=dict)

    def wrk(self, url: str, connections: int = CONNECTIONS, script: Path | None = None,
            extra_env: dict[str, str] | None = None) -> Result:
        return run_wrk(url, connections, self.duration, script, {**self.env, **(extra_env or {})})


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children (uvicorn workers), from /proc.

    Per-request CPU does not depend on what else the machine runs, unlike req/s and p99, so it
    is the figure to compare between runs on a busy machine.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(port: int, path: str = "/health", timeout: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"service on port {port} did not come up")


@contextlib.contextmanager
def process(args: list[str], log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    fh = log.open("wb")
    proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        fh.close()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, connections: int, duration: int, script: Path | None = None,
            env: dict[str, str] | None = None, threads: int = 2) -> Result:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    assert "127.0.0.1" in url, "benchmark traffic must stay on loopback"
    args = [wrk, f"-t{threads}", f"-c{connections}", f"-d{min(duration, 10)}s", "--latency",
            "--timeout", "5s"]
    if script:
        args += ["-s", str(script)]
    out = subprocess.run(args + [url], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(env or {})}).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)$", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)$", out, re.MULTILINE)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    total = re.search(r"(\d+) requests in", out)
    return Result(name=url, rps=rps, requests=int(total.group(1)) if total else 0,
                  p50_ms=_ms(p50.group(1)) if p50 else None,
                  p99_ms=_ms(p99.group(1)) if p99 else None, errors=errors)


def write_config(workdir: Path, port: int, model_port: int, workers: int) -> Path:
    cfg = workdir / "bench.yaml"
    cfg.write_text(yaml.safe_dump({
        "server": {"host": "127.0.0.1", "port": port, "workers": workers},
        "storage": {"data_dir": str(workdir / "data")},
        "rate_limit": {"per_tenant_per_minute": 0},
        "logging": {"level": "INFO", "file": None},
        "models": {"default": "fake", "providers": {"fake": {
            "base_url": f"http://127.0.0.1:{model_port}", "api_key": "sk-bench",
            "model": "fake-model", "timeout_seconds": 10, "max_retries": 0}}},
    }))
    return cfg


def load_hooks() -> list[object]:
    hooks = []
    for path in sorted(BENCH_DIR.glob("scenario_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec and spec.loader:
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            if hasattr(mod, "run"):
                hooks.append(mod)
    return hooks


def print_table(results: list[Result]) -> None:
    print()
    print(f"{'scenario':<34} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
          f"{'ratio':>7} {'goal':>6}  verdict")
    for r in results:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        goal = f"{r.goal:.2f}" if r.goal is not None else "-"
        verdict = "-"
        if r.goal is not None and r.ratio is not None:
            met = r.ratio >= r.goal and not r.errors
            if r.p99_goal_ms is not None:
                met = met and r.p99_ms is not None and r.p99_ms <= r.p99_goal_ms
            verdict = "PASS" if met else "MISS"
        p50 = f"{r.p50_ms:.1f}" if r.p50_ms is not None else "-"
        p99 = f"{r.p99_ms:.1f}" if r.p99_ms is not None else "-"
        print(f"{r.name:<34} {r.rps:>9.0f} {p50:>8} {p99:>8} {r.errors:>7} {ratio:>7} "
              f"{goal:>6}  {verdict} {r.note}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=int, default=8, help="seconds per wrk run (max 10)")
    ap.add_argument("--workers", type=int, default=1, help="clawbot-app uvicorn workers")
    args = ap.parse_args()
    duration = min(args.duration, 10)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="clawbot-bench-") as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLAWBOT")}
        model_port, app_port, hello_port = free_port(), free_port(), free_port()
        cfg = write_config(work, app_port, model_port, args.workers)
        with process([PY, str(FAKE_PROVIDER), "--port", str(model_port),
                      "--latency", str(MODEL_LATENCY), "--api-key", "sk-bench"],
                     work / "fake.log", env), \
             process([PY, "-m", "uvicorn", "--app-dir", str(BENCH_DIR), "hello_app:app",
                      "--host", "127.0.0.1", "--port", str(hello_port), "--loop", "uvloop",
                      "--http", "httptools", "--no-access-log", "--log-level", "warning",
                      "--workers", str(args.workers)], work / "hello.log", env):
            token = subprocess.run(
                [CLI, "token", "create", "--config", str(cfg), "--user", "bench",
                 "--tenant", "bench", "--days", "1"], env=env, capture_output=True, text=True,
                check=True).stdout.strip()
            with process([CLI, "serve", "--config", str(cfg)], work / "serve.log", env) as serve:
                wait_http(model_port, "/v1/chat/completions")
                wait_http(hello_port)
                wait_http(app_port)
                url = f"http://127.0.0.1:{app_port}"
                run_wrk(f"{url}/health", CONNECTIONS, 2)  # warm-up
                run_wrk(f"http://127.0.0.1:{hello_port}/health", CONNECTIONS, 2)
                hello = run_wrk(f"http://127.0.0.1:{hello_port}/health", CONNECTIONS, duration)
                hello.name = "hello-world /health (baseline)"
                results.append(hello)
                health = run_wrk(f"{url}/health", CONNECTIONS, duration)
                health.name = "clawbot-app /health"
                health.baseline, health.goal = hello.rps, 0.7
                results.append(health)
                chat_env = {"BENCH_TOKEN": token}
                # reference: the fake model alone, same load (what this machine allows now)
                direct = run_wrk(f"http://127.0.0.1:{model_port}/v1/chat/completions",
                                 CONNECTIONS, duration, BENCH_DIR / "model_post.lua",
                                 threads=1)
                direct.name = "fake model direct (reference)"
                direct.baseline = CONNECTIONS / MODEL_LATENCY
                results.append(direct)
                run_wrk(f"{url}/api/v1/chat", CONNECTIONS, 2, BENCH_DIR / "chat_post.lua",
                        chat_env, threads=1)  # warm-up (token cache, connection pool)
                cpu_before = cpu_seconds(serve.pid)
                chat = run_wrk(f"{url}/api/v1/chat", CONNECTIONS, duration,
                               BENCH_DIR / "chat_post.lua", chat_env, threads=1)
                chat.name = f"chat c={CONNECTIONS} model=100ms"
                chat.baseline, chat.goal = CONNECTIONS / MODEL_LATENCY, 0.9
                chat.p99_goal_ms = MODEL_LATENCY * 1000 + 20
                chat_cpu_ms = (cpu_seconds(serve.pid) - cpu_before) * 1000 / max(chat.requests, 1)
                chat.note = (f"(ideal {CONNECTIONS / MODEL_LATENCY:.0f} req/s; "
                             f"service CPU {chat_cpu_ms:.2f} ms/request)")
                results.append(chat)
                ctx = BenchContext(base_url=url, token=token, config_path=cfg, workdir=work,
                                   duration=duration, env=env)
                for hook in load_hooks():
                    try:
                        results.extend(hook.run(ctx))  # type: ignore[attr-defined]
                    except Exception as exc:  # noqa: BLE001 - report and continue
                        print(f"scenario {hook.__name__} failed: {exc}", file=sys.stderr)
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
