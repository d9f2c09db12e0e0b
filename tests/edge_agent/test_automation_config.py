"""The ``automation:`` section: files found and loaded, bad files disabled (or refused with ``strict``), deploys
across restarts, and ``fieldline edge check``. No broker is needed: these agents run without southbound or
uplink."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.agent import Agent
from edge_agent.automation_files import load_automation
from edge_agent.config import AgentConfig, AutomationConfig, load_config
from fieldline.errors import ConfigError
from tests.factories import agent_config
from workflows import DefinitionError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

WORKFLOW = """\
id: greeter
version: 1.0.0
start_at: hello
states:
  hello:
    type: task
    actions: [{type: log, message: "{{ greeting }}"}]
    end: true
variables:
  greeting: {type: string, default: hello}
"""

BROKEN = "id: broken\nversion: 1.0.0\nstart_at: nowhere\nstates:\n  done: {type: succeed}\n"
"""A workflow whose start state does not exist (line 3, column 11)."""

RULES = """\
rules:
  - id: hot
    when: {telemetry: temperature, condition: "value > 80"}
    actions: [{type: log, message: hot}]
"""


def offline_config(tmp_path: Path, **automation: object) -> AgentConfig:
    """An agent with neither local broker nor uplink: enough to load, deploy and report."""
    return agent_config(
        tmp_path, "mqtt://127.0.0.1:1", None, southbound={"mqtt": {"enabled": False}}, automation=automation
    )


def test_the_example_points_at_the_example_workflows() -> None:
    config = load_config(EXAMPLES / "agent.yaml")
    assert config.automation.configured
    assert not config.automation.strict
    assert config.automation.command_ack_timeout == 30.0


def test_directories_give_their_workflows_and_their_rules_files() -> None:
    files = load_automation(
        AutomationConfig(workflows=[EXAMPLES / "workflows"], rules=[EXAMPLES / "workflows"])
    )
    assert sorted(Path(f).name for f, _ in files.workflows) == [
        "equipment-maintenance.yaml",
        "temperature-monitor.yaml",
    ]
    assert sorted(Path(r.file).name for r in files.rules) == [
        "heartbeat-loss.rules.yaml",
        "overheat.rules.yaml",
    ]
    assert files.disabled == []


def test_automation_errors_are_positioned(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "gateway: {id: gw-1}\n"
        "automation:\n"
        "  rules: [a.rules.yaml]\n"
        "  command_ack_timeout: 0s\n"
        "  notifiers:\n"
        "    webhook: {url: 'ftp://x'}\n"
        "  strictly: true\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert lines[0].startswith(f"{path}:4:24: automation.command_ack_timeout: command_ack_timeout must be")
    assert lines[1].startswith(f"{path}:6:20: automation.notifiers.webhook.url: expected http")
    assert lines[2].startswith(f"{path}:7:13: automation.strictly: Extra inputs are not permitted")


def test_bad_files_are_disabled_with_every_problem_and_the_rest_loads(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(WORKFLOW)
    (tmp_path / "same-version-other-text.yaml").write_text(WORKFLOW.replace("hello", "hi"))
    (tmp_path / "broken.yaml").write_text(BROKEN)
    (tmp_path / "a.rules.yaml").write_text(RULES)
    (tmp_path / "b.rules.yaml").write_text(RULES.replace("value > 80", "value > 90"))
    (tmp_path / "bad.rules.yaml").write_text(
        "rules:\n  - id: x\n    when: {telemetry: t, condition: 'vlue > 1'}\n"
    )
    files = load_automation(
        AutomationConfig(workflows=[tmp_path, tmp_path / "missing.yaml"], rules=[tmp_path])
    )
    assert [Path(f).name for f, _ in files.workflows] == ["good.yaml"]
    assert [Path(r.file).name for r in files.rules] == ["a.rules.yaml"]
    disabled = {Path(d.file).name: d for d in files.disabled}
    assert set(disabled) == {
        "broken.yaml",
        "same-version-other-text.yaml",
        "missing.yaml",
        "b.rules.yaml",
        "bad.rules.yaml",
    }
    assert str(disabled["same-version-other-text.yaml"].issues[0]).startswith(
        f"{tmp_path / 'same-version-other-text.yaml'}:2:10: version: workflow 'greeter' version 1.0.0 is also "
        f"defined, differently, in {tmp_path / 'good.yaml'}"
    )
    assert str(disabled["b.rules.yaml"].issues[0]).startswith(
        f"{tmp_path / 'b.rules.yaml'}:2:9: rules.0.id: rule id 'hot' is also defined in"
    )
    assert "unknown name vlue" in disabled["bad.rules.yaml"].reason
    assert "cannot read" in disabled["missing.yaml"].reason
    assert disabled["broken.yaml"].kind == "workflow"
    assert str(disabled["broken.yaml"].issues[0]).startswith(f"{tmp_path / 'broken.yaml'}:3:11: start_at:")


async def test_strict_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text(BROKEN)
    config = offline_config(tmp_path, workflows=[str(tmp_path / "broken.yaml")], strict=True)
    with pytest.raises(DefinitionError, match=r"broken\.yaml:3:11: start_at"):
        async with Agent(config):
            pass
    assert not config.database_path().exists()  # refused before anything was opened


async def test_redeploys_are_no_ops_changed_text_needs_a_new_version(tmp_path: Path) -> None:
    workflow = tmp_path / "greeter.yaml"
    workflow.write_text(WORKFLOW)
    config = offline_config(tmp_path, workflows=[str(workflow)])
    async with Agent(config) as agent:
        engine = agent.automation.engine
        assert engine.latest == {"greeter": "1.0.0"}
        [first] = await engine.store.definitions()
    async with Agent(config) as agent:
        engine = agent.automation.engine
        [again] = await engine.store.definitions()
        assert again == first  # the same text was not written again
        assert agent.health()[1]["automation"]["disabled"] == []
    workflow.write_text(WORKFLOW.replace("hello", "bonjour"))
    async with Agent(config) as agent:
        health = agent.health()[1]["automation"]
        [disabled] = health["disabled"]
        assert disabled["reason"].startswith(f"{workflow}:2:10: version: workflow 'greeter' version 1.0.0")
        assert "give the change a new version" in disabled["reason"]
        assert health["workflows"] == {}  # the stored version no longer starts instances either
    strict = offline_config(tmp_path, workflows=[str(workflow)], strict=True)
    with pytest.raises(DefinitionError, match="already deployed with different content"):
        async with Agent(strict):
            pass
    workflow.write_text(WORKFLOW.replace("hello", "bonjour").replace("1.0.0", "1.1.0"))
    async with Agent(config) as agent:
        assert agent.automation.engine.latest == {"greeter": "1.1.0"}
        assert agent.health()[1]["automation"]["disabled"] == []


async def test_workflows_removed_from_the_configuration_start_nothing(tmp_path: Path) -> None:
    (tmp_path / "greeter.yaml").write_text(WORKFLOW)
    (tmp_path / "hot.rules.yaml").write_text(RULES)
    async with Agent(offline_config(tmp_path, workflows=[str(tmp_path)], rules=[str(tmp_path)])) as agent:
        assert agent.automation.engine.latest == {"greeter": "1.0.0"}
    async with Agent(offline_config(tmp_path, rules=[str(tmp_path)])) as agent:
        assert agent.automation.engine.latest == {}
        assert agent.health()[1]["automation"]["rules_loaded"] == 1


def edge(command: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldline", "edge", command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("strict", [False, True])
def test_edge_check_validates_the_automation_files(tmp_path: Path, strict: bool) -> None:
    files = tmp_path / "automation"
    files.mkdir()
    (files / "broken.yaml").write_text(BROKEN)
    (files / "hot.rules.yaml").write_text(RULES)
    config = tmp_path / "agent.yaml"
    config.write_text(
        "gateway: {id: gw-1}\n"
        f"automation: {{workflows: ['{files}'], rules: ['{files}'], strict: {str(strict).lower()}}}\n"
    )
    result = edge("check", config)
    problem = f"{files / 'broken.yaml'}:3:11: start_at: start state 'nowhere' is not defined"
    assert problem in result.stderr
    if strict:
        assert result.returncode == 2
        assert f"error {problem}" in result.stderr
        refused = edge("run", config)  # refuses before it opens anything: no broker needed
        assert refused.returncode == 2
        assert f"error {problem}" in refused.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "0 workflow(s), 1 rule(s), 1 automation file(s) disabled" in result.stdout
