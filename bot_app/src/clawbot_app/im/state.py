"""Per-application state owned by the IM package (kept on ``app.state.clawbot_im``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clawbot_app.im.feishu_api import FeishuTokenCache

_ATTR = "clawbot_im"


@dataclass
class ImState:
    feishu_tokens: FeishuTokenCache = field(default_factory=FeishuTokenCache)


def get_state(app: Any) -> ImState:
    state = getattr(app.state, _ATTR, None)
    if state is None:
        state = ImState()
        setattr(app.state, _ATTR, state)
    return state
