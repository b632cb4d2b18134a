"""The repository README's "Running the bot service alone" snippet works when pasted into bash.

The snippet is taken from README.md as it stands and run by bash with two substitutions only: the
provider is a fake OpenAI-compatible server on loopback (no real provider is reachable here), and
the venv it creates is this test run's own (the `pip install` line is what `make` already did).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.openai_provider import FakeModel, FakeModelServer

from tests.support import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Running the bot service alone"


def readme_snippet() -> str:
    text = README.read_text()
    assert SECTION in text, f"{README} has no section {SECTION!r}"
    block = re.search(r"```sh\n(.*?)```", text[text.index(SECTION):], re.S)
    assert block is not None, f"no sh code block under {SECTION!r}"
    return block.group(1)


@pytest.fixture
def fake_provider() -> Iterator[FakeModelServer]:
    server = FakeModelServer(FakeModel(name="readme", api_key="sk-readme-test")).start()
    yield server
    server.stop()


def test_readme_snippet_answers_a_chat_when_pasted(
    tmp_path: Path, fake_provider: FakeModelServer
) -> None:
    snippet = readme_snippet()
    assert "TOKEN=$(" in snippet, "the snippet must capture the token"
    assert "serve &" in snippet, "the snippet must run serve in the background"
    cli = shutil.which("clawbot-app") or Path(sys.executable).with_name("clawbot-app")
    venv_bin = str(Path(cli).parent)
    port = free_port()
    lines = [line for line in snippet.splitlines() if "pip install" not in line]
    script = "\n".join(lines)
    script = (script.replace("/tmp/clawbot/bin", venv_bin)
              .replace("localhost:18789", f"localhost:{port}")
              .replace("sk-your-key", "sk-readme-test")
              .replace("https://api.example.com/v1", f"{fake_provider.base_url}/v1"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CLAWBOT") and k != "MODEL_API_KEY"}
    env.update(HOME=str(tmp_path), CLAWBOT__SERVER__PORT=str(port))
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", f"cd {tmp_path}\n{script}\nwait"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    # 143: `wait` reports serve ended by the snippet's `kill %1`.
    assert proc.returncode in (0, 143), proc.stderr[-3000:]
    # The fake names itself and echoes the user's message: the reply really came from the model.
    assert '"readme: hi' in proc.stdout, proc.stdout + proc.stderr[-3000:]
    assert fake_provider.fake.authorizations == ["Bearer sk-readme-test"]
