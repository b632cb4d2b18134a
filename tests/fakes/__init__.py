"""Test doubles for what cannot be reached from here: an OpenAI-compatible model provider, DingTalk
and Feishu/Lark. One of each kind, only here; see README.md."""
