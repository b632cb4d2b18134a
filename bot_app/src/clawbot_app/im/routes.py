"""Starlette routes of the IM callbacks (mounted by the application factory)."""

from __future__ import annotations

from starlette.routing import Route

from clawbot_app.im.dingtalk import dingtalk_callback
from clawbot_app.im.feishu import feishu_callback
from clawbot_app.im.wecom import wecom_callback

routes: list[Route] = [
    Route("/dingtalk/callback", dingtalk_callback, methods=["POST"], name="dingtalk_callback"),
    Route(
        "/api/dingtalk/callback", dingtalk_callback, methods=["POST"], name="dingtalk_callback_api"
    ),
    Route("/feishu/callback", feishu_callback, methods=["POST"], name="feishu_callback"),
    Route("/api/feishu/callback", feishu_callback, methods=["POST"], name="feishu_callback_api"),
    # Same handler: Feishu's URL check (plain or encrypted url_verification) and events.
    Route("/feishu/verify", feishu_callback, methods=["POST"], name="feishu_verify"),
    # GET: WeCom's URL verification (echostr); POST: encrypted message events.
    Route("/wecom/callback", wecom_callback, methods=["GET", "POST"], name="wecom_callback"),
    Route("/api/wecom/callback", wecom_callback, methods=["GET", "POST"],
          name="wecom_callback_api"),
]
