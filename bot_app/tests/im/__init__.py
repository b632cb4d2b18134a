"""Tests of the DingTalk/Feishu callbacks (clawbot_app.im)."""
