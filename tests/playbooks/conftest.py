"""The IM fakes and test PKI (tests/fakes/) are imported through the collection path."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / ".collections"))
