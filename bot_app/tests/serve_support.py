"""The real ``clawbot-app serve`` process for tests: clean environment, start, stop, token.

The ``procs`` fixture (tests/conftest.py) stops every :class:`Proc` a test appended.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from fakes.openai_provider import FakeModelServer

from tests.support import deep_merge, free_port, wait_port

CLI = shutil.which("clawbot-app") or str(Path(sys.executable).parent / "clawbot-app")


def clean_env(home: Path) -> dict[str, str]:
    """This process's environment without clawbot settings, with ``HOME`` at ``home``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CLAWBOT") and k != "MODEL_API_KEY"}
    env["HOME"] = str(home)
    return env


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], port: int, log: Path):
        self.port = port
        self.log = log
        self.fh = log.open("wb")
        self.p = subprocess.Popen([CLI, *args], env=env, stdout=self.fh,
                                  stderr=subprocess.STDOUT)
        try:
            wait_port(port, 30)
        except TimeoutError:
            self.p.kill()
            raise AssertionError(f"server did not start: {log.read_text()[-3000:]}") from None
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> int:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.fh.close()
        return self.p.returncode


def write_config(path: Path, data: Path, port: int, primary: str, backup: str,
            default: str = "primary", routes: list[dict[str, str]] | None = None,
            **extra: Any) -> None:
    path.write_text(yaml.safe_dump(deep_merge({
        "server": {"port": port, "graceful_timeout_seconds": 10},
        "storage": {"data_dir": str(data)},
        "auth": {"cache_ttl_seconds": 5},
        "logging": {"level": "INFO"},
        "models": {"default": default, "routes": routes or [], "providers": {
            "primary": {"base_url": primary, "api_key": "sk-primary", "model": "m-primary",
                        "timeout_seconds": 10},
            "backup": {"base_url": backup, "api_key": "sk-backup", "model": "m-backup",
                       "timeout_seconds": 10}}}}, extra)))


def create_token(cfg: Path, env: dict[str, str], user: str = "u") -> str:
    """A DB token of ``user`` (valid one day), made by ``clawbot-app token create``."""
    out = subprocess.run([CLI, "token", "create", "--config", str(cfg), "--user", user,
                          "--days", "1"], env=env, capture_output=True, check=True, text=True)
    return out.stdout.strip()


@dataclass
class Served:
    """A ``serve --config`` process with its config file and a DB token of user ``u``."""

    proc: Proc
    cfg: Path
    data: Path
    token: str
    env: dict[str, str]

    def configure(self, primary: FakeModelServer, backup: FakeModelServer,
                  **kwargs: Any) -> None:
        write_config(self.cfg, self.data, self.proc.port, primary.base_url, backup.base_url,
                **kwargs)

    def reload(self) -> None:
        """SIGHUP, then wait until the process logged the outcome."""
        done = self.proc.log.read_text().count("configuration reloaded")
        self.proc.p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while self.proc.log.read_text().count("configuration reloaded") == done:
            assert time.monotonic() < deadline, self.proc.log.read_text()[-3000:]
            time.sleep(0.05)


def serve(tmp_path: Path, procs: list[Proc], primary: FakeModelServer,
           backup: FakeModelServer, env: dict[str, str] | None = None,
           **config: Any) -> Served:
    env = {**clean_env(tmp_path), **(env or {})}
    port = free_port()
    cfg = tmp_path / "cfg.yaml"
    data = tmp_path / "data"
    write_config(cfg, data, port, primary.base_url, backup.base_url, **config)
    token = create_token(cfg, env)
    proc = Proc(["serve", "--config", str(cfg)], env, port, tmp_path / "serve.log")
    procs.append(proc)
    return Served(proc, cfg, data, token, env)
