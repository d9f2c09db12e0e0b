"""The per-message modules run compiled where the install built them, and as plain Python with
``FIELDLINE_PURE_PYTHON=1`` (``tests/conftest.py``); ``make test`` runs their tests both ways."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import edge_agent.pipeline.outlier
from edge_agent.compiled import compiled_modules
from edge_agent.pipeline.cleaning import RangeConfig
from edge_agent.pipeline.window import WindowConfig
from tests.servicekit import REQUIRE_SERVICES

ROOT = Path(__file__).resolve().parents[2]
PURE = os.environ.get("FIELDLINE_PURE_PYTHON") == "1"
BUILT = any(Path(edge_agent.pipeline.outlier.__file__).parent.glob("outlier.*.so"))


def test_compiled_modules_are_the_ones_loaded_from_extensions() -> None:
    loaded = compiled_modules()
    if PURE:
        assert loaded == []
        assert edge_agent.pipeline.outlier.__file__.endswith(".py")
    elif BUILT or REQUIRE_SERVICES:  # CI builds them: a silent fallback to plain Python would fail here
        assert "edge_agent.pipeline.outlier" in loaded
        assert "fieldline.payloads" in loaded
        assert not edge_agent.pipeline.outlier.__file__.endswith(".py")
    else:
        pytest.skip("the install built no extensions (no Cython or no C compiler)")


def test_configuration_models_with_methods_validate_either_way() -> None:
    """pydantic must not take the compiled models' methods for fields (``StepModel``)."""
    window = WindowConfig.model_validate({"type": "window", "width": "60s", "aggregates": ["mean", "p95"]})
    assert window.percentiles() == [("p95", 0.95)]
    with pytest.raises(ValueError, match="action replace needs a value"):
        RangeConfig.model_validate({"type": "range", "limits": {"t": {"min": 0, "action": "replace"}}})


def test_check_command_says_how_the_agent_runs() -> None:
    fieldline = Path(sys.executable).with_name("fieldline")
    out = subprocess.run(
        [str(fieldline), "edge", "check", "--config", str(ROOT / "examples/agent.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout
    if BUILT:
        assert "compiled modules" in out
        assert "plain Python" not in out
    else:
        assert "plain Python (no compiled modules)" in out
