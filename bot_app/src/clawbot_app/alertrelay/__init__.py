"""The alert relay: Alertmanager webhook notifications to DingTalk, Feishu and WeCom group robots.

Alertmanager has no receiver for these robots, so ``clawbot-app alert-relay`` takes its webhook
JSON (version 4) on ``POST /alerts/<receiver>``, renders one message per notification, signs it
with the IM code the bot uses (:mod:`clawbot_app.im.dingtalk_crypto`,
:mod:`clawbot_app.im.feishu_crypto`) and posts it with retries. It runs as its own service, so
alerts about the bot still go out when the bot is down.

Modules, one job each: :mod:`.config` (the relay's YAML file), :mod:`.payload` (Alertmanager's
JSON), :mod:`.render` (the message text, en/zh, within a byte budget), :mod:`.platforms` (each
robot's request and how to read its answer), :mod:`.delivery` (retries and metrics),
:mod:`.metrics`, :mod:`.app` (HTTP endpoints) and :mod:`.server` (uvicorn, SIGHUP).
"""
