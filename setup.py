"""Compiles the edge agent's per-message path with Cython, from the same ``.py`` files; everything else is in
``pyproject.toml``.

The modules in ``COMPILED`` run for every message a gateway receives (framing, decoding, the cleaning steps,
windows, the group commit). Cython compiles them unchanged into extension modules that Python imports instead
of the sources: the same code, with C types only where a ``.pxd`` beside a module gives them (the Hampel window's
buffers, the aggregation windows, the range step, the glob tables, the received PUBLISH, the payload caches).
Per message that is 12.1 -> 5.7-6.2 µs of CPU (``bench/edge_pipeline_cpu.py``, docs/performance.md). The
extensions are optional: without Cython or a C compiler (``FIELDLINE_PURE_PYTHON=1`` forces this), the install goes on and the
agent runs the same modules as Python. ``fieldline edge check`` and the agent's
``fieldline_edge_compiled_modules`` gauge say which one runs.

An editable install (``pip install -e .``, what ``make`` does) builds the extensions next to the sources;
``make build`` rebuilds those whose source changed, and ``make test`` does it first, so the tests never run a
stale extension.
"""

from __future__ import annotations

import os

from setuptools import Extension, setup

COMPILED = [
    "fieldline/payloads.py",
    "edge_agent/mqtt_subscriber.py",
    "edge_agent/ingest.py",
    "edge_agent/committer.py",
    "edge_agent/pipeline/base.py",
    "edge_agent/pipeline/step_config.py",
    "edge_agent/pipeline/series_state.py",
    "edge_agent/pipeline/cleaning.py",
    "edge_agent/pipeline/outlier.py",
    "edge_agent/pipeline/window.py",
    "edge_agent/pipeline/downsample.py",
    "edge_agent/pipeline/pipeline.py",
]


def extensions() -> list[Extension]:
    if os.environ.get("FIELDLINE_PURE_PYTHON") == "1":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    modules = [Extension(path[:-3].replace("/", "."), [path], optional=True) for path in COMPILED]
    return cythonize(
        modules,
        build_dir="build/cython",
        compiler_directives={
            "language_level": "3",
            "annotation_typing": False,
            "infer_types": False,
        },
        quiet=True,
    )


setup(ext_modules=extensions())
