"""Chat through nginx (HTTPS, the nginx role's site template) vs straight to clawbot-app.

Renders roles/nginx/templates/clawbot.conf.j2 with the role's defaults (nginx_site.yml), starts a
private nginx on loopback ports with a throw-away self-signed certificate, and runs the same wrk
load (50 connections, model at 100 ms) straight at the bot and through nginx, one after the other.
Goal: through nginx >= 0.85x straight. Needs nginx and ansible-playbook (the bench venv has it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
GOAL = 0.85
CONNECTIONS = 50

MAIN_CONF = """\
# Benchmark copy of the role's nginx.conf settings (roles/nginx/templates/nginx.conf.j2).
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    server_names_hash_bucket_size 64;
    server_tokens off;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    keepalive_timeout 65s;
    reset_timedout_connection on;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers off;
    gzip off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    include {work}/clawbot.conf;
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nginx did not listen on {port}")


def _render(
    work: Path, bot_port: int, http_port: int, https_port: int, env: dict[str, str]
) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(work / "tls.key"),
            "-out",
            str(work / "tls.crt"),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    overrides: dict[str, Any] = {
        "bench_dir": str(work),
        "ansible_python_interpreter": sys.executable,
        "nginx_upstream_servers": [f"127.0.0.1:{bot_port}"],
        "nginx_http_port": http_port,
        "nginx_https_port": https_port,
        "nginx_server_names": ["localhost"],
        "nginx_reject_unknown_hosts": False,
        "nginx_listen_ipv6": False,
        "_nginx_listen_ipv6": False,
        "_nginx_version": "1.22.1",
        "_nginx_tls_cert_file": str(work / "tls.crt"),
        "_nginx_tls_key_file": str(work / "tls.key"),
        "nginx_tls_mode": "files",
        "nginx_tls_ocsp_stapling": "off",
        "nginx_acme_webroot": str(work / "acme"),
        "nginx_stub_status_enabled": False,
        "nginx_access_log": str(work / "access.log"),
        "nginx_error_log": str(work / "site-error.log"),
        # wrk is one client address sending ~500 req/s: keep the limits, out of its way.
        "nginx_api_rate": "100000r/s",
        "nginx_api_burst": 100000,
        "nginx_conn_limit_per_ip": 10000,
    }
    (work / "overrides.json").write_text(json.dumps(overrides))
    playbook = (
        shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) or "ansible-playbook"
    )
    run = subprocess.run(
        [
            playbook,
            "-i",
            "localhost,",
            str(BENCH_DIR / "nginx_site.yml"),
            "-e",
            f"@{work / 'overrides.json'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError("rendering the nginx role's template failed:\n" + run.stdout[-2000:])
    (work / "nginx.conf").write_text(MAIN_CONF.format(work=work))


def run(ctx: Any) -> list[Any]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(nginx, os.X_OK):
        raise RuntimeError("nginx not found: apt-get install nginx-light (make prereqs-bench does)")
    work = ctx.workdir / "nginx"
    work.mkdir()
    http_port, https_port = _free_port(), _free_port()
    bot_port = int(ctx.base_url.rsplit(":", 1)[1])
    _render(work, bot_port, http_port, https_port, ctx.env)
    test = subprocess.run(
        [nginx, "-t", "-q", "-c", str(work / "nginx.conf")], capture_output=True, text=True
    )
    if test.returncode != 0:
        raise RuntimeError("nginx -t: " + test.stderr)
    proc = subprocess.Popen(
        [nginx, "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=open(work / "stderr.log", "wb"),
    )  # noqa: SIM115
    try:
        _wait_port(https_port)
        token_env = {"BENCH_TOKEN": ctx.token}
        script = BENCH_DIR / "chat_post.lua"
        ctx.wrk(
            f"https://127.0.0.1:{https_port}/api/v1/chat", CONNECTIONS, script, token_env
        )  # warm-up
        direct = ctx.wrk(f"{ctx.base_url}/api/v1/chat", CONNECTIONS, script, token_env)
        direct.name = "chat straight to the bot"
        via = ctx.wrk(f"https://127.0.0.1:{https_port}/api/v1/chat", CONNECTIONS, script, token_env)
        via.name = "chat through nginx (HTTPS)"
        via.baseline, via.goal = direct.rps, GOAL
        via.note = (
            "(nginx role's site template, TLS 1.3, upstream keepalive; ratio vs the line above)"
        )
        return [direct, via]
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
