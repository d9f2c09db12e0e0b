"""The public surface of each package changes only on purpose: update these lists together with the docs."""

from __future__ import annotations

import subprocess
import sys

import device_sim
import edge_agent
import fieldline
import workflows


def test_fieldline_exports() -> None:
    assert sorted(fieldline.__all__) == [
        "AggregateRecord", "Batch", "BatchDecodeError", "ConfigError", "ConfigIssue", "EventRecord", "FieldlineError",
        "FlagRecord", "PROTOCOL_VERSION", "PayloadError", "Point", "RawRecord", "RecordKind", "StateRecord",
        "Topics", "WireError", "decode_batch", "decode_telemetry", "encode_batch", "load_model",
    ]  # fmt: skip
    for name in fieldline.__all__:
        assert hasattr(fieldline, name), name


def test_edge_agent_exports() -> None:
    assert sorted(edge_agent.__all__) == [
        "Agent", "AgentConfig", "AgentError", "CoapBindError", "LinkError", "LinkRefused", "StoreError",
        "load_config",
    ]  # fmt: skip
    for name in edge_agent.__all__:
        assert hasattr(edge_agent, name), name


def test_workflows_exports() -> None:
    assert sorted(workflows.__all__) == [
        "ALERT", "ALERT_CLEARED", "ActionContext", "ActionError", "ActionRegistry", "Clock", "Condition",
        "DefinitionError", "Engine", "EngineNotRunning", "EvaluationError", "Event", "ExpressionError",
        "FakeClock", "HistoryEntry", "Host", "Instance", "InstanceNotFound", "InstanceStateError",
        "InstanceStore", "InstanceView", "LoadedRules", "LoadedWorkflow", "LogNotifier", "MemoryStore",
        "Notifier", "RuleEngine", "SQLiteStore", "Status", "StoreError", "SystemClock", "Template",
        "VariableError", "VersionConflict", "WebhookNotifier", "WorkflowError", "WorkflowNotFound",
        "load_rules", "load_workflow",
    ]  # fmt: skip
    for name in workflows.__all__:
        assert hasattr(workflows, name), name


def test_device_sim_exports() -> None:
    assert sorted(device_sim.__all__) == [
        "Broker", "CoapSender", "CommandRejected", "ConnectRefused", "Connection", "DeviceLinks", "DeviceModel",
        "DeviceTemplate", "Fleet", "LiveRun", "LoadOptions", "LoadReport", "LoadRun", "Message", "MqttClient",
        "ReplayError", "RunOptions", "SimError", "Tick", "TransportError", "Will", "build_devices", "load_fleet",
        "replay",
    ]  # fmt: skip
    for name in device_sim.__all__:
        assert hasattr(device_sim, name), name


def test_edge_agent_imports_nothing_from_the_cloud() -> None:
    """The agent installs on a Pi without the cloud's dependencies (fastapi, uvicorn, aiomqtt, sqlalchemy)."""
    code = (
        "import sys, edge_agent, edge_agent.cli, edge_agent.agent;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('cloud_core', 'fastapi', 'uvicorn', 'aiomqtt', 'sqlalchemy', 'starlette')];"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
