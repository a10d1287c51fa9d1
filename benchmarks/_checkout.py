"""Imported first by every benchmark script, for one side effect: where nograd is not
installed (a bare checkout, without ``pip install -e .``), the checkout's ``src/``
goes on ``sys.path``, so that the script's ``import nograd`` finds the code beside it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("nograd") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
