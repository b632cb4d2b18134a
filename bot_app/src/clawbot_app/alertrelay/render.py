"""One concise message per Alertmanager notification, in English or Chinese, within a byte budget.

The message: a title with the status and counts (``[FIRING:2] HighCpu``), the severity, the
common summary and description, the group's labels, one line per alert (its status, the labels
that tell it apart: host, instance, job first; its own summary; since when; a link to the
expression) and links to Alertmanager and to a pre-filled silence. Alerts that do not fit (the
platform's size limit or ``max_alerts``) are counted in a last "... and N more" line, together
with the ``truncatedAlerts`` Alertmanager already left out.

Markdown for DingTalk and WeCom, plain text for Feishu's ``text`` messages (links written out).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from clawbot_app.alertrelay.payload import Alert, Notification, parse_time

ELLIPSIS = "…"
KEY_LABELS = ("host", "instance")  # always on an alert's line
HEADER_LABELS = ("team", "job")  # on the severity line when the whole group shares them
HIDDEN_LABELS = {"alertname", "severity", "team"}
MAX_LABELS_PER_ALERT = 6
MAX_HEADER_VALUE_CHARS = 1000
MAX_ALERT_VALUE_CHARS = 300
MAX_TITLE_BYTES = 128  # a chat notification preview shows far less

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Texts:
    firing: str
    resolved: str
    severity: str
    summary: str
    description: str
    group: str
    alerts: str
    since: str
    ended: str
    source: str
    more: str
    alertmanager: str
    silence: str


TEXTS: dict[str, Texts] = {
    "en": Texts(firing="FIRING", resolved="RESOLVED", severity="Severity", summary="Summary",
                description="Description", group="Group", alerts="Alerts", since="since",
                ended="ended", source="source", more="… and {n} more alert(s) not shown",
                alertmanager="Alertmanager", silence="Silence"),
    "zh": Texts(firing="告警中", resolved="已恢复", severity="级别", summary="摘要",
                description="详情", group="分组", alerts="告警列表", since="开始于",
                ended="结束于", source="查看", more="…… 另有 {n} 条告警未显示",
                alertmanager="Alertmanager", silence="静默"),
}


@dataclass(frozen=True)
class Style:
    markdown: bool

    def bold(self, text: str) -> str:
        return f"**{text}**" if self.markdown else text

    def heading(self, text: str) -> str:
        return f"### {text}" if self.markdown else text

    def link(self, text: str, url: str) -> str:
        return f"[{text}]({_link_url(url)})" if self.markdown else f"{text}: {url}"

    @property
    def paragraph(self) -> str:
        # DingTalk's markdown joins lines separated by a single newline; a blank line breaks.
        return "\n\n" if self.markdown else "\n"


MARKDOWN = Style(markdown=True)
PLAIN = Style(markdown=False)


@dataclass(frozen=True)
class Rendered:
    title: str
    text: str


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def truncate_utf8(text: str, max_bytes: int, marker: str = ELLIPSIS) -> str:
    """``text`` cut to at most ``max_bytes`` UTF-8 bytes, ``marker`` included, never inside a
    multi-byte character (the partial tail of the cut is dropped)."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return text
    room = max_bytes - utf8_len(marker)
    if room <= 0:
        return raw[:max(max_bytes, 0)].decode("utf-8", "ignore")
    return raw[:room].decode("utf-8", "ignore") + marker


def _clean(value: str, max_chars: int) -> str:
    """One line, at most ``max_chars`` characters."""
    one_line = _SPACE.sub(" ", value).strip()
    return one_line if len(one_line) <= max_chars else one_line[:max_chars - 1] + ELLIPSIS


def _link_url(url: str) -> str:
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")


