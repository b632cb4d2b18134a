"""Model answers (markdown) in each IM platform's markdown dialect.

The platforms render a subset of markdown, each a different one; what a platform does not
render is rewritten into something readable there, and code blocks are left alone:

* DingTalk (``msgtype: markdown``): headings, emphasis, links, lists and quotes render; tables
  do not, so a table becomes one bullet line per row ("**header**: cell; ...").
* Feishu/Lark card ``markdown`` element: emphasis, links, lists, code blocks render; headings and
  tables do not (headings become a bold line, tables bullet rows), images need an uploaded
  ``image_key`` (an image becomes its link), and ``<`` starts card tags such as
  ``<at id=all></at>`` (a mention of everyone): it is written as ``&lt;`` outside code.
* WeCom app ``markdown``: headings, bold, links, inline code and quotes render; tables, lists
  and code blocks do not: tables become bullet rows and a code block's lines are quoted.

Each function keeps the text's line structure outside what it rewrites, so the splitter
(:mod:`clawbot_app.im.split`) still finds the paragraph and code-block boundaries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_TABLE_DELIMITER = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def _segments(text: str) -> Iterator[tuple[bool, list[str]]]:
    """``(in_code, lines)`` runs of the text, lines with their line ends; a fence line belongs
    to its code block. An unclosed fence runs to the end (as CommonMark reads it)."""
    lines = text.splitlines(keepends=True)
    run: list[str] = []
    fence: str | None = None
    for line in lines:
        match = _FENCE.match(line.rstrip("\r\n"))
        if fence is None and match and not (match.group(1)[0] == "`" and "`" in match.group(2)):
            if run:
                yield False, run
            run, fence = [line], match.group(1)
        elif fence is not None and match and match.group(1)[0] == fence[0] \
                and len(match.group(1)) >= len(fence) and not match.group(2).strip():
            run.append(line)
            yield True, run
            run, fence = [], None
        else:
            run.append(line)
    if run:
        yield fence is not None, run


def _cells(row: str) -> list[str]:
    row = row.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)]


def _tables_to_rows(lines: list[str]) -> list[str]:
    """Markdown tables (header row, delimiter row, body rows) as one bullet line per body row."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if (i + 1 < len(lines) and "|" in line and _TABLE_DELIMITER.match(lines[i + 1])):
            header = _cells(line)
            i += 2
            while i < len(lines) and "|" in lines[i] and lines[i].strip():
                cells = _cells(lines[i])
                pairs = [
                    f"**{name}**: {value}" if name else value
                    for name, value in zip(header, cells, strict=False)
                ]
                out.append("- " + "; ".join(pairs) + "\n")
                i += 1
            continue
        out.append(line)
        i += 1
    return out


def _outside_code(text: str, prose: Callable[[list[str]], list[str]],
                  code: Callable[[list[str]], list[str]] | None = None) -> str:
    out: list[str] = []
    for in_code, lines in _segments(text):
        if in_code:
            out.extend(code(lines) if code else lines)
        else:
            out.extend(prose(lines))
    return "".join(out)


def _escape_inline_code_aware(line: str, escape: Callable[[str], str]) -> str:
    """``escape`` applied to a line's text outside its inline code spans."""
    parts = re.split(r"(`+[^`\n]*`+)", line)
    return "".join(p if p.startswith("`") else escape(p) for p in parts)


def dingtalk_markdown(text: str) -> str:
    return _outside_code(text, _tables_to_rows)


def feishu_card_markdown(text: str) -> str:
    def prose(lines: list[str]) -> list[str]:
        out = []
        for line in _tables_to_rows(lines):
            end = line[len(line.rstrip("\r\n")):]
            body = line.rstrip("\r\n")
            heading = _HEADING.match(body)
            if heading:
                body = f"**{heading.group(2)}**" if heading.group(2) else ""
            body = _IMAGE.sub(lambda m: f"[{m.group(1) or m.group(2)}]({m.group(2)})", body)
            body = _escape_inline_code_aware(body, lambda s: s.replace("<", "&lt;"))
            out.append(body + end)
        return out

    return _outside_code(text, prose)


def wecom_markdown(text: str) -> str:
    def prose(lines: list[str]) -> list[str]:
        return [_IMAGE.sub(lambda m: f"[{m.group(1) or m.group(2)}]({m.group(2)})", line)
                for line in _tables_to_rows(lines)]

    def code(lines: list[str]) -> list[str]:
        body = lines[1:-1] if len(lines) > 1 and _FENCE.match(lines[-1].rstrip("\r\n")) \
            else lines[1:]
        return ["> " + line if line.strip() else ">\n" for line in body] or [">\n"]

    return _outside_code(text, prose, code)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def clean(text: str) -> str:
    """Line ends as ``\n`` and no other control characters (a platform shows them as boxes,
    and JSON writes each as six bytes)."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def plain_title(text: str, limit: int = 32) -> str:
    """A short title from the first line with text (DingTalk shows it in the chat list)."""
    for line in text.splitlines():
        if _FENCE.match(line):
            continue
        cleaned = re.sub(r"[#*_`>~|\[\]]", "", line).strip(" -\t")
        if cleaned:
            return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
    return ""


def language_of(text: str) -> str:
    """``zh`` when the text has CJK characters, else ``en``."""
    return "zh" if _CJK.search(text) else "en"


_NOTICES = {
    "unavailable": {
        "en": "Sorry, the assistant is unavailable right now. Please try again later.",
        "zh": "抱歉，助手暂时无法回答，请稍后再试。",
    },
    "invalid": {
        "en": "Sorry, your message could not be processed (it may be empty or too long).",
        "zh": "抱歉，无法处理这条消息（可能为空或过长）。",
    },
    "busy": {
        "en": "Sorry, too many requests right now. Please try again shortly.",
        "zh": "抱歉，当前请求过多，请稍后再试。",
    },
    "truncated": {
        "en": "(The answer was too long and has been cut here.)",
        "zh": "（回答过长，以下内容已省略。）",
    },
    "title": {"en": "Reply", "zh": "回复"},
}


def notice(kind: str, language: str) -> str:
    texts = _NOTICES[kind]
    return texts.get(language, texts["en"])


def failure_notice(exc: BaseException, language: str) -> str:
    """A short user-facing message for a failed chat call: no internals, no error codes."""
    status = getattr(exc, "status", None)
    if status == 422:
        return notice("invalid", language)
    if status == 429:
        return notice("busy", language)
    return notice("unavailable", language)
