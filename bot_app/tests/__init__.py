"""clawbot-app test suite.

The repository's test doubles (the fake model provider, DingTalk and Feishu: one of each, shared
with the collection's tests) live in ``<repo>/tests/fakes``; they are imported as ``fakes``.
"""

import sys
from pathlib import Path

_REPO_TESTS = str(Path(__file__).resolve().parents[2] / "tests")
if _REPO_TESTS not in sys.path:
    sys.path.insert(0, _REPO_TESTS)