def _http_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _when(value: str) -> str | None:
    parsed = parse_time(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else None


def _label_text(labels: dict[str, str], keys: list[str]) -> str:
    return ", ".join(f"{k}={_clean(labels[k], MAX_ALERT_VALUE_CHARS)}" for k in keys)


def title(n: Notification, texts: Texts) -> str:
    firing, resolved = n.counts()
    if n.status == "resolved":
        status = f"[{texts.resolved}:{resolved}]"
    elif resolved:
        status = f"[{texts.firing}:{firing}, {texts.resolved}:{resolved}]"
    else:
        status = f"[{texts.firing}:{firing}]"
    name = n.groupLabels.get("alertname") or n.commonLabels.get("alertname") or "alerts"
    return truncate_utf8(f"{status} {_clean(name, 100)}", MAX_TITLE_BYTES)


def _severity(n: Notification) -> str | None:
    if n.commonLabels.get("severity"):
        return n.commonLabels["severity"]
    found = sorted({a.labels["severity"] for a in n.alerts if a.labels.get("severity")})
    return "/".join(found) or None


def _header(n: Notification, texts: Texts, style: Style) -> list[str]:
    lines = [style.heading(title(n, texts))]
    severity = _severity(n)
    if severity:
        extra = "".join(f" · {k}: {_clean(n.commonLabels[k], 64)}"
                        for k in HEADER_LABELS if n.commonLabels.get(k))
        lines.append(f"{style.bold(texts.severity + ':')} {_clean(severity, 64)}{extra}")
    for key, label in (("summary", texts.summary), ("description", texts.description)):
        value = n.commonAnnotations.get(key)
        if value:
            lines.append(f"{style.bold(label + ':')} {_clean(value, MAX_HEADER_VALUE_CHARS)}")
    group = {k: v for k, v in n.groupLabels.items() if k != "alertname"}
    if group:
        lines.append(f"{style.bold(texts.group + ':')} {_label_text(group, sorted(group))}")
    return lines


def _distinct_keys(alert: Alert, common: dict[str, str]) -> list[str]:
    keys = [k for k in KEY_LABELS if k in alert.labels]
    keys += sorted(k for k in alert.labels
                   if k not in keys and k not in HIDDEN_LABELS and k not in common)
    return keys[:MAX_LABELS_PER_ALERT]


def _alert_line(alert: Alert, n: Notification, texts: Texts, style: Style) -> str:
    status = texts.firing if alert.status == "firing" else texts.resolved
    parts = [style.bold(status)]
    keys = _distinct_keys(alert, n.commonLabels)
    if keys:
        parts.append(_label_text(alert.labels, keys))
    for key in ("summary", "description"):
        value = alert.annotations.get(key)
        if value and value != n.commonAnnotations.get(key):
            parts.append(_clean(value, MAX_ALERT_VALUE_CHARS))
            break
    if alert.status == "resolved" and (ended := _when(alert.endsAt)):
        parts.append(f"{texts.ended} {ended}")
    elif started := _when(alert.startsAt):
        parts.append(f"{texts.since} {started}")
    if _http_url(alert.generatorURL):
        parts.append(style.link(texts.source, alert.generatorURL))
    return "- " + " · ".join(parts)


def silence_url(base: str, n: Notification) -> str:
    """Alertmanager's "new silence" page, pre-filled with the group's label matchers."""
    labels = n.groupLabels or n.commonLabels
    matchers = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{base.rstrip('/')}/#/silences/new?filter=" + urllib.parse.quote("{" + matchers + "}")


def _footer(n: Notification, texts: Texts, style: Style, external_url: str | None) -> list[str]:
    base = external_url or n.externalURL
    if not _http_url(base):
        return []
    return [" · ".join([style.link(texts.alertmanager, base),
                        style.link(texts.silence, silence_url(base, n))])]


def _ordered(alerts: list[Alert]) -> list[Alert]:
    """Firing alerts first, each status in Alertmanager's order."""
    return sorted(alerts, key=lambda a: a.status != "firing")


def render(n: Notification, *, language: str, style: Style, budget_bytes: int,
           max_alerts: int, external_url: str | None = None) -> Rendered:
    """The message for ``n``; ``text`` is at most ``budget_bytes`` UTF-8 bytes."""
    texts = TEXTS[language]
    header = _header(n, texts, style)
    footer = _footer(n, texts, style, external_url)

    def join(items: list[str], lines: list[str]) -> str:
        return style.paragraph.join([*items, "\n".join(lines), *footer])

    total_hidden_max = len(n.alerts) + n.truncatedAlerts
    reserve = utf8_len(texts.more.format(n=total_hidden_max)) + 1
    lines: list[str] = []
    body = [*header, style.bold(texts.alerts + ":")]
    for alert in _ordered(n.alerts)[:max_alerts]:
        line = _alert_line(alert, n, texts, style)
        if utf8_len(join(body, [*lines, line])) + reserve > budget_bytes:
            break
        lines.append(line)
    hidden = len(n.alerts) - len(lines) + n.truncatedAlerts
    if hidden:
        lines.append(texts.more.format(n=hidden))
    text = truncate_utf8(join(body, lines), budget_bytes)
    return Rendered(title=title(n, texts), text=text)

