"""What the bot sends back for one answer: rendered for the platform, split, numbered, capped.

``plan_reply`` is the one place every IM channel turns a model answer (or a failure notice)
into the texts of the messages to send, in order. The platform modules only wrap each text in
their message shape (DingTalk markdown, a Feishu card, a WeCom app message).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clawbot_app.config import ImSettings
from clawbot_app.im import render
from clawbot_app.im.split import PLATFORM_LIMITS, split_parts

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
