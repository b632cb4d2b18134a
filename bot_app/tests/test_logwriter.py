"""Conversation-log writer on a real SQLite / MariaDB: poisoned rows, journal, recovery."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from clawbot_app.config import Settings
from clawbot_app.db import migrate
from clawbot_app.db.engine import Database, utcnow
from clawbot_app.db.schema import conversation_log, dialog_sessions
from clawbot_app.journal import Journal
from clawbot_app.logwriter import ConversationWriter, Row, Spool, _decode, _encode
from clawbot_app.metrics import Metrics
from tests.support import settings_dict

SECRET = "SECRET-CONTENT-must-not-be-logged"


@pytest.fixture(params=["sqlite", "mariadb"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    storage: dict[str, Any] = {"replay_interval_seconds": 0.1}
    if request.param == "mariadb":
        storage["database_url"] = request.getfixturevalue("mariadb").url
    else:
        migrate.upgrade(f"sqlite:///{tmp_path / 'clawbot.sqlite3'}")
    yield Settings.model_validate(settings_dict(tmp_path, storage=storage))


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    migrate.upgrade(f"sqlite:///{tmp_path / 'clawbot.sqlite3'}")
    return Settings.model_validate(settings_dict(
        tmp_path, storage={"replay_interval_seconds": 0.1}))


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database.from_settings(settings)
    yield database
    await database.close()


def log_row(tenant: str, **values: Any) -> Row:
    return ("conversation_log", {
        "id": str(uuid.uuid4()), "tenant_id": tenant, "user_id": "u", "session_id": "s",
        "role": "user", "content": "ciphertext", "key_id": "k1", "model": "m",
        "latency_ms": None, "created_at": utcnow(), **values})


def session_row(tenant: str, session: str) -> Row:
    return ("dialog_sessions", {"id": str(uuid.uuid4()), "tenant_id": tenant, "user_id": "u",
                                "session_id": session, "created_at": utcnow()})


def bad_rows(tenant: str) -> list[Row]:
    """Rows the DB (or its driver) rejects, each for another reason."""
    return [
        log_row(tenant, user_id="bad-\ud800", content=SECRET),  # lone surrogate: no encoding
        log_row(tenant, role=None, content=SECRET),  # NOT NULL
        log_row(tenant, created_at="yesterday", content=SECRET),  # not a datetime
    ]


async def stored_ids(db: Database, tenant: str) -> set[str]:
    async with db.engine.connect() as conn:
        ids = set((await conn.execute(sa.select(conversation_log.c.id)
                                      .where(conversation_log.c.tenant_id == tenant))).scalars())
        ids |= set((await conn.execute(sa.select(dialog_sessions.c.id)
                                       .where(dialog_sessions.c.tenant_id == tenant))).scalars())
    return ids


def ids(rows: list[Row]) -> set[str]:
    return {values["id"] for _, values in rows}


def dead_letters(spool: Spool) -> list[dict[str, Any]]:
    return [json.loads(line) for line in spool.dead_path.read_text().splitlines()]


def metric(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def assert_dead_lettered(spool: Spool, bad: list[Row]) -> None:
    records = [r for r in dead_letters(spool) if "values" in r]
    assert {r["values"]["id"] for r in records} == ids(bad)
    assert "bad-\ud800" in {r["values"]["user_id"] for r in records}  # surrogate kept as is
    assert all(r["table"] == "conversation_log" and r["error"] for r in records)
    assert stat.S_IMODE(os.stat(spool.dead_path).st_mode) == 0o600
    lines = [line for line in spool.dead_path.read_text().splitlines() if '"values"' in line]
    assert {_decode(line)[1]["id"] for line in lines} == ids(bad)  # valid spool lines too


# -- poisoned batch ---------------------------------------------------------------------------
async def test_poisoned_batch_writes_good_rows_and_dead_letters_bad(
        settings: Settings, db: Database, caplog: pytest.LogCaptureFixture) -> None:
    tenant = f"poison-{uuid.uuid4().hex[:8]}"
    metrics = Metrics()
    writer = ConversationWriter(settings, db, metrics)
    good = [session_row(tenant, "s1"), log_row(tenant), log_row(tenant, role="assistant")]
    bad = bad_rows(tenant)
    caplog.set_level(logging.INFO, logger="clawbot_app.logwriter")
    await writer.start()
    writer.submit_many([good[0], bad[0], good[1], bad[1], bad[2], good[2]])  # one batch
    await writer.flush()
    await writer.stop()

    assert await stored_ids(db, tenant) == ids(good)
    assert_dead_lettered(writer.spool, bad)
    assert writer.spool.pending_rows() == 0  # nothing spooled: the DB was up
    assert metric(metrics, "clawbot_conversation_dead_letter_total") == 3
    assert metric(metrics, "conversation_log_spooled_total") == 0
    assert writer.db_ok
    assert caplog.text.count("rejected by the database") == 3
    assert SECRET not in caplog.text and "bad-" not in caplog.text


async def test_duplicates_are_skipped_not_dead_lettered(settings: Settings,
                                                        db: Database) -> None:
    tenant = f"dup-{uuid.uuid4().hex[:8]}"
    metrics = Metrics()
    writer = ConversationWriter(settings, db, metrics)
    first = [session_row(tenant, "s1"), log_row(tenant)]
    await writer.start()
    writer.submit_many(first)
    await writer.flush()
    again = [first[1], session_row(tenant, "s1"), log_row(tenant)]  # same id, same session
    writer.submit_many(again)
    await writer.flush()
    await writer.stop()
    assert await stored_ids(db, tenant) == ids(first) | {again[2][1]["id"]}
    assert not writer.spool.dead_path.exists()
    assert metric(metrics, "clawbot_conversation_dead_letter_total") == 0


async def test_spool_replay_is_not_blocked_by_a_bad_row(settings: Settings,
                                                        db: Database) -> None:
    tenant = f"replay-{uuid.uuid4().hex[:8]}"
    metrics = Metrics()
    writer = ConversationWriter(settings, db, metrics)
    good = [log_row(tenant) for _ in range(4)]
    bad = bad_rows(tenant)
    writer.spool.append([good[0], bad[0], good[1], bad[1]])
    writer.spool.append([bad[2], good[2], good[3]])
    with writer.spool.path.open("ab") as fh:
        fh.write(b'{"table":"conversation_log","val')  # a line torn by a power loss
    await writer.start()

    async def replayed() -> bool:
        return not writer.spool.pending_files()

    await wait_for(replayed)
    await writer.stop()
    assert await stored_ids(db, tenant) == ids(good)
    records = dead_letters(writer.spool)
    torn = [r for r in records if "raw" in r]
    assert len(torn) == 1 and torn[0]["raw"].startswith('{"table"')
    assert_dead_lettered(writer.spool, bad)
    assert metric(metrics, "conversation_log_replayed_total") == 4
    assert metric(metrics, "clawbot_conversation_dead_letter_total") == 4
    assert [p for p in writer.spool.dir.iterdir() if p.name.startswith("replay-")] == []


@pytest.mark.parametrize(("linger_ms", "most_commits"), [(200, 2), (0, 20)])
async def test_rows_of_a_burst_share_a_transaction_while_the_writer_lingers(
        sqlite_settings: Settings, linger_ms: int, most_commits: int) -> None:
    """Requests submit their rows one at a time; with ``writer_linger_ms`` the writer commits
    a burst of them together instead of once per request (what made the chat path CPU-bound)."""
    settings = sqlite_settings.model_copy(update={"storage": sqlite_settings.storage.model_copy(
        update={"writer_linger_ms": linger_ms})})
    db = Database.from_settings(settings)
    commits: list[int] = []
    sa.event.listen(db.engine.sync_engine, "commit", lambda conn: commits.append(1))
    writer = ConversationWriter(settings, db, Metrics())
    tenant = f"burst-{uuid.uuid4().hex[:8]}"
    await writer.start()
    submitted = []
    for _ in range(20):  # 20 requests, 5 ms apart: 100 ms in all
        rows = [log_row(tenant), log_row(tenant, role="assistant")]
        submitted += rows
        writer.submit_many(rows)
        await asyncio.sleep(0.005)
    await writer.flush()
    await writer.stop()
    try:
        assert await stored_ids(db, tenant) == ids(submitted)
    finally:
        await db.close()
    if linger_ms:
        assert len(commits) <= most_commits, commits
    else:
        assert len(commits) >= 10, "without lingering every request is its own transaction"


def test_dead_letter_is_never_replayed(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.dead_letter(['{"error":"x","table":"conversation_log","values":{}}'])
    assert spool.pending_files() == [] and spool.claim() == []
    assert spool.dead_rows() == 1


def test_surrogates_survive_the_spool_encoding() -> None:
    row = log_row("t", user_id="\ud800-\udfff-\U0001f600", content="é")
    line = _encode(row)
    assert line.isascii()
    assert _decode(line) == row


# -- outages are not poison --------------------------------------------------------------------
async def test_missing_table_is_an_outage_rows_are_spooled_then_replayed(
        sqlite_settings: Settings) -> None:
    db = Database.from_settings(sqlite_settings)
    tenant = "outage"
    metrics = Metrics()
    writer = ConversationWriter(sqlite_settings, db, metrics)
    rows = [log_row(tenant) for _ in range(3)]
    try:
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: conversation_log.drop(c))
        await writer.start()
        writer.submit_many(rows)
        await writer.flush()
        assert writer.spool.pending_rows() == 3 and not writer.db_ok
        assert not writer.spool.dead_path.exists()
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda c: conversation_log.create(c))

        async def replayed() -> bool:
            return not writer.spool.pending_files()

        await wait_for(replayed)
        assert await stored_ids(db, tenant) == ids(rows)
        assert metric(metrics, "clawbot_conversation_dead_letter_total") == 0
    finally:
        await writer.stop()
        await db.close()


# -- journal -----------------------------------------------------------------------------------
def journal_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("seg-*.jsonl"))


def test_journal_segments_rotate_and_are_deleted_when_done(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", max_rows=2, max_age_seconds=0)
    segs = [journal.append(b"x\n", 1) for _ in range(5)]
    assert len(set(segs)) == 3 and len(journal_files(tmp_path / "j")) == 3
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in journal_files(tmp_path / "j"))
    for seg in segs[:4]:
        journal.done(seg, 1)
    assert journal_files(tmp_path / "j") == [segs[4].path]  # full segments gone, active stays
    journal.done(segs[4], 1)
    journal.rotate_idle()
    assert journal_files(tmp_path / "j") == [] and journal.segment_count == 0


def test_journal_orphans_are_adopted_only_once_their_owner_is_gone(tmp_path: Path) -> None:
    owner = Journal(tmp_path / "j")
    other = Journal(tmp_path / "j")
    owner.append(b"a\n", 1)
    owner.append(b"b\nc\n", 2)
    assert other.adopt_orphans(tmp_path / "spool") == 0  # locked by a live owner
    owner.close()  # what the kernel does to the locks when the owner dies
    assert other.adopt_orphans(tmp_path / "spool") == 1
    [moved] = list((tmp_path / "spool").glob("replay-seg-*.jsonl"))
    assert moved.read_bytes() == b"a\nb\nc\n"
    assert journal_files(tmp_path / "j") == []


def test_journal_fsync_policies(tmp_path: Path) -> None:
    for policy in ("never", "batch", "always"):
        journal = Journal(tmp_path / policy, fsync=policy)  # type: ignore[arg-type]
        seg = journal.append(b"x\n", 1)
        asyncio.run(journal.sync([seg]))
        journal.done(seg, 1)
        journal.close()
        assert journal_files(tmp_path / policy) == []
    with pytest.raises(ValueError):
        Journal(tmp_path, fsync="sometimes")  # type: ignore[arg-type]


async def test_rows_are_in_the_journal_when_submit_returns(sqlite_settings: Settings) -> None:
    db = Database.from_settings(sqlite_settings)
    writer = ConversationWriter(sqlite_settings, db, Metrics())  # task not started
    rows = [session_row("j", "s"), log_row("j"), log_row("j", role="assistant")]
    writer.submit_many(rows)
    writer.submit(*log_row("j"))
    lines = [_decode(line) for p in journal_files(writer.journal.dir)
             for line in p.read_text().splitlines()]
    assert lines[:3] == rows and len(lines) == 4
    writer.journal.close()
    await db.close()


async def test_journal_of_a_dead_writer_is_replayed_without_duplicates(
        settings: Settings, db: Database) -> None:
    tenant = f"crash-{uuid.uuid4().hex[:8]}"
    rows = [session_row(tenant, "s1")] + [log_row(tenant) for _ in range(9)]
    crashed = ConversationWriter(settings, db, Metrics())
    crashed.submit_many(rows)  # journaled and queued, never written by the (dead) task
    async with db.engine.begin() as conn:  # half of them were committed before the "crash"
        await conn.execute(sa.insert(conversation_log), [v for _, v in rows[1:6]])
    crashed.journal.close()  # process death: the segment stays, unlocked

    metrics = Metrics()
    writer = ConversationWriter(settings, db, metrics)
    await writer.start()

    async def recovered() -> bool:
        return await stored_ids(db, tenant) == ids(rows)

    await wait_for(recovered)
    await writer.stop()
    assert not writer.spool.pending_files() and not writer.spool.dead_path.exists()
    assert metric(metrics, "conversation_log_replayed_total") == len(rows)
    assert journal_files(writer.journal.dir) == []
