"""One strict JSON reader for every request body (chat API and IM callbacks).

``json.loads`` alone lets three kinds of poison through to the handlers: nesting deep enough to
raise ``RecursionError`` (an unauthenticated 500), lone UTF-16 surrogates (``"\\ud800"`` decodes to
a ``str`` that cannot be encoded to UTF-8 again, so it breaks hashing, headers, the DB driver and
the log writer later), and non-object documents. ``loads_object`` turns each into a
:class:`JsonBodyError` with a reason the caller maps to its own 400 answer.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32
"""No request of this service needs more; Feishu/DingTalk events are about 5 levels deep."""


class JsonBodyError(ValueError):
    """The body is not a JSON object this service accepts; ``str(exc)`` is safe to show."""


def _check_tree(root: object, max_depth: int) -> None:
    """Depth and valid Unicode of every key and string, without recursion."""
    stack: list[tuple[object, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode("utf-8")
                except UnicodeEncodeError:
                    raise JsonBodyError("text is not valid Unicode (lone surrogate)") from None
            continue
        if isinstance(node, dict):
            children: list[object] = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            children = list(node)
        else:
            continue
        if depth > max_depth:
            raise JsonBodyError(f"JSON is nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def loads(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> object:
    """Parse any JSON document under the rules above."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise JsonBodyError(f"JSON is nested deeper than {max_depth} levels") from None
    except UnicodeDecodeError:
        raise JsonBodyError("body is not valid UTF-8") from None
    except ValueError:
        raise JsonBodyError("body is not valid JSON") from None
    _check_tree(data, max_depth)
    return data


def loads_object(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Parse a JSON object under the rules above."""
    data = loads(raw, max_depth=max_depth)
    if not isinstance(data, dict):
        raise JsonBodyError("body must be a JSON object")
    return data
