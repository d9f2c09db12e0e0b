"""MQTT topic filters for ``message`` triggers and rules: ``+`` matches one level, ``#`` the rest."""

from __future__ import annotations


def validate_filter(topic_filter: str) -> None:
    """Raise ValueError unless ``topic_filter`` is a valid MQTT filter."""
    if not topic_filter:
        raise ValueError("a topic filter cannot be empty")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise ValueError(f"`#` must be a whole last level in {topic_filter!r}")
        if "+" in level and level != "+":
            raise ValueError(f"`+` must be a whole level in {topic_filter!r}")


def matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (``$``-topics only match filters that start with ``$``)."""
    if topic.startswith("$") and not topic_filter.startswith("$"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)
