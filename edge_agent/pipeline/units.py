"""The ``unit`` step: convert metric values with a linear ``value * scale + offset`` or a named conversion."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge_agent.pipeline.base import StepContext
from edge_agent.pipeline.step_config import GlobMap, MetricName, Number, StepModel
from fieldline.wire import Point

ConversionName = Literal[
    "f_to_c", "c_to_f", "k_to_c", "c_to_k", "f_to_k", "k_to_f",
    "psi_to_kpa", "kpa_to_psi", "bar_to_kpa", "kpa_to_bar", "inhg_to_hpa", "hpa_to_inhg",
    "mph_to_ms", "ms_to_mph", "kmh_to_ms", "ms_to_kmh", "knots_to_ms",
    "percent_to_ratio", "ratio_to_percent",
    "wh_to_kwh", "kwh_to_wh", "in_to_mm", "mm_to_in", "ft_to_m", "m_to_ft", "gal_to_l", "l_to_gal",
]  # fmt: skip

_PSI_KPA = 6.894757293168361  # 1 psi in kPa
_INHG_HPA = 33.8638866667  # 1 inHg (0 degC) in hPa
_MPH_MS = 0.44704
_GAL_L = 3.785411784  # US gallon

#: Named conversions as ``(scale, offset)``: ``converted = value * scale + offset``.
CONVERSIONS: dict[str, tuple[float, float]] = {
    "f_to_c": (5 / 9, -32 * 5 / 9),
    "c_to_f": (9 / 5, 32.0),
    "k_to_c": (1.0, -273.15),
    "c_to_k": (1.0, 273.15),
    "f_to_k": (5 / 9, 273.15 - 32 * 5 / 9),
    "k_to_f": (9 / 5, 32.0 - 273.15 * 9 / 5),
    "psi_to_kpa": (_PSI_KPA, 0.0),
    "kpa_to_psi": (1 / _PSI_KPA, 0.0),
    "bar_to_kpa": (100.0, 0.0),
    "kpa_to_bar": (0.01, 0.0),
    "inhg_to_hpa": (_INHG_HPA, 0.0),
    "hpa_to_inhg": (1 / _INHG_HPA, 0.0),
    "mph_to_ms": (_MPH_MS, 0.0),
    "ms_to_mph": (1 / _MPH_MS, 0.0),
    "kmh_to_ms": (1 / 3.6, 0.0),
    "ms_to_kmh": (3.6, 0.0),
    "knots_to_ms": (1852 / 3600, 0.0),
    "percent_to_ratio": (0.01, 0.0),
    "ratio_to_percent": (100.0, 0.0),
    "wh_to_kwh": (0.001, 0.0),
    "kwh_to_wh": (1000.0, 0.0),
    "in_to_mm": (25.4, 0.0),
    "mm_to_in": (1 / 25.4, 0.0),
    "ft_to_m": (0.3048, 0.0),
    "m_to_ft": (1 / 0.3048, 0.0),
    "gal_to_l": (_GAL_L, 0.0),
    "l_to_gal": (1 / _GAL_L, 0.0),
}


class Conversion(StepModel):
    """One metric's conversion: ``convert`` (a name) or ``scale``/``offset``; ``digits`` rounds the result."""

    convert: ConversionName | None = None
    scale: Number | None = None
    offset: Number | None = None
    digits: int | None = Field(None, ge=0, le=12)

    @model_validator(mode="after")
    def _one_form(self) -> Conversion:
        linear = self.scale is not None or self.offset is not None
        if self.convert is not None and linear:
            raise ValueError("give either convert or scale/offset, not both")
        if self.convert is None and not linear:
            raise ValueError("give convert (a named conversion) or scale and/or offset")
        if self.scale == 0:
            raise ValueError("scale 0 would turn every value into the offset")
        return self

    def linear(self) -> tuple[float, float]:
        """``(scale, offset)`` of this conversion."""
        if self.convert is not None:
            return CONVERSIONS[self.convert]
        return (1.0 if self.scale is None else self.scale, 0.0 if self.offset is None else self.offset)


class UnitConfig(StepModel):
    """Convert units per metric (keys: names or globs; an exact name wins, then the first glob in order)."""

    type: Literal["unit"]
    conversions: dict[MetricName, Conversion] = Field(min_length=1)

    def build(self) -> UnitStep:
        return UnitStep(self)


class _Linear:
    __slots__ = ("digits", "offset", "scale")

    def __init__(self, conversion: Conversion) -> None:
        self.scale, self.offset = conversion.linear()
        self.digits = conversion.digits


class UnitStep:
    """Drop reason: ``not_numeric`` (a converted metric holding a string, a boolean or an int too large for a
    float). Nulls pass untouched; NaN stays NaN."""

    __slots__ = ("_conversions", "name")

    def __init__(self, config: UnitConfig) -> None:
        self.name = "unit"
        self._conversions = GlobMap((metric, _Linear(c)) for metric, c in config.conversions.items())

    def apply(self, point: Point, ctx: StepContext) -> Point | None:
        metrics = point.metrics
        conversion_of = self._conversions.get
        removed: list[str] | None = None
        for metric, value in metrics.items():
            conv = conversion_of(metric)
            if conv is None or value is None:
                continue
            kind = type(value)
            if kind is float or kind is int:
                try:
                    converted = value * conv.scale + conv.offset  # type: ignore[operator]
                except OverflowError:
                    pass
                else:
                    metrics[metric] = converted if conv.digits is None else round(converted, conv.digits)
                    continue
            if removed is None:
                removed = [metric]
            else:
                removed.append(metric)
        if removed is not None:
            for metric in removed:
                del metrics[metric]
            ctx.drop(self.name, "not_numeric", len(removed))
        return point
