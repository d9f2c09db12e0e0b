"""Mermaid state diagrams of workflows (``fieldline workflow graph``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from workflows.cli import app
from workflows.graph import mermaid
from workflows.loader import load_workflow

VALID = Path(__file__).parent / "valid"
BROKEN = Path(__file__).parent / "broken"


def draw(text: str) -> str:
    return mermaid(load_workflow("w.yaml", text=text).workflow)


def test_boiler_workflow() -> None:
    assert mermaid(load_workflow(VALID / "boiler-overheat.yaml").workflow) == (
        "---\n"
        "title: boiler-overheat 1.2.0\n"
        "---\n"
        "stateDiagram-v2\n"
        "    state check <<choice>>\n"
        "    [*] --> check\n"
        "    check --> cut_burner : vars.limit < 100\n"
        "    check --> page_operator : default\n"
        "    cut_burner --> cut_burner : retry Command.Timeout (up to 3 attempts)\n"
        "    cut_burner --> wait_cool\n"
        "    cut_burner --> page_operator : catch: Command.Nack\n"
        "    wait_cool --> page_operator : timeout after 15m\n"
        "    wait_cool --> cooled : on telemetry\n"
        "    page_operator --> failed\n"
        "    cooled --> [*]\n"
        "    failed --> [*] : Boiler.Overheat\n"
    )


def test_parallel_branches_and_map_iterators_are_composite_states() -> None:
    text = mermaid(load_workflow(VALID / "fanout.yaml").workflow)
    body = text.split("stateDiagram-v2\n", 1)[1]
    assert body == (
        "    state fan {\n"
        '        state "ping" as fan_0_ping\n'
        "        [*] --> fan_0_ping\n"
        "        fan_0_ping --> [*]\n"
        "        --\n"
        '        state "wait" as fan_1_wait\n'
        '        state "done" as fan_1_done\n'
        "        [*] --> fan_1_wait\n"
        "        fan_1_wait --> fan_1_done : after 30s\n"
        "        fan_1_done --> [*]\n"
        "    }\n"
        '    state "each (for each item in [1, 2, 3])" as each {\n'
        '        state "end" as each_end\n'
        "        [*] --> each_end\n"
        "        each_end --> [*]\n"
        "    }\n"
        '    state "state" as state_\n'  # `state` is a Mermaid keyword
        "    [*] --> fan\n"
        "    fan --> each\n"
        "    each --> state_\n"
        "    state_ --> [*] : after 5m\n"
    )


def test_names_mermaid_cannot_take_are_renamed_and_labelled() -> None:
    text = draw(
        """
id: names
start_at: cool-down
states:
  cool-down: {type: wait, seconds: 90, next: note}
  note: {type: wait, until: "{{ now + 60 }}", next: cool_down}
  cool_down: {type: succeed}
"""
    )
    assert 'state "cool-down" as cool_down\n' in text
    assert 'state "note" as note_\n' in text
    assert 'state "cool_down" as cool_down_2\n' in text  # the sanitised name was taken
    assert "cool_down --> note_ : after 90s\n" in text
    assert "note_ --> cool_down_2 : until {{ now + 60 }}\n" in text


def test_on_error_target_and_multiline_conditions() -> None:
    text = draw(
        """
id: errors
variables: {level: {type: number, default: 1}}
start_at: check
states:
  check:
    type: choice
    choices:
      - when: >-
          level > 3
          and level < 10
        next: recover
    default: recover
  recover:
    type: task
    actions: [{type: log, message: recovering}]
    end: true
on_error:
  next: recover
"""
    )
    assert "check --> recover : level > 3 and level < 10\n" in text
    assert "note right of recover : on_error continues here\n" in text


def test_graph_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(VALID)
    result = CliRunner().invoke(app, ["graph", "boiler-overheat.yaml"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == mermaid(load_workflow(VALID / "boiler-overheat.yaml").workflow)


def test_graph_refuses_an_invalid_workflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    result = CliRunner().invoke(app, ["graph", "undefined_transition.yaml"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == (BROKEN / "undefined_transition.expected").read_text().splitlines()
