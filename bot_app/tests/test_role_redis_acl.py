"""bot_app against a Redis whose bot user is exactly the one the redis role configures.

The bot user's name and ACL rules are read from the role (roles/redis/defaults/main.yml:
redis_clawbot_user, redis_clawbot_acl_rules), the ``user default`` line and the shape of the
bot's line from its ACL template (roles/redis/templates/users.acl.j2); nothing of the ACL is
copied here. The test fails when the role's ACL is too narrow for bot_app's real Redis code
paths (session turns, rate limiter, IM dedupe, readiness ping: any refused command lands in the
ACL log) or so wide that the bot user may FLUSHALL, list keys or touch keys of others.

It starts its own redis-server (about 50 ms): the session one of conftest.py has no ACL.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import yaml
from fakes.openai_provider import FakeModelServer
from redis.exceptions import NoPermissionError

from clawbot_app.config import Settings
from clawbot_app.store import RedisStore
from tests.conftest import _require
from tests.support import free_port, running_app, settings_dict, wait_port

ROLE = Path(__file__).parents[2] / "roles/redis"
DEFAULTS = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
TEMPLATE_LINES = (ROLE / "templates/users.acl.j2").read_text().splitlines()
# The bot user's line in the role's template; the test writes the same with its own password.
TEMPLATE_BOT_LINE = ("user {{ redis_clawbot_user }} reset on "
                     "#{{ redis_clawbot_password | hash('sha256') }} "
                     "{{ redis_clawbot_acl_rules | join(' ') }}")
# Sent by redis-py when it connects; Redis < 7.2 does not know it (an error reply, not an ACL
# refusal), later versions refuse it for this user and redis-py ignores the refusal.
CONNECT_HANDSHAKE = {"client|setinfo"}


@dataclass
class AclRedis:
    port: int
    user: str
    password: str
    inspector_password: str

    @property
    def url(self) -> str:
        return f"redis://{self.user}:{self.password}@127.0.0.1:{self.port}/0"

    def inspector(self) -> aioredis.Redis:
        """A full-rights user of this test (not the role's) to read the ACL log and the keys."""
        return aioredis.from_url(f"redis://inspector:{self.inspector_password}@127.0.0.1:{self.port}/0",
                                 decode_responses=True)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    assert TEMPLATE_BOT_LINE in TEMPLATE_LINES, \
        "users.acl.j2 writes the bot user differently: update this test"
    default_line = next(line for line in TEMPLATE_LINES if line.startswith("user default "))
    user = DEFAULTS["redis_clawbot_user"]
    rules = " ".join(DEFAULTS["redis_clawbot_acl_rules"])
    password, inspector = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    workdir = tmp_path_factory.mktemp("redis-acl")
    aclfile = workdir / "users.acl"
    aclfile.write_text(
        f"{default_line}\n"
        f"user {user} reset on #{hashlib.sha256(password.encode()).hexdigest()} {rules}\n"
        f"user inspector reset on >{inspector} ~* &* +@all\n")
    log = workdir / "redis.log"
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [_require("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--aclfile", str(aclfile),
             # DEBUG and MODULE on, so that only the ACL refuses them to the bot user.
             "--enable-debug-command", "yes", "--enable-module-command", "yes"],
            stdout=out, stderr=subprocess.STDOUT)
    try:
        try:
            wait_port(port, 15)
        except TimeoutError:
            pytest.fail(f"redis-server with the role's ACL did not start:\n{log.read_text()}")
        yield AclRedis(port, user, password, inspector)
    finally:
        proc.terminate()
        proc.wait(10)


async def test_bot_app_works_with_the_roles_bot_user(tmp_path: Path, primary: FakeModelServer,
                                                     acl_redis: AclRedis) -> None:
    inspector = acl_redis.inspector()
    await inspector.acl_log_reset()
    settings = Settings.model_validate(settings_dict(
        tmp_path, primary.base_url, storage={"redis_url": acl_redis.url},
        rate_limit={"per_tenant_per_minute": 2}, session={"ttl_seconds": 120}))
    tenant = f"acl-{uuid.uuid4().hex[:6]}"
    try:
        async with running_app(settings) as h:
            assert isinstance(h.services.store, RedisStore)  # make_store
            assert h.services.dedupe is h.services.store  # make_dedupe: Redis when configured
            r = await h.client.get("/ready")  # PING
            assert r.status_code == 200 and r.json()["checks"]["redis"]["status"] == "ok", r.text
            tok = await h.token(tenant=tenant)
            # session turns: LRANGE, MULTI/RPUSH/LTRIM/EXPIRE/EXEC;
            # rate limiter: MULTI/INCRBY/EXPIRE/EXEC
            r1 = await h.chat(tok, message="a")
            assert r1.status_code == 200, r1.text
            r2 = await h.chat(tok, message="b", session_id=r1.json()["session_id"])
            assert r2.json()["reply"] == "primary: b [n=3]"  # the context came back from Redis
            r3 = await h.chat(tok, message="c")
            assert r3.status_code == 429  # the third request of the minute
            # IM dedupe: SET NX EX
            event = f"im:feishu:event:{uuid.uuid4()}"
            assert await h.services.dedupe.mark_seen(event, 60) is True
            assert await h.services.dedupe.mark_seen(event, 60) is False

        refused = [e for e in await inspector.acl_log() if e["object"] not in CONNECT_HANDSHAKE]
        assert refused == [], refused
        keys = sorted([k async for k in inspector.scan_iter("*")])
        assert any(k.startswith(f"clawbot:turns:{tenant}:") for k in keys), keys
        assert any(k.startswith(f"clawbot:rl:tenant:{tenant}:") for k in keys), keys
        assert f"clawbot:seen:{event}" in keys
    finally:
        await inspector.aclose()


@pytest.mark.parametrize("command", [
    ("FLUSHALL",), ("FLUSHDB",), ("KEYS", "*"), ("SCAN", "0"), ("CONFIG", "SET", "maxmemory", "1"),
    ("CONFIG", "GET", "*"), ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST"), ("SHUTDOWN", "NOSAVE"),
    ("ACL", "LIST"),
    ("EVAL", "return 1", "0"), ("SET", "other:key", "1"), ("GET", "clawbot:other"),
], ids=lambda c: " ".join(c[:2]))
async def test_the_roles_bot_user_is_refused(acl_redis: AclRedis, command: tuple[str, ...]) -> None:
    client = aioredis.from_url(acl_redis.url)
    try:
        with pytest.raises(NoPermissionError):
            await client.execute_command(*command)
    finally:
        await client.aclose()
