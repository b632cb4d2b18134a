"""Choose the model provider for a message: routes (first match wins) -> tenant -> default."""

from __future__ import annotations

import re
from functools import lru_cache

from clawbot_app.config import RouteRule, Settings


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def rule_matches(rule: RouteRule, path: str, message: str) -> bool:
    if rule.path_prefix:
        prefix = rule.path_prefix
        return path.startswith(prefix) or path + "/" == prefix
    if rule.regex:
        return _regex(rule.regex).search(message) is not None
    if rule.keywords:
        low = message.lower()
        return any(k.lower() in low for k in rule.keywords)
    return False


def select_providers(settings: Settings, path: str, message: str,
                     tenant_provider: str | None = None) -> list[str]:
    """Ordered candidate provider names: primary first, then ``models.fallback``."""
    providers = settings.models.providers
    primary: str | None = None
    for rule in settings.models.routes:
        if rule.provider in providers and rule_matches(rule, path, message):
            primary = rule.provider
            break
    if primary is None and tenant_provider in providers:
        primary = tenant_provider
    if primary is None:
        primary = settings.default_provider
    order = [primary] if primary in providers else []
    for name in settings.models.fallback:
        if name in providers and name not in order:
            order.append(name)
    return [n for n in order if n is not None]
