"""Per-application state owned by the IM package (kept on ``app.state.clawbot_im``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clawbot_app.im.feishu_api import FeishuTokenCache
from clawbot_app.im.wecom_api import WeComTokenCache

_ATTR = "clawbot_im"


@dataclass
class ImState:
    feishu_tokens: FeishuTokenCache = field(default_factory=FeishuTokenCache)
    wecom_tokens: WeComTokenCache = field(default_factory=WeComTokenCache)


def get_state(app: Any) -> ImState:
    state = getattr(app.state, _ATTR, None)
    if state is None:
        state = ImState()
        setattr(app.state, _ATTR, state)
    return state
