"""Long replies split under a platform's limit: property tests and examples."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from clawbot_app.im.split import MIN_LIMIT, PLATFORM_LIMITS, split_parts, split_reply

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")

CHARS = [*"abc xyz中文字符😀é**#-`", "\t"]
words = st.text(alphabet=st.sampled_from(CHARS), min_size=1, max_size=60)
prose = st.lists(words, min_size=1, max_size=8).map(" ".join)
code_line = st.text(alphabet=st.sampled_from(list("ab(){};=中😀 ")), max_size=120)
code = st.tuples(st.sampled_from(["", "python", "bash", "json 很长的信息字符串" * 3]),
                 st.lists(code_line, max_size=12))
block = st.one_of(
    prose,
    st.lists(prose, min_size=1, max_size=4).map("\n".join),
    code.map(lambda c: "```" + c[0] + "\n" + "".join(line + "\n" for line in c[1]) + "```"),
    st.text(alphabet=st.sampled_from(list("x中😀 ")), min_size=200, max_size=3000),  # one long line
)
documents = st.lists(block, min_size=1, max_size=12).map("\n\n".join)


def _balanced(text: str) -> bool:
    """Every fence opened in the rendered part is closed in it (the generator uses ``` only)."""
    open_marker = None
    for line in text.splitlines():
        m = FENCE.match(line)
        if not m or (m.group(1)[0] == "`" and "`" in line.strip()[len(m.group(1)):]):
            continue  # CommonMark: a backtick "fence" whose info has a backtick is inline code
        if open_marker is None:
            open_marker = m.group(1)
        elif line.strip() == open_marker:
            open_marker = None
    return open_marker is None


@settings(max_examples=300, deadline=None)
@given(documents, st.integers(min_value=MIN_LIMIT, max_value=4000))
@example("``` `", 128)  # not a fence (backtick in the info string): found by Hypothesis in CI
@example("`````中中 " + "- " * 300 + "`", 128)  # a cut would drop the backtick: found by Hypothesis
@example("x" * 90 + "```python" + " y" * 200, 128)  # a cut just before "```" would open a block
@example("```" + "python " * 80 + "\ncode\n```", 200)  # an opening fence longer than a part
def test_parts_fit_rejoin_and_keep_fences_balanced(text: str, limit: int) -> None:
    parts = split_parts(text, limit)
    assert "".join(p.body for p in parts) == text
    rendered = [p.render(i, len(parts)) for i, p in enumerate(parts, 1)]
    assert rendered == split_reply(text, limit)
    for i, part in enumerate(rendered, 1):
        assert len(part.encode("utf-8")) <= limit
        assert _balanced(part), part
        assert part.encode("utf-8").decode("utf-8") == part  # never a cut character
        if len(rendered) > 1:
            assert part.startswith(f"({i}/{len(rendered)})\n")
    assert all(p.body for p in parts)


def test_short_reply_is_one_unnumbered_part() -> None:
    assert split_reply("**hello**", PLATFORM_LIMITS["wecom"]) == ["**hello**"]
    assert split_reply("", 2000) == []


def test_paragraph_breaks_are_preferred() -> None:
    para = ("word " * 30).strip()
    text = "\n\n".join([para] * 20)
    parts = split_parts(text, 500)
    assert len(parts) > 1
    for p in parts[:-1]:
        assert p.body.endswith("\n\n")


def test_a_long_code_block_is_closed_and_reopened_with_its_language() -> None:
    text = "Intro\n\n```python\n" + "".join(f"x = {i}  # 中文\n" for i in range(200)) + "```\n\nEnd"
    rendered = split_reply(text, 600)
    assert len(rendered) > 2
    assert rendered[1].startswith(f"(2/{len(rendered)})\n```python\n")
    assert rendered[0].rstrip().endswith("```")
    assert rendered[-1].rstrip().endswith("End")


def test_a_line_without_spaces_is_cut_between_characters() -> None:
    text = "😀" * 1000
    rendered = split_reply(text, 300)
    assert "".join(r.split("\n", 1)[1] for r in rendered) == text
    assert all(len(r.encode()) <= 300 for r in rendered)


def test_a_cut_never_makes_or_loses_a_fence() -> None:
    line = "`````中中 " + "- " * 300 + "`"  # not a fence: its info string has a backtick
    for limit in (128, 200, 333):
        for part in split_reply(line + "\n\n```\ncode\n```", limit):
            assert _balanced(part), part


def test_limits_too_small_are_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        split_parts("x", MIN_LIMIT - 1)
    with pytest.raises(ValueError, match="no room"):
        split_parts("`" * 60 + "\ncode\n" + "`" * 60, MIN_LIMIT)
