"""The public API: every exported name resolves, and importing hyptest stays light."""

from __future__ import annotations

import subprocess
import sys

import hyptest


def test_every_export_resolves():
    for name in hyptest.__all__:
        assert getattr(hyptest, name) is not None, name


def test_import_does_not_load_heavy_libraries():
    code = "import sys, hyptest; print(sorted(m for m in ('torch', 'transformers', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
