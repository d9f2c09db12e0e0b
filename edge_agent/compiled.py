"""Which of the agent's modules run compiled: the per-message path is built with Cython where the install could
(``setup.py``), and runs as plain Python, slower, where it could not (no C compiler on the gateway)."""

from __future__ import annotations

import sys
from importlib.machinery import EXTENSION_SUFFIXES

PACKAGES = ("fieldline", "edge_agent")


def compiled_modules() -> list[str]:
    """The names of the modules of ``PACKAGES`` loaded so far from extension modules rather than sources."""
    suffixes = tuple(EXTENSION_SUFFIXES)
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if name.partition(".")[0] in PACKAGES and (getattr(module, "__file__", None) or "").endswith(suffixes)
    )
