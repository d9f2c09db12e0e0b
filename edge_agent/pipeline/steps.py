"""The cleaning steps a pipeline can list, as one ``type``-discriminated configuration union.

``CleaningStepConfig`` validates one entry of a pipeline's ``steps:``; ``build_step`` turns it into a
``Step``. The steps themselves live in modules named for what they do: ``cleaning.py`` (``range``,
``nulls``, ``rename``, ``drop``), ``units.py`` (``unit``), ``quality.py`` (``dedupe``, ``stuck``,
``rate_limit``) and ``outlier.py`` (``outlier``). ``docs/pipeline-cleaning.md`` describes every option.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from edge_agent.pipeline.base import Step
from edge_agent.pipeline.cleaning import DropConfig, NullsConfig, RangeConfig, RenameConfig
from edge_agent.pipeline.outlier import OutlierConfig
from edge_agent.pipeline.quality import DedupeConfig, RateLimitConfig, StuckConfig
from edge_agent.pipeline.units import UnitConfig

__all__ = [
    "CleaningStepConfig",
    "DedupeConfig",
    "DropConfig",
    "NullsConfig",
    "OutlierConfig",
    "RangeConfig",
    "RateLimitConfig",
    "RenameConfig",
    "StuckConfig",
    "UnitConfig",
    "build_step",
]

CleaningStepConfig = Annotated[
    RangeConfig
    | NullsConfig
    | DedupeConfig
    | OutlierConfig
    | StuckConfig
    | UnitConfig
    | RenameConfig
    | DropConfig
    | RateLimitConfig,
    Field(discriminator="type"),
]


def build_step(config: CleaningStepConfig) -> Step:
    """The runnable step for one validated step configuration."""
    return config.build()
