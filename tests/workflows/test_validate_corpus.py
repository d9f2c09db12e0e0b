"""``fieldline workflow validate`` against a corpus of broken files, one per check.

Each case in ``broken/`` is a file ``NAME.yaml`` (or a directory ``NAME/`` for problems across files) with the
exact expected output beside it in ``NAME.expected``, as the command prints it when run inside ``broken/``.
A case whose expected lines are all warnings must exit 0, any other 1.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workflows.cli import app

BROKEN = Path(__file__).parent / "broken"
VALID = Path(__file__).parent / "valid"
CASES = sorted(p.stem for p in BROKEN.glob("*.expected"))
# One case per check the validate command promises (issue 3).
CHECKS = [
    "unknown_key",
    "unknown_action_key",
    "missing_start_state",
    "undefined_transition",
    "unreachable_state",
    "choice_without_default",
    "unknown_action_type",
    "bad_cron",
    "bad_duration",
    "expression_syntax",
    "unknown_name",
    "duplicate_ids",
    "invalid_yaml",
    "rules_bad_condition",
    "rules_invalid",
    "rules_duplicate_ids",
]


def case_path(name: str) -> str:
    return f"{name}.yaml" if (BROKEN / f"{name}.yaml").exists() else name


def expected(name: str) -> list[str]:
    return (BROKEN / f"{name}.expected").read_text(encoding="utf-8").splitlines()


def test_every_check_has_a_case() -> None:
    assert set(CHECKS) <= set(CASES)


@pytest.mark.parametrize("name", CASES)
def test_case(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    result = CliRunner().invoke(app, ["validate", case_path(name)])
    lines = expected(name)
    assert result.stdout.splitlines() == lines
    only_warnings = all(": warning: " in line for line in lines)
    assert result.exit_code == (0 if only_warnings else 1), result.stderr


def test_whole_corpus_in_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory is searched recursively; every problem of every file is printed, in file order."""
    monkeypatch.chdir(BROKEN)
    result = CliRunner().invoke(app, ["validate", "."])
    order = sorted(CASES, key=lambda name: Path(case_path(name)).parts)
    assert result.stdout.splitlines() == [line for name in order for line in expected(name)]
    assert result.exit_code == 1
    n_files = sum(1 for p in BROKEN.rglob("*") if p.suffix == ".yaml")
    assert result.stderr.startswith(f"checked {n_files} files")


def test_strict_fails_on_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BROKEN)
    result = CliRunner().invoke(app, ["validate", "--strict", "unreachable_state.yaml"])
    assert result.stdout.splitlines() == expected("unreachable_state")
    assert result.exit_code == 1


def test_duplicates_are_found_across_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same file named twice is checked once; the same id in two named files is a problem."""
    monkeypatch.chdir(BROKEN)
    once = CliRunner().invoke(app, ["validate", "duplicate_ids/first.yaml", "duplicate_ids/first.yaml"])
    assert once.exit_code == 0, once.stdout
    both = CliRunner().invoke(app, ["validate", "duplicate_ids/first.yaml", "duplicate_ids/second.yaml"])
    assert both.stdout.splitlines() == expected("duplicate_ids")


def test_valid_files_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(VALID)
    result = CliRunner().invoke(app, ["validate", "."])
    assert result.exit_code == 0, result.stdout
    assert result.stdout == ""
    assert result.stderr.strip() == "checked 3 files (2 workflows, 1 rules file): ok"


def test_missing_file_and_empty_directory(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(app, ["validate", str(missing), str(empty)])
    assert result.stdout.splitlines() == [
        f"{empty}: warning: no *.yaml or *.yml files in this directory",
        f"{missing}: cannot read: No such file or directory",
    ]
    assert result.exit_code == 1


def test_console_script() -> None:
    """The installed `fieldline` command, as a user or CI runs it."""
    script = Path(sys.executable).with_name("fieldline")
    result = subprocess.run(
        [str(script), "workflow", "validate", "bad_cron.yaml", "unreachable_state.yaml"],
        cwd=BROKEN,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.splitlines() == expected("bad_cron") + expected("unreachable_state")
    assert result.stderr.strip() == "checked 2 files (2 workflows, 0 rules files): 1 error, 1 warning"
    assert result.returncode == 1
