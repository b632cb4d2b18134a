"""The chat API under poison input and cross-user access: 4xx JSON, never 500, no leak."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from fakes.openai_provider import FakeModelServer

from clawbot_app.config import Settings
from clawbot_app.db.schema import conversation_log
from tests.support import running_app, settings_dict

DEEP = b'{"message": ' + b"[" * 5000 + b"]" * 5000 + b"}"


def _settings(tmp_path: Path, primary: FakeModelServer) -> Settings:
    return Settings.model_validate(settings_dict(tmp_path, primary.base_url))


@pytest.mark.parametrize("raw", [
    DEEP,
    b'{"message": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}",   # deep, below the recursion limit
    b'{"message": "hi", "token": "\\ud800"}',                     # lone surrogate in the token
    b'{"message": "hi", "session_id": "\\udfff"}',
    b'{"message": "hi", "user_id": "a\\ud800b"}',
    b'{"message": "\\ud800"}',
    b'{"message": "hi", "n": ' + b"9" * 5000 + b"}",              # int beyond Python's digit limit
    b"\xff\xfe{}",
    b"[]",
])
async def test_poison_bodies_get_400_json(tmp_path: Path, primary: FakeModelServer,
                                          raw: bytes) -> None:
    async with running_app(_settings(tmp_path, primary)) as h:
        tok = await h.token()
        r = await h.client.post("/api/v1/chat", content=raw,
                                headers={"Authorization": f"Bearer {tok}"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize("field", ["session_id", "user_id"])
@pytest.mark.parametrize("value", ["会话", "a b", "x" * 129, "-leading", "a\nb", ""])
@pytest.mark.parametrize("stream", [False, True])
async def test_ids_outside_the_charset_get_422(tmp_path: Path, primary: FakeModelServer,
                                               field: str, value: str, stream: bool) -> None:
    async with running_app(_settings(tmp_path, primary)) as h:
        tok = await h.token()
        r = await h.chat(tok, message="hi", stream=stream, **{field: value})
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "validation_error"
        assert field in r.json()["error"]["message"]


async def test_a_session_id_never_reaches_another_users_context(
        tmp_path: Path, primary: FakeModelServer) -> None:
    """Mallory (same tenant) knows Alice's session id and even names Alice as user_id."""
    async with running_app(_settings(tmp_path, primary)) as h:
        alice = await h.token("alice", "acme")
        mallory = await h.token("mallory", "acme")
        r = await h.chat(alice, message="my secret is 42", session_id="s-alice")
        assert r.status_code == 200
        primary.fake.requests.clear()
        for body in ({"session_id": "s-alice"}, {"session_id": "s-alice", "user_id": "alice"}):
            r = await h.chat(mallory, message="what is my secret?", **body)
            assert r.status_code == 200
            sent = primary.fake.requests[-1]["messages"]
            # Mallory's own earlier turn may be there; nothing of Alice's is.
            assert not any("42" in m["content"] for m in sent), sent
        # Alice still has her context.
        r = await h.chat(alice, message="again", session_id="s-alice")
        assert [m["content"] for m in primary.fake.requests[-1]["messages"]][0] == \
            "my secret is 42"


async def test_user_id_labels_the_log_rows_within_the_tokens_session(
        tmp_path: Path, primary: FakeModelServer) -> None:
    async with running_app(_settings(tmp_path, primary)) as h:
        frontend = await h.token("frontend", "acme")
        assert (await h.chat(frontend, message="one", session_id="s1",
                             user_id="end-user-7")).status_code == 200
        r = await h.chat(frontend, message="two", session_id="s1", user_id="end-user-7")
        assert [m["content"] for m in primary.fake.requests[-1]["messages"]][0] == "one"
        assert r.status_code == 200
        await h.services.writer.flush()
        async with h.services.db.engine.connect() as conn:
            users = set((await conn.execute(
                sa.select(conversation_log.c.user_id)
                .where(conversation_log.c.session_id == "s1"))).scalars())
        assert users == {"end-user-7"}


def _completion(content: object) -> dict[str, object]:
    message = {"role": "assistant", "content": content}
    return {"id": "c", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": message}]}


@pytest.mark.parametrize("answer", [
    _completion("\ud800"),                          # lone surrogate: cannot be answered as UTF-8
    _completion({"not": "text"}),                   # content of the wrong type
    _completion("x" * (9 * 1024 * 1024)),           # over httpclient.MAX_RESPONSE_BYTES
    {"choices": "nested" * 3},
    ["not", "an", "object"],
    (200, _completion("x" * (9 * 1024 * 1024)), "gzip"),  # ~9 KiB on the wire, 9 MiB inflated
], ids=["surrogate", "wrong-type", "too-large", "no-choices", "array", "gzip-bomb"])
async def test_a_hostile_model_answer_is_a_502_not_a_500(
        tmp_path: Path, primary: FakeModelServer, answer: object) -> None:
    """What the provider sends is input too: refused as 502 ``upstream_error``, nothing logged
    as a conversation row, and the next request works."""
    async with running_app(_settings(tmp_path, primary)) as h:
        tok = await h.token()
        primary.fake.respond_next.append(answer if isinstance(answer, tuple) else (200, answer))
        r = await h.chat(tok, message="hi")
        assert r.status_code == 502, r.text
        assert r.json()["error"]["code"] == "upstream_error"
        ok = await h.chat(tok, message="again")
        assert ok.status_code == 200, ok.text
        await h.services.writer.flush()
        async with h.services.db.engine.connect() as conn:
            rows = (await conn.execute(sa.select(sa.func.count()).select_from(
                conversation_log))).scalar()
        assert rows == 2  # the good exchange only
