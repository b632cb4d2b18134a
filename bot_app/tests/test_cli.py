"""CLI: migrate, token create/list/revoke, keyring rotate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from clawbot_app.cli import main
from clawbot_app.config import Settings
from clawbot_app.db.engine import make_engine
from clawbot_app.db.schema import api_tokens, audit_log
from clawbot_app.db.tokens import hash_token
from tests.conftest import MariaDB


def _cfg(tmp_path: Path, **storage: object) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump({"storage": {"data_dir": str(tmp_path / "data"), **storage},
                                 "logging": {"level": "WARNING"}}))
    return str(p)


def _rows(url: str, table: sa.Table) -> list[sa.Row]:
    async def q() -> list[sa.Row]:
        engine = make_engine(url)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.select(table))).all())
        finally:
            await engine.dispose()

    return asyncio.run(q())


def test_token_lifecycle_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    assert main(["token", "create", "--config", cfg, "--user", "u1", "--tenant", "t1",
                 "--days", "30"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("cb_") and "id: 1" in out.err
    url = Settings.model_validate(yaml.safe_load(Path(cfg).read_text())) \
        .storage.effective_database_url
    rows = _rows(url, api_tokens)
    assert rows[0].token_hash == hash_token(token)
    assert token not in str(tuple(rows[0]))  # only the hash is stored
    assert main(["token", "list", "--config", cfg]) == 0
    listing = capsys.readouterr().out
    assert "u1" in listing and "t1" in listing and "active" in listing and token not in listing
    assert main(["token", "revoke", "--config", cfg, "1"]) == 0
    assert main(["token", "revoke", "--config", cfg, "99"]) == 1
    capsys.readouterr()
    assert main(["token", "list", "--config", cfg]) == 0
    assert "revoked" in capsys.readouterr().out
    actions = [r.action for r in _rows(url, audit_log)]
    assert actions == ["token.create", "token.revoke"]


def test_migrate_mariadb(tmp_path: Path, mariadb: MariaDB,
                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, database_url=mariadb.url)
    assert main(["migrate", "--config", cfg]) == 0
    assert "0001_initial" in capsys.readouterr().out
    assert main(["token", "create", "--config", cfg, "--user", "m1", "--days", "1"]) == 0
    token = capsys.readouterr().out.strip()
    rows = [r for r in _rows(mariadb.url, api_tokens) if r.token_hash == hash_token(token)]
    assert len(rows) == 1 and rows[0].tenant_id == "m1"


def test_keyring_rotate_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path)
    assert main(["keyring", "rotate", "--config", cfg]) == 0
    assert main(["keyring", "rotate", "--config", cfg]) == 0
    import json

    doc = json.loads((tmp_path / "data" / "keyring.json").read_text())
    assert len(doc["keys"]) == 2 and doc["current"] in doc["keys"]
    assert doc["version"] == 1 and set(doc["meta"]) == set(doc["keys"])
