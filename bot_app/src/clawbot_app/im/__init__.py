"""IM platform callbacks (DingTalk, Feishu/Lark, WeCom).

Modules, one job each:

* ``routes`` -- the Starlette ``routes`` list mounted by the app factory;
* ``dingtalk`` / ``feishu`` / ``wecom`` -- endpoint handlers (verify, dedupe, ack, background
  reply);
* ``msgcrypt`` -- the message crypto DingTalk's events and WeCom share; ``dingtalk_crypto`` /
  ``feishu_crypto`` -- the platforms' own signatures and AES;
* ``dingtalk_api`` / ``feishu_api`` / ``wecom_api`` -- outbound calls (session webhook, group
  robot, message reply, app messages); ``tokens`` -- the access-token cache;
* ``replies`` -- an answer as the messages to send: ``render`` (each platform's markdown
  dialect), ``split`` (parts under the platform's size limit);
* ``common`` -- body limits, JSON errors, metrics/dedupe/spawn glue; ``state`` -- per-app state;
* ``builders`` -- requests exactly as the platforms send them (tests, fakes, benchmark).
"""
