"""Fixtures for playbook tests on loopback: the real bot service and ansible-playbook."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / ".collections"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Playbook:
    returncode: int
    output: str


def run_playbook(playbook: str, *args: str, timeout: float = 300) -> Playbook:
    """``ansible-playbook`` against localhost (local connection) from the repo root."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
           "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
           "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0"}
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(ROOT / playbook), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    return Playbook(proc.returncode, proc.stdout + proc.stderr)


class BotProcess:
    """``clawbot-app`` served by uvicorn with TLS on a loopback port, as behind the real proxy."""

    def __init__(self, config: Path, cert: Path, key: Path, ca: Path):
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca = ca
        self.log = config.with_suffix(".log")
        self._cmd = [sys.executable, "-m", "uvicorn", "clawbot_app.app:factory", "--factory",
                     "--host", "127.0.0.1", "--port", str(self.port), "--ssl-certfile", str(cert),
                     "--ssl-keyfile", str(key), "--log-level", "warning"]
        self._env = {**os.environ, "CLAWBOT_CONFIG": str(config)}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> BotProcess:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self._cmd, env=self._env, stdout=log, stderr=subprocess.STDOUT)
        context = ssl.create_default_context(cafile=str(self.ca))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bot exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", context=context, timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"bot did not answer /health within {timeout}s: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
