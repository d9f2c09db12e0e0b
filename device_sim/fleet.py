"""The fleet file: which devices to simulate, what they measure, how they fail and what commands they obey.

``load_fleet`` reads a YAML fleet file into a ``Fleet`` and reports every problem at once as
``file:line:column: path: message`` (a ``fieldline.errors.ConfigError``). docs/simulator-fleets.md is the
reference of the format.

A fleet is a list of device templates; each template makes ``count`` devices whose ids come from its ``id``
pattern (``sensor-{n:04d}``, ``n`` counting from ``start``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from device_sim.actuators import Command
from device_sim.faults import Fault
from device_sim.generators import Composite, Metric, Scalar
from fieldline.durations import Duration
from fieldline.errors import ConfigError, ConfigIssue
from fieldline.payloads import NAME_PATTERN
from fieldline.wire import valid_id
from fieldline.yamlconf import PathKey, nearest_position, read_yaml, validate_data

MetricName = Annotated[str, Field(pattern=f"^{NAME_PATTERN.pattern}$")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ClockSkew(_Model):
    """A device clock that is ``offset`` seconds off (negative: behind) and runs ``drift_ppm`` fast."""

    offset: float = 0.0
    drift_ppm: float = Field(0.0, ge=-100_000, le=100_000)


class DeviceTemplate(_Model):
    """``count`` devices of one ``type`` that share metrics, faults and commands."""

    type: MetricName
    id: str = Field(min_length=1)
    start: int = Field(1, ge=0)
    count: int = Field(1, ge=1, le=1_000_000)
    transport: Literal["mqtt", "coap"] = "mqtt"
    codec: Literal["json", "cbor", "senml", "senml_cbor"] = "json"
    interval: Duration = Field(gt=0)
    jitter: Duration = 0.0
    clock_skew: ClockSkew = ClockSkew()
    qos: Literal[0, 1] = 1  # the simulator's MQTT client speaks QoS 0 and 1
    devices_per_connection: int = Field(1, ge=1, le=100_000)
    attributes: dict[str, Scalar] = {}
    metrics: dict[MetricName, Metric] = Field(min_length=1)
    faults: list[Fault] = []
    commands: dict[MetricName, Command] = {}

    @field_validator("id")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            sample = value.format(n=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"id pattern {value!r} must use only {{n}} (e.g. sensor-{{n:04d}}): {exc}"
            ) from None
        if not valid_id(sample):
            raise ValueError(f"id pattern {value!r} makes {sample!r}, not a valid device id")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DeviceTemplate:
        if self.jitter >= self.interval:
            raise ValueError("jitter must be shorter than interval")
        if self.count > 1 and self.id.format(n=self.start) == self.id.format(n=self.start + 1):
            raise ValueError(f"id pattern {self.id!r} gives every device the same id: use {{n}}")
        return self

    def device_ids(self) -> list[str]:
        return [self.id.format(n=n) for n in range(self.start, self.start + self.count)]

    def problems(self) -> list[tuple[PathKey, str]]:
        """References that do not resolve: correlated sources, metrics named by faults and command effects,
        correlated metrics that depend on each other in a cycle; as (path in the template, message)."""
        found: list[tuple[PathKey, str]] = []
        metrics = self.metrics
        for name, metric in metrics.items():
            if metric.spread and metric.kind() != "number":
                found.append(
                    (("metrics", name, "spread"), f"spread applies to numbers, {name} is {metric.kind()}")
                )
            parts = list(enumerate(metric.components)) if isinstance(metric, Composite) else [(None, metric)]
            for index, part in parts:
                where: PathKey = (
                    ("metrics", name) if index is None else ("metrics", name, "components", index)
                )
                for source in sorted(part.sources() - set(metrics)):
                    found.append(
                        ((*where, "source"), f"correlated source {source!r} is not a metric of this template")
                    )
        if not found:
            try:
                self.evaluation_order()
            except ValueError as exc:
                found.append((("metrics",), str(exc)))
        for index, fault in enumerate(self.faults):
            for metric_name in fault.metric_names():
                metric = metrics.get(metric_name)
                if metric is None:
                    found.append((("faults", index, "metrics"), f"unknown metric {metric_name!r}"))
                elif fault.type == "outlier" and metric.kind() != "number":
                    found.append(
                        (
                            ("faults", index, "metrics"),
                            f"an outlier needs a numeric metric, {metric_name} is {metric.kind()}",
                        )
                    )
        for name, command in self.commands.items():
            for case_index, effect_index, effect in command.effects():
                where = ("commands", name, "cases", case_index, "effects", effect_index, "metric")
                metric = metrics.get(effect.metric)
                if metric is None:
                    found.append((where, f"unknown metric {effect.metric!r}"))
                elif effect.type != "set" and metric.kind() != "number":
                    found.append(
                        (
                            where,
                            f"a {effect.type} effect needs a numeric metric, {effect.metric} is {metric.kind()}",
                        )
                    )
        return found

    def evaluation_order(self) -> list[str]:
        """Metric names with every correlated metric after its source; raises ValueError on a cycle."""
        order: list[str] = []
        state: dict[str, int] = {}  # 1 visiting, 2 done

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ValueError(f"correlated metrics form a cycle: {' -> '.join((*chain, name))}")
            state[name] = 1
            for source in sorted(self.metrics[name].sources()):
                if source in self.metrics:
                    visit(source, (*chain, name))
            state[name] = 2
            order.append(name)

        for name in self.metrics:
            visit(name, ())
        return order


class Fleet(_Model):
    """A fleet file: a ``seed`` for reproducible runs, default endpoints, and device templates."""

    seed: int = 0
    broker: str | None = None
    coap: str | None = None
    devices: list[DeviceTemplate] = Field(min_length=1)

    @field_validator("broker")
    @classmethod
    def _broker(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                raise ValueError("expected mqtt://host:port or mqtts://host:port")
        return value

    @field_validator("coap")
    @classmethod
    def _coap(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("coap", "coaps") or not parts.hostname:
                raise ValueError("expected coap://host:port")
        return value

    def device_count(self) -> int:
        return sum(template.count for template in self.devices)

    def problems(self) -> list[tuple[PathKey, str]]:
        """What the models cannot check field by field: references inside templates, and device ids (each
        valid, none used twice); as (path in the file, message)."""
        found: list[tuple[PathKey, str]] = []
        seen: set[str] = set()
        for index, template in enumerate(self.devices):
            found.extend((("devices", index, *path), message) for path, message in template.problems())
            bad = next((i for i in template.device_ids() if not valid_id(i)), None)
            if bad is not None:
                found.append((("devices", index, "id"), f"makes {bad!r}, not a valid device id"))
            ids = template.device_ids()
            taken = next((i for i in ids if i in seen), None)
            if taken is not None:
                found.append(
                    (("devices", index, "id"), f"device id {taken!r} is already used by another device")
                )
            seen.update(ids)
        return found

    def check(
        self, filename: str = "<fleet>", positions: dict[PathKey, tuple[int, int]] | None = None
    ) -> None:
        """Raise ``ConfigError`` listing every one of ``problems()``, positioned when ``positions`` are known."""
        issues = []
        for path, message in self.problems():
            line, column = nearest_position(positions or {}, path) or (None, None)
            issues.append(ConfigIssue(filename, line, column, ".".join(str(p) for p in path), message))
        if issues:
            raise ConfigError(issues)


def _untagged(path: str, data: Any) -> str:
    """``path`` without the ``type:`` tags pydantic puts in the locations of tagged unions
    (``devices.0.metrics.x.sine.period`` is ``devices.0.metrics.x.period`` in the file)."""
    kept: list[str] = []
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        kept.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            node = None
    return ".".join(kept)


def load_fleet(path: str | Path, *, text: str | None = None) -> Fleet:
    """Read and validate a fleet file (or ``text`` named as ``path``); raises ``ConfigError`` with every issue."""
    data, positions = read_yaml(path, text=text)
    try:
        fleet = validate_data(Fleet, data, str(path), positions)
    except ConfigError as exc:
        raise ConfigError([replace(issue, path=_untagged(issue.path, data)) for issue in exc.issues]) from exc
    fleet.check(str(path), positions)
    return fleet
