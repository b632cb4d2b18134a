"""IM platform callbacks (DingTalk, Feishu/Lark).

Modules, one job each:

* ``routes`` -- the Starlette ``routes`` list mounted by the app factory;
* ``dingtalk`` / ``feishu`` -- endpoint handlers (verify, dedupe, ack, background reply);
* ``dingtalk_crypto`` / ``feishu_crypto`` -- signatures and AES event crypto;
* ``dingtalk_api`` / ``feishu_api`` -- outbound calls (session webhook, group robot, tenant
  token cache, message reply);
* ``common`` -- body limits, JSON errors, metrics/dedupe/spawn glue; ``state`` -- per-app state;
* ``builders`` -- requests exactly as the platforms send them (tests, fakes, benchmark).
"""
