"""Split a long markdown reply into numbered parts under an IM platform's size limit.

A part ends, in this order of preference (among breaks that leave the part at least half full),
at a paragraph break outside a code block, at a line break outside a code block, at a line break
inside one (the fence is closed at the end of the part
and opened again, with its info string, at the start of the next), and only for a single line
longer than a whole part, at a character boundary (after a space when there is one). A multi-byte
character is never cut. The parts' bodies joined are the original text; what is added to render a
part is the "(i/n)" line and the fence lines that keep every part's code blocks balanced.

Limits are in bytes of UTF-8, as the platforms count them, below the documented maxima:

- DingTalk: a robot message's ``msgParam`` (the markdown title and text) "must not exceed 15,000
  bytes" (open.dingtalk.com, "Send group messages with a bot" / ``robot/groupMessages/send``);
  the session webhook takes the same message types.
- Feishu/Lark: card and rich-text message bodies are limited to 30 KB, text messages to 150 KB
  (open.feishu.cn, "Send message", ``im/v1/messages``); a card's markdown element is what we fill,
  and the card's JSON writes a quote, backslash or line break as two bytes: half of 30 KB, less
  the card around it.
- WeCom: an application message's ``text.content`` and ``markdown.content`` are "at most 2048
  bytes" (developer.work.weixin.qq.com/document/path/90236); a group robot's markdown 4096 bytes
  (errcode 40058 "markdown.content exceed max length 4096").
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

PLATFORM_LIMITS: dict[str, int] = {
    "dingtalk": 12_000,
    "feishu": 14_000,
    "wecom": 2_000,
    "wecom_robot": 4_000,
}
"""Default part size per platform: the documented maximum less room for the JSON around it."""

MIN_LIMIT = 128
"""Smaller limits leave no room for a numbered part with a re-opened code block."""

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})([^\n]*)$")
_INFO_MAX = 32
"""A re-opened fence keeps at most this many bytes of its info string (the language name)."""


@dataclass(frozen=True)
class Part:
    """One part: ``body`` is an exact slice of the original; ``reopen`` is the fence line to put
    before it (the part starts inside a code block), ``close`` the fence to put after it."""

    body: str
    reopen: str = ""
    close: str = ""

    def render(self, index: int, total: int) -> str:
        head = f"({index}/{total})\n" if total > 1 else ""
        tail = ""
        if self.close:
            tail = ("" if self.body.endswith("\n") else "\n") + self.close + "\n"
        return head + (self.reopen + "\n" if self.reopen else "") + self.body + tail


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8"))


def _fence_of(line: str) -> tuple[str, str] | None:
    """(marker, info) when the line is a code fence (CommonMark: up to 3 spaces of indent)."""
    match = _FENCE.match(line.rstrip("\n"))
    if not match:
        return None
    marker, info = match.group(1), match.group(2)
    if marker[0] == "`" and "`" in info:
        return None  # an inline code span, not a fence
    return marker, info.strip()


def _reopen_line(marker: str, info: str) -> str:
    kept = info.encode("utf-8")[:_INFO_MAX].decode("utf-8", "ignore").strip()
    return marker + kept


@dataclass
class _Line:
    text: str
    open_fence: tuple[str, str] | None  # the code block this line is inside (after it is read)
    blank: bool
    opens: bool = False  # this line is the opening fence of a code block


def _scan(text: str) -> list[_Line]:
    lines: list[_Line] = []
    fence: tuple[str, str] | None = None
    for raw in text.splitlines(keepends=True):
        found = _fence_of(raw)
        opens = fence is None and found is not None
        if opens:
            fence = found
        elif fence is not None and found is not None:
            marker, info = found
            if marker[0] == fence[0][0] and len(marker) >= len(fence[0]) and not info:
                fence = None
        lines.append(_Line(raw, fence, raw.strip() == "", opens))
    return lines


def _cut_keeps_fences(line: _Line, head: str, rest: str) -> bool:
    """A cut must not make a fence line where the original has none (or lose one).

    The head of an opening fence line is still that fence; any other head, and every rest (a
    continuation, never a fence in the original), must not read as a fence line: a prose line
    cut before its "```", or a fence-like line whose info string (with a backtick, so not a
    fence) is cut away, would otherwise open or close a code block in the rendered part.
    """
    if _fence_of(rest) is not None:
        return False
    head_fence = _fence_of(head)
    if line.opens:
        return head_fence is not None and line.open_fence is not None and (
            head_fence[0] == line.open_fence[0])
    return head_fence is None


def _hard_split(line: _Line, budget: int) -> tuple[str, str]:
    """The longest head of ``line`` within ``budget`` bytes that keeps the fences as they are,
    cut after a space if there is one in its second half, never inside a character."""
    text = line.text
    head = text.encode("utf-8")[:budget].decode("utf-8", "ignore")  # drops a cut character
    space = head.rfind(" ")
    candidates = [space + 1] if space > len(head) // 2 else []
    candidates.extend(range(len(head), 0, -1))
    for cut in candidates:
        if _cut_keeps_fences(line, text[:cut], text[cut:]):
            return text[:cut], text[cut:]
    return text[:1], text[1:]


def split_parts(text: str, limit: int) -> list[Part]:
    """The parts of ``text`` (see the module docstring); ``[]`` for an empty text."""
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT} bytes")
    if not text:
        return []
    lines = _scan(text)
    # Room for "(999/999)\n" and, inside a code block, a re-opened and a closing fence line.
    marker = max((len(line.open_fence[0]) for line in lines if line.open_fence), default=3)
    budget = limit - (len("(999/999)\n") + 2 * (marker + _INFO_MAX + 1) + 1)
    if budget < 16:
        raise ValueError(f"limit {limit} leaves no room for a code fence of {marker} characters")
    parts: list[Part] = []
    reopen = ""
    current: list[_Line] = []
    size = 0

    def flush(count: int) -> None:
        nonlocal current, size, reopen
        taken, current = current[:count], current[count:]
        body = "".join(line.text for line in taken)
        inside = taken[-1].open_fence
        close = inside[0] if inside else ""
        parts.append(Part(body, reopen, close))
        reopen = _reopen_line(*inside) if inside else ""
        size = sum(_nbytes(line.text) for line in current)

    def best_break() -> int:
        """How many of the current lines to put in this part."""
        filled = []  # bytes in the part if it ended after line i
        total = 0
        for line in current:
            total += _nbytes(line.text)
            filled.append(total)
        for want in ("paragraph", "line"):
            for i in range(len(current), 0, -1):
                line = current[i - 1]
                if filled[i - 1] < budget // 2:
                    break  # a break this early would make a part less than half full
                if line.open_fence is None and (line.blank or want == "line"):
                    return i
        return len(current)

    pending = deque(lines)
    while pending:
        line = pending.popleft()
        length = _nbytes(line.text)
        if size + length <= budget:
            current.append(line)
            size += length
            continue
        if current:
            flush(best_break())
            pending.appendleft(line)
            continue
        # A single line longer than a part: cut it at a character boundary.
        head, rest = _hard_split(line, budget)
        current.append(_Line(head, line.open_fence, False, line.opens))
        flush(1)
        pending.appendleft(_Line(rest, line.open_fence, line.blank))
    if current:
        flush(len(current))
    return parts


def split_reply(text: str, limit: int) -> list[str]:
    """The rendered parts of ``text``, numbered "(i/n)" when there is more than one."""
    parts = split_parts(text, limit)
    return [part.render(i, len(parts)) for i, part in enumerate(parts, 1)]
