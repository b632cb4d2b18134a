"""A release that fails the health gate is rolled back and the service keeps answering.

Runs ../broken_release.yml (the bot_app role with a wheel whose server exits at start) against
the converged container with Molecule's inventory, then checks the container. Kept in its own
module, named to run after test_serving.py (pytest runs modules in file-name order), because it changes releases."""

from __future__ import annotations

from pathlib import Path

from conftest import https_chat, run_playbook

SCENARIO = Path(__file__).resolve().parents[1]


def test_broken_release_is_rolled_back_and_the_bot_keeps_answering(host, api_token) -> None:
    before = host.file("/opt/clawbot/current").linked_to
    rc, output = run_playbook(SCENARIO / "broken_release.yml", timeout=600)
    assert rc != 0, "deploying a release that cannot start must fail the play"
    assert "Rolled back from release 0.1.0.post999-" in output, output[-4000:]
    assert "answers /ready again" in output, output[-4000:]

    # The release that was running is current again, the broken one stays installed for a look.
    assert host.file("/opt/clawbot/current").linked_to == before
    assert host.file("/opt/clawbot/previous").linked_to.split("/")[-1].startswith("0.1.0.post999-")
    assert host.check_output("clawbot-app --version") == "0.1.0"
    status, answer, _ = https_chat(host, api_token, {"message": "still here"})
    assert status == 200, answer
    assert answer["reply"] == "standin-model: still here [n=1]"
