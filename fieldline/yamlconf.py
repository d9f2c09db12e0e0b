"""Load YAML into pydantic models with errors that name file, line, column and field.

Every YAML file Fieldline reads (agent configuration, pipelines, workflows, rules, fleets) goes through
``load_model``: the document is parsed with the safe loader (the C one when present), node positions are kept
per path, and each pydantic error is reported as ``file:line:column: path.to.field: message``. All errors are
collected, not only the first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from fieldline.errors import ConfigError, ConfigIssue

try:
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # PyYAML built without libyaml
    _Loader = yaml.SafeLoader

M = TypeVar("M", bound=BaseModel)
PathKey = tuple[str | int, ...]


def _positions(node: yaml.Node, path: PathKey, out: dict[PathKey, tuple[int, int]]) -> None:
    out[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            _positions(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _positions(item, (*path, index), out)


def parse_yaml(text: str, filename: str) -> tuple[Any, dict[PathKey, tuple[int, int]]]:
    """Parse one YAML document; returns the data and a map from path to (line, column)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        positions: dict[PathKey, tuple[int, int]] = {}
        _positions(node, (), positions)
        return loader.construct_document(node), positions
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        column = mark.column + 1 if mark else None
        raise ConfigError([ConfigIssue(filename, line, column, "", f"invalid YAML: {exc.problem}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(filename, None, None, "", f"invalid YAML: {exc}")]) from exc
    finally:
        loader.dispose()


def nearest_position(positions: dict[PathKey, tuple[int, int]], loc: PathKey) -> tuple[int, int] | None:
    """Position of ``loc`` or of its closest ancestor that exists in the file (a missing field has none)."""
    for end in range(len(loc), -1, -1):
        pos = positions.get(tuple(loc[:end]))
        if pos is not None:
            return pos
    return None


def issues_from_validation(
    exc: ValidationError, filename: str, positions: dict[PathKey, tuple[int, int]], prefix: PathKey = ()
) -> list[ConfigIssue]:
    """Map pydantic's error locations onto YAML positions."""
    issues = []
    for err in exc.errors(include_url=False):
        # Discriminated unions add the tag as a location element; drop elements that are not in the file.
        loc: PathKey = (*prefix, *err["loc"])
        clean: list[str | int] = []
        for i, part in enumerate(loc):
            candidate = (*clean, part)
            following = (*clean, loc[i + 1]) if i + 1 < len(loc) else None
            if candidate not in positions and not isinstance(part, int) and following in positions:
                continue  # a discriminated union's tag (``range``) or validator name: not a key in the file
            clean.append(part)
        pos = nearest_position(positions, tuple(clean))
        dotted = ".".join(str(p) for p in clean if p not in ("function-after", "function-before"))
        issues.append(
            ConfigIssue(
                filename,
                pos[0] if pos else None,
                pos[1] if pos else None,
                dotted,
                err["msg"].removeprefix("Value error, "),
            )
        )
    return issues


def read_yaml(path: str | Path, *, text: str | None = None) -> tuple[Any, dict[PathKey, tuple[int, int]]]:
    """Read and parse ``path`` (or ``text`` named as ``path``); raises ``ConfigError``."""
    filename = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                [ConfigIssue(filename, None, None, "", f"cannot read: {exc.strerror}")]
            ) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError([ConfigIssue(filename, None, None, "", f"not UTF-8 text: {exc}")]) from exc
    return parse_yaml(text, filename)


def validate_data(model: type[M], data: Any, filename: str, positions: dict[PathKey, tuple[int, int]]) -> M:
    """Validate parsed YAML as ``model``; raises ``ConfigError`` with every issue, in file order."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as exc:
        issues = issues_from_validation(exc, filename, positions)
        issues.sort(key=lambda i: (i.line is None, i.line or 0, i.column or 0))  # in file order
        raise ConfigError(issues) from exc


def load_model(model: type[M], path: str | Path, *, text: str | None = None) -> M:
    """Read ``path`` (or ``text`` named as ``path``) and validate it as ``model``; raises ``ConfigError``."""
    data, positions = read_yaml(path, text=text)
    return validate_data(model, data, str(path), positions)
