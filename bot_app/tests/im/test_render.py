"""Markdown per platform dialect, the reply plan (render, split, cap) and the failure notices."""

from __future__ import annotations

import json
import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from clawbot_app.config import ImSettings
from clawbot_app.errors import ApiError
from clawbot_app.im import feishu_api, render
from clawbot_app.im.replies import failure_plan, plan_reply, send_in_order
from clawbot_app.im.split import PLATFORM_LIMITS
from clawbot_app.im.wecom_api import WeComApiError

ANSWER = """# Deploy steps

| Step | Command |
|------|---------|
| 1 | `make demo` |
| 2 | `make test` |

![diagram](https://example.com/d.png) and <at id=all></at>

```bash
# not a heading
echo "<b>|x|</b>"
```
"""


def test_feishu_card_headings_tables_images_and_tags() -> None:
    out = render.feishu_card_markdown(ANSWER)
    assert out.splitlines()[0] == "**Deploy steps**"
    assert "- **Step**: 1; **Command**: `make demo`" in out
    assert "- **Step**: 2; **Command**: `make test`" in out
    assert "|------|" not in out
    assert "[diagram](https://example.com/d.png)" in out and "![" not in out
    assert "&lt;at id=all>&lt;/at>" in out and "<at" not in out.split("```")[0]
    # code blocks are left exactly as they are
    assert '```bash\n# not a heading\necho "<b>|x|</b>"\n```\n' in out


def test_dingtalk_keeps_headings_and_code_rewrites_tables() -> None:
    out = render.dingtalk_markdown(ANSWER)
    assert out.startswith("# Deploy steps\n")
    assert "- **Step**: 1; **Command**: `make demo`" in out
    assert '```bash\n# not a heading\necho "<b>|x|</b>"\n```' in out


def test_wecom_quotes_code_and_rewrites_tables() -> None:
    out = render.wecom_markdown(ANSWER)
    assert out.startswith("# Deploy steps\n")
    assert "- **Step**: 2; **Command**: `make test`" in out
    assert "```" not in out
    assert '> # not a heading\n> echo "<b>|x|</b>"\n' in out


def test_inline_code_is_not_escaped_on_feishu() -> None:
    assert render.feishu_card_markdown("use `a<b` or a<b\n") == "use `a<b` or a&lt;b\n"


def test_title_language_and_notices() -> None:
    assert render.plain_title("## **Hello** world\nmore") == "Hello world"
    assert render.plain_title("```\ncode\n```") == "code"
    assert render.language_of("你好") == "zh" and render.language_of("hello") == "en"
    assert render.failure_notice(ApiError("x"), "zh") == "抱歉，助手暂时无法回答，请稍后再试。"
    busy = ApiError("x")
    busy.status = 429
    assert render.failure_notice(busy, "en").startswith("Sorry, too many requests")


def test_failure_plan_speaks_the_users_language_or_the_configured_one() -> None:
    exc = RuntimeError("Traceback (most recent call last): secret internals")
    zh = failure_plan(ImSettings(), exc, user_text="帮我写个脚本")
    en = failure_plan(ImSettings(), exc, user_text="write a script")
    fixed = failure_plan(ImSettings(language="zh"), exc, user_text="write a script")
    assert zh.texts == ["抱歉，助手暂时无法回答，请稍后再试。"]
    assert en.texts == ["Sorry, the assistant is unavailable right now. Please try again later."]
    assert fixed.texts == zh.texts
    assert all("Traceback" not in t for t in zh.texts + en.texts)


def test_text_format_sends_the_answer_unrendered() -> None:
    im = ImSettings.model_validate({"reply_format": {"feishu": "text"}})
    plan = plan_reply(im, "feishu", "# Title\n\nbody")
    assert plan.markdown is False and plan.texts == ["# Title\n\nbody"]


def test_a_fence_too_long_to_reopen_falls_back_to_plain_text() -> None:
    answer = "`" * 1500 + "\n" + "code 中 " * 600 + "\n" + "`" * 1500
    plan = plan_reply(ImSettings(), "feishu", answer, limit=2000)
    assert plan.markdown is False and len(plan.texts) > 1
    assert all(len(t.encode()) <= 2000 for t in plan.texts)
    assert "".join(t.split("\n", 1)[1] for t in plan.texts) == answer


def test_long_answers_are_capped_with_a_notice() -> None:
    answer = "\n\n".join(f"paragraph {i} " + "词" * 300 for i in range(40))
    plan = plan_reply(ImSettings(max_parts=3), "wecom", answer, user_text="你好")
    assert len(plan.texts) == 3
    assert [t.split("\n", 1)[0] for t in plan.texts] == ["(1/3)", "(2/3)", "(3/3)"]
    assert plan.texts[-1].endswith("（回答过长，以下内容已省略。）")
    assert all(len(t.encode()) <= PLATFORM_LIMITS["wecom"] for t in plan.texts)


fences = st.sampled_from(["", "```python\n", "```\n", "~~~\n", "`" * 900 + "\n"])
chunks = st.tuples(fences, st.text(alphabet="ab 中😀|#-*`<\"\\\n\r\x01", max_size=400)).map(
    lambda t: t[0] + t[1] + ("\n```\n" if t[0].startswith("`") else "\n~~~\n" if t[0] else ""))


@settings(max_examples=150, deadline=None)
@given(st.lists(chunks, min_size=1, max_size=30).map("\n\n".join),
       st.sampled_from(["dingtalk", "feishu", "wecom"]), st.integers(1, 12))
def test_every_planned_message_fits_its_platform(answer: str, platform: str, max_parts: int):
    plan = plan_reply(ImSettings(max_parts=max_parts), platform, answer)
    assert len(plan.texts) <= max_parts
    for text in plan.texts:
        assert len(text.encode("utf-8")) <= PLATFORM_LIMITS[platform]
        if platform == "feishu":  # the card JSON (what Feishu limits to 30 KB) fits too
            assert len(feishu_api.card_content(text).encode()) <= 30 * 1024
            assert json.loads(feishu_api.card_content(text))["elements"][0]["content"] == text


async def test_parts_stop_at_the_first_failed_send(caplog) -> None:
    sent: list[str] = []

    async def send(text: str) -> None:
        if text == "two":
            raise WeComApiError("refused", errcode=40056, status=200)
        sent.append(text)

    with caplog.at_level(logging.WARNING):
        await send_in_order("wecom", "msg_id=7", ["one", "two", "three"], send)
    assert sent == ["one"]
    assert "part=2/3 error=WeComApiError code=40056" in caplog.text and "two" not in caplog.text
