"""Rendering: one message per notification, en/zh, firing/resolved, within the byte budget."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from clawbot_app.alertrelay.payload import Notification, parse_time
from clawbot_app.alertrelay.platforms import (
    FEISHU_BODY_BYTES,
    WECOM_MARKDOWN_BYTES,
    feishu_body,
    fit_feishu_text,
)
from clawbot_app.alertrelay.render import MARKDOWN, PLAIN, render, truncate_utf8
from tests.alertrelay.support import notification, resolved


def _render(data: dict[str, Any], language: str = "en", style: Any = MARKDOWN,
            budget: int = 4096, max_alerts: int = 10, external_url: str | None = None) -> str:
    return render(Notification.model_validate(data), language=language, style=style,
                  budget_bytes=budget, max_alerts=max_alerts, external_url=external_url).text


def test_english_firing_markdown() -> None:
    assert _render(notification()) == (
        "### [FIRING:2] HighCpuUsage\n\n"
        "**Severity:** critical · team: clawbot · job: node\n\n"
        "**Summary:** CPU above 85% for 5 minutes\n\n"
        "**Alerts:**\n\n"
        "- **FIRING** · host=web1, instance=10.0.0.11:9100 · CPU on web1 is 97% · "
        "since 2024-05-01 10:00:00 UTC · "
        "[source](http://prometheus.local:9090/graph?g0.expr=cpu+%3E+0.85)\n"
        "- **FIRING** · host=web2, instance=10.0.0.12:9100 · CPU on web2 is 91% · "
        "since 2024-05-01 10:01:00 UTC · "
        "[source](http://prometheus.local:9090/graph?g0.expr=cpu+%3E+0.85)\n\n"
        "[Alertmanager](http://alertmanager.local:9093) · [Silence](http://alertmanager.local:9093"
        "/#/silences/new?filter=%7Balertname%3D%22HighCpuUsage%22%7D)")


def test_chinese_resolved_plain_text_with_configured_external_url() -> None:
    text = _render(resolved(), language="zh", style=PLAIN,
                   external_url="https://am.example/")
    assert text.splitlines() == [
        "[已恢复:2] HighCpuUsage",
        "级别: critical · team: clawbot · job: node",
        "摘要: CPU above 85% for 5 minutes",
        "告警列表:",
        "- 已恢复 · host=web1, instance=10.0.0.11:9100 · CPU on web1 is 97% · "
        "结束于 2024-05-01 10:20:00 UTC · 查看: http://prometheus.local:9090/graph?g0.expr=cpu+%3E+0.85",
        "- 已恢复 · host=web2, instance=10.0.0.12:9100 · CPU on web2 is 91% · "
        "结束于 2024-05-01 10:20:00 UTC · 查看: http://prometheus.local:9090/graph?g0.expr=cpu+%3E+0.85",
        "Alertmanager: https://am.example/ · "
        "静默: https://am.example/#/silences/new?filter=%7Balertname%3D%22HighCpuUsage%22%7D",
    ]


def test_mixed_group_counts_both_and_lists_firing_first() -> None:
    data = notification()
    data["alerts"][0]["status"] = "resolved"
    text = _render(data, style=PLAIN)
    assert text.startswith("[FIRING:1, RESOLVED:1] HighCpuUsage\n")
    assert text.index("FIRING · host=web2") < text.index("RESOLVED · host=web1")


def test_labels_that_differ_are_shown_and_unsafe_links_are_not() -> None:
    data = notification(groupLabels={"alertname": "KeyringTooOld", "host": "bot1"},
                        commonLabels={"alertname": "KeyringTooOld", "host": "bot1"})
    data["alerts"][0]["labels"] = {"alertname": "KeyringTooOld", "host": "bot1",
                                   "keyring": "conversations", "severity": "warning"}
    data["alerts"][0]["generatorURL"] = "javascript:alert(1)"
    text = _render(data, style=PLAIN)
    assert "Group: host=bot1" in text
    assert "- FIRING · host=bot1, keyring=conversations" in text
    assert "Severity: critical/warning" in text
    assert "javascript:" not in text


def _many(count: int, truncated: int = 0) -> dict[str, Any]:
    data = notification(truncatedAlerts=truncated)
    template = data["alerts"][0]
    data["alerts"] = [{**template, "labels": {**template["labels"], "host": f"节点-{i:03d}"},
                       "annotations": {"summary": "磁盘空间不足" * 20}} for i in range(count)]
    return data


def test_many_alerts_are_cut_to_the_budget_and_counted() -> None:
    text = _render(_many(200, truncated=50), language="zh", max_alerts=100,
                   budget=WECOM_MARKDOWN_BYTES)
    shown = text.count("\n- **告警中**")
    assert len(text.encode()) <= WECOM_MARKDOWN_BYTES
    assert 1 <= shown < 100
    assert f"…… 另有 {250 - shown} 条告警未显示" in text
    assert text.endswith("%22HighCpuUsage%22%7D)")  # the links survive the cut


def test_max_alerts_per_message() -> None:
    text = _render(_many(30), max_alerts=5, budget=18000)
    assert text.count("\n- **FIRING**") == 5
    assert "… and 25 more alert(s) not shown" in text


def test_a_huge_description_is_cut_on_a_character_boundary() -> None:
    data = notification(commonAnnotations={"description": "警" * 20000})
    text = _render(data, budget=4096)
    assert len(text.encode()) <= 4096
    assert "警" * 900 in text


def test_feishu_body_fits_its_limit_even_with_escapes() -> None:
    text = '"\n' * 15000  # JSON escapes double these
    fitted = fit_feishu_text(text, "secret")
    body = feishu_body(fitted, "secret")
    assert len(json.dumps(body, ensure_ascii=False).encode()) <= FEISHU_BODY_BYTES
    assert text.startswith(fitted.removesuffix("…"))


@given(st.text(), st.integers(min_value=0, max_value=300))
def test_truncate_utf8_never_splits_a_character(text: str, limit: int) -> None:
    cut = truncate_utf8(text, limit)
    raw = cut.encode("utf-8")  # would raise on a lone surrogate half
    assert len(raw) <= limit
    if len(text.encode("utf-8")) <= limit:
        assert cut == text
    else:
        assert text.startswith(cut.removesuffix("…"))


def test_parse_time_handles_go_times() -> None:
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("not a time") is None
    parsed = parse_time("2024-05-01T12:00:00.123456789+02:00")
    assert parsed is not None and parsed.isoformat() == "2024-05-01T10:00:00.123456+00:00"
