"""What cleaning-step configurations share: number and metric-name fields, and metric glob matching.

Steps select metrics with fnmatch-style globs (``temp_*``, ``sensor?.value``, ``[ab]_level``), matched
case-sensitively against the metric name. Matching is on the hot path, so a glob list is compiled once into
one regular expression and each metric name's result is cached (the cache is cleared when it reaches
``MAX_CACHED_NAMES`` names, so devices inventing names cannot grow it without bound).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import translate
from types import GenericAlias
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict

MAX_CACHED_NAMES = 4096
_GLOB_CHARS = frozenset("*?[")

#: A finite number in YAML (integers accepted; booleans, strings, ``.inf`` and ``.nan`` rejected).
Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]

#: One metric name or glob.
MetricName = Annotated[str, Field(min_length=1, max_length=256)]

#: A non-empty list of metric-name globs.
MetricGlobList = Annotated[list[MetricName], Field(min_length=1)]

_MISSING = object()


def is_glob(pattern: str) -> bool:
    """True when ``pattern`` contains a glob character (``*``, ``?`` or ``[``)."""
    return not _GLOB_CHARS.isdisjoint(pattern)


class StepModel(BaseModel):
    """The base of the pipeline's configuration models: unknown keys are refused.

    Where the pipeline runs compiled (``setup.py``), the models' methods are Cython functions, which pydantic
    would take for fields without an annotation: their type, ``type(is_glob)`` (a function of this module,
    compiled with it), is ignored.
    """

    model_config = ConfigDict(extra="forbid", ignored_types=(type(is_glob),))


def _compile(globs: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(translate(g) for g in globs))


class MetricGlobs:
    """Whether a metric name matches any of a list of globs; ``globs(name)`` is the test."""

    __slots__ = ("_all", "_cache", "_exact", "_regex")

    def __init__(self, patterns: Iterable[str]) -> None:
        patterns = list(patterns)
        self._all = "*" in patterns
        self._exact = frozenset(p for p in patterns if not is_glob(p))
        globs = [p for p in patterns if is_glob(p)]
        self._regex = _compile(globs) if globs else None
        self._cache: dict[str, bool] = {}

    def __call__(self, name: str) -> bool:
        if self._all:
            return True
        if self._regex is None:
            return name in self._exact
        hit = self._cache.get(name)
        if hit is None:
            hit = name in self._exact or self._regex.match(name) is not None
            if len(self._cache) >= MAX_CACHED_NAMES:
                self._cache.clear()
            self._cache[name] = hit
        return hit


class GlobMap:
    """Per-metric settings keyed by name or glob: an exact name wins, then the first matching glob.

    The settings are of any one type (``GlobMap[Setting]`` in annotations); compiled, a C class (no ``Generic``
    base), whose ``get`` the steps call for every value.
    """

    __slots__ = ("_cache", "_exact", "_globs")
    __class_getitem__ = classmethod(GenericAlias)

    def __init__(self, items: Iterable[tuple[str, Any]]) -> None:
        items = list(items)
        self._exact = {key: value for key, value in items if not is_glob(key)}
        self._globs = [(_compile([key]), value) for key, value in items if is_glob(key)]
        self._cache: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        """The setting for metric ``name``, or None when no key selects it."""
        hit = self._cache.get(name, _MISSING)
        if hit is _MISSING:
            hit = self._exact.get(name)
            if hit is None:
                for regex, value in self._globs:
                    if regex.match(name):
                        hit = value
                        break
            if len(self._cache) >= MAX_CACHED_NAMES:
                self._cache.clear()
            self._cache[name] = hit
        return hit
