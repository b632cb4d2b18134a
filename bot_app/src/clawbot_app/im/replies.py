"""What the bot sends back for one answer: rendered for the platform, split, numbered, capped.

``plan_reply`` is the one place every IM channel turns a model answer (or a failure notice)
into the texts of the messages to send, in order. The platform modules only wrap each text in
their message shape (DingTalk markdown, a Feishu card, a WeCom app message).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from clawbot_app.config import ImSettings
from clawbot_app.im import render
from clawbot_app.im.common import CallbackServices
from clawbot_app.im.split import PLATFORM_LIMITS, split_parts

T = TypeVar("T")

TRUNCATION_RESERVE = 160
"""Bytes kept free in every part for the truncation notice (its longest text is ~60 bytes) and a
DingTalk mention ("@" and a staff id)."""

_RENDERERS: dict[tuple[str, str], Callable[[str], str]] = {
    ("dingtalk", "markdown"): render.dingtalk_markdown,
    ("feishu", "card"): render.feishu_card_markdown,
    ("wecom", "markdown"): render.wecom_markdown,
}


@dataclass(frozen=True)
class ReplyPlan:
    texts: list[str]
    markdown: bool
    """True when ``texts`` are in the platform's markdown dialect (False: plain text)."""
    language: str
    title: str = ""
    """A short title from the answer's first line (DingTalk shows it in the chat list)."""


def reply_language(settings: ImSettings, user_text: str) -> str:
    if settings.language != "auto":
        return settings.language
    return render.language_of(user_text)


def plan_reply(
    settings: ImSettings, platform: str, answer: str, *, user_text: str = "",
    limit: int | None = None,
) -> ReplyPlan:
    """The message texts for ``answer`` on ``platform`` (``dingtalk``, ``feishu``, ``wecom``).

    ``limit`` (bytes of UTF-8 per message) defaults to the platform's, see
    :data:`clawbot_app.im.split.PLATFORM_LIMITS` for the documented maxima.
    """
    fmt: str = getattr(settings.reply_format, platform)
    language = reply_language(settings, user_text)
    renderer = _RENDERERS.get((platform, fmt))
    answer = render.clean(answer)
    text = renderer(answer) if renderer else answer
    part_limit = (limit or PLATFORM_LIMITS[platform]) - TRUNCATION_RESERVE
    title = render.plain_title(text) or render.notice("title", language)
    try:
        parts = split_parts(text, part_limit)
    except ValueError:
        # A code fence too long to reopen in a part (a line of hundreds of backticks): the
        # answer goes out as plain text, cut between characters.
        return _plain_plan(answer, part_limit, settings.max_parts, language, title)
    if not parts:
        return ReplyPlan([], renderer is not None, language, title)
    kept = parts[: settings.max_parts]
    texts = [part.render(i, len(kept)) for i, part in enumerate(kept, 1)]
    if len(parts) > len(kept):
        texts[-1] = texts[-1].rstrip("\n") + "\n\n" + render.notice("truncated", language)
    return ReplyPlan(texts, renderer is not None, language, title)


def _plain_plan(answer: str, limit: int, max_parts: int, language: str, title: str) -> ReplyPlan:
    chunks: list[str] = []
    rest = answer
    budget = limit - len("(999/999)\n")
    while rest and len(chunks) <= max_parts:
        head = rest.encode("utf-8")[:budget].decode("utf-8", "ignore") or rest[:1]
        chunks.append(head)
        rest = rest[len(head):]
    kept = chunks[:max_parts]
    texts = [f"({i}/{len(kept)})\n{c}" if len(kept) > 1 else c for i, c in enumerate(kept, 1)]
    if len(chunks) > len(kept) or rest:
        texts[-1] = texts[-1] + "\n\n" + render.notice("truncated", language)
    return ReplyPlan(texts, False, language, title)


def failure_plan(settings: ImSettings, exc: BaseException, *, user_text: str = "") -> ReplyPlan:
    language = reply_language(settings, user_text)
    return ReplyPlan([render.failure_notice(exc, language)], False, language,
                     render.notice("title", language))


async def answer_plan(
    services: CallbackServices, platform: str, *, tenant_id: str, user_id: str, session_id: str,
    text: str, path: str, ref: str,
) -> ReplyPlan:
    """The chat service's answer to ``text`` as the messages to send; a failed call as the short
    notice (logged with ``ref``, the platform's message id, and the error type only)."""
    im = services.settings.im
    try:
        result = await services.chat.reply(tenant_id=tenant_id, user_id=user_id,
                                           session_id=session_id, message=text, path=path)
        return plan_reply(im, platform, str(result.reply), user_text=text)
    except Exception as exc:  # noqa: BLE001 - answer the user with a short notice
        logging.getLogger(f"clawbot_app.im.{platform}").warning(
            "%s chat failed: %s error=%s", platform, ref, type(exc).__name__)
        return failure_plan(im, exc, user_text=text)


async def send_in_order(
    platform: str, ref: str, items: Sequence[T], send: Callable[[T], Awaitable[object]]
) -> None:
    """``send`` each message in turn; after a failure (logged with the platform's code, never
    the content) the rest is not sent: later parts would arrive without the one before them."""
    for index, item in enumerate(items, 1):
        try:
            await send(item)
        except Exception as exc:  # noqa: BLE001 - background task: log and give up
            logging.getLogger(f"clawbot_app.im.{platform}").warning(
                "%s reply failed: %s part=%d/%d error=%s code=%s status=%s", platform, ref,
                index, len(items), type(exc).__name__,
                getattr(exc, "errcode", getattr(exc, "code", None)), getattr(exc, "status", None))
            return
