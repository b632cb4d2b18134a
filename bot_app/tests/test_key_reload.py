"""Keyring files in the running app: provider API key file, keyring tokens, key id metric.

The reload here is :func:`clawbot_app.app.reload_settings`, the SIGHUP handler; the real
signal against the ``serve`` process is in ``test_serve_process.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from fakes.openai_provider import FakeModelServer

from clawbot_app.config import ConfigError, load_settings
from clawbot_app.crypto import rotate_keyring_file
from clawbot_app.db.schema import conversation_log
from clawbot_app.services import Services
from tests.support import keyring_series, running_app, settings_dict, write_keyring


def _config(tmp_path: Path, data: dict[str, Any]) -> Path:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(data))
    return cfg


def _with_key_file(tmp_path: Path, primary: FakeModelServer, key_file: Path,
                   **extra: Any) -> dict[str, Any]:
    return settings_dict(tmp_path, primary.base_url, **extra, models={"providers": {
        "primary": {"api_key": None, "api_key_file": str(key_file)}}})


async def test_provider_key_file_switches_on_reload(
        tmp_path: Path, primary: FakeModelServer,
        reload: Callable[[Services, str], bool]) -> None:
    key_file = write_keyring(tmp_path / "model.json", "m1", {"m1": "sk-primary"},
                             source="external")
    cfg = _config(tmp_path, _with_key_file(tmp_path, primary, key_file))
    async with running_app(load_settings(str(cfg), environ={})) as h:
        tok = await h.token()
        assert (await h.chat(tok, message="one")).status_code == 200
        assert primary.fake.authorizations[-1] == "Bearer sk-primary"
        series = keyring_series((await h.client.get("/metrics")).text)
        assert ("provider:primary", "m1") in series

        write_keyring(key_file, "m2", {"m1": "sk-primary", "m2": "sk-rotated"},
                      source="external")
        primary.fake.api_key = "sk-rotated"  # the provider revoked the old key
        stale = await h.chat(tok, message="two")
        assert stale.status_code == 502  # no reload yet: still the old key
        assert primary.fake.authorizations[-1] == "Bearer sk-primary"

        assert reload(h.services, str(cfg))
        r = await h.chat(tok, message="three")
        assert r.status_code == 200 and r.json()["reply"].startswith("primary: three")
        assert primary.fake.authorizations[-1] == "Bearer sk-rotated"
        r = await h.chat(tok, message="four", stream=True)
        assert r.status_code == 200 and primary.fake.authorizations[-1] == "Bearer sk-rotated"
        series = keyring_series((await h.client.get("/metrics")).text)
        assert ("provider:primary", "m2") in series and ("provider:primary", "m1") not in series


async def test_broken_key_file_keeps_running_key(
        tmp_path: Path, primary: FakeModelServer,
        reload: Callable[[Services, str], bool]) -> None:
    key_file = write_keyring(tmp_path / "model.json", "m1", {"m1": "sk-primary"})
    cfg = _config(tmp_path, _with_key_file(tmp_path, primary, key_file))
    async with running_app(load_settings(str(cfg), environ={})) as h:
        tok = await h.token()
        key_file.write_text('{"version": 1, "current": "m9", "keys": {"m1": "sk-primary"}}')
        assert not reload(h.services, str(cfg))
        assert (await h.chat(tok, message="still")).status_code == 200
        assert primary.fake.authorizations[-1] == "Bearer sk-primary"
        assert ("provider:primary", "m1") in keyring_series(
            (await h.client.get("/metrics")).text)


async def test_keyring_tokens_and_pruning(
        tmp_path: Path, primary: FakeModelServer,
        reload: Callable[[Services, str], bool]) -> None:
    ring = write_keyring(tmp_path / "probe.json", "t2", {"t1": "tok-old", "t2": "tok-new"})
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"keyring_file": str(ring), "user": "probe", "tenant": "ops"}]}))
    cfg = _config(tmp_path, settings_dict(tmp_path, primary.base_url,
                                          auth={"tokens_file": str(tokens)}))
    async with running_app(load_settings(str(cfg), environ={})) as h:
        for token in ("tok-old", "tok-new"):  # the current and the previous key
            r = await h.chat(token, message=f"hi {token}")
            assert r.status_code == 200, r.text
        await h.services.writer.flush()
        async with h.services.db.engine.connect() as conn:
            owners = set((await conn.execute(sa.select(
                conversation_log.c.tenant_id, conversation_log.c.user_id))).all())
        assert owners == {("ops", "probe")}
        text = (await h.client.get("/metrics")).text
        assert keyring_series(text) == {("encryption", h.services.keyring.current),
                                        ("tokens:probe", "t2")}

        # rotation: t3 becomes current, t2 stays as the previous key, t1 is pruned
        write_keyring(ring, "t3", {"t2": "tok-new", "t3": "tok-newer"})
        assert (await h.chat("tok-newer", message="early")).status_code == 401  # not yet read
        assert reload(h.services, str(cfg))
        old = await h.chat("tok-old", message="pruned")
        assert old.status_code == 401 and old.json()["error"]["code"] == "unauthorized"
        assert (await h.chat("tok-new", message="previous")).status_code == 200
        assert (await h.chat("tok-newer", message="current")).status_code == 200
        series = keyring_series((await h.client.get("/metrics")).text)
        assert ("tokens:probe", "t3") in series and ("tokens:probe", "t2") not in series

        tokens.write_text(yaml.safe_dump({"tokens": [
            {"keyring_file": str(ring), "user": "probe",
             "expires_at": "2020-01-01T00:00:00Z"}]}))
        assert reload(h.services, str(cfg))
        expired = await h.chat("tok-newer", message="late")
        assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


async def test_encryption_key_metric_and_atomic_apply(
        tmp_path: Path, primary: FakeModelServer,
        reload: Callable[[Services, str], bool]) -> None:
    enc = tmp_path / "enc.json"
    first = rotate_keyring_file(enc)
    ring = write_keyring(tmp_path / "probe.json", "t1", {"t1": "tok-one"})
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump([{"keyring_file": str(ring), "user": "probe"}]))
    cfg = _config(tmp_path, settings_dict(tmp_path, primary.base_url,
                                          auth={"tokens_file": str(tokens)},
                                          encryption={"keyring_file": str(enc)}))
    async with running_app(load_settings(str(cfg), environ={})) as h:
        text = (await h.client.get("/metrics")).text
        assert keyring_series(text) == {("encryption", first), ("tokens:probe", "t1")}
        assert "tok-one" not in text
        second = rotate_keyring_file(enc)
        assert reload(h.services, str(cfg))
        text = (await h.client.get("/metrics")).text
        assert keyring_series(text) == {("encryption", second), ("tokens:probe", "t1")}
        assert f'key_id="{first}"' not in text  # the old label set is gone, not 0

        # files that change between validation and use: what was validated is what is applied
        # (each file is read once); the broken file is refused by the next validation.
        validated = load_settings(str(cfg), environ={})
        write_keyring(ring, "t2", {"t2": "tok-two"})
        enc.write_text("{}")
        h.services.apply_settings(validated)
        assert h.services.keyring.current == second
        assert (await h.chat("tok-one", message="kept")).status_code == 200
        assert (await h.chat("tok-two", message="not yet")).status_code == 401
        with pytest.raises(ConfigError):
            load_settings(str(cfg), environ={})
