"""The ``hyperdht`` command's ``--ephemeral auto|true|false`` and its
reachability line (the node itself: tests/test_reachability.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hyperdht.cli.errors import UsageError
from hyperdht.cli.node import parse_settings
from hyperdht.cli.output import reachability_json, reachability_text


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "auto"),
        (["--ephemeral"], True),
        (["--ephemeral", "true"], True),
        (["--ephemeral", "false"], False),
        (["--ephemeral", "auto"], "auto"),
        (["--ephemeral", "AUTO"], "auto"),
    ],
)
def test_ephemeral_option(argv: list[str], expected: object) -> None:
    assert parse_settings(argv).ephemeral == expected


def test_bad_ephemeral_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises((UsageError, SystemExit)):
        parse_settings(["--ephemeral", "maybe"])


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), ("auto", "auto")])
def test_ephemeral_in_a_config_file(tmp_path: Path, value: object, expected: object) -> None:
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"ephemeral": value}))
    assert parse_settings(["-c", str(config)]).ephemeral == expected


def test_bad_ephemeral_in_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "node.json"
    config.write_text(json.dumps({"ephemeral": "sometimes"}))
    with pytest.raises(UsageError, match="true, false or auto"):
        parse_settings(["-c", str(config)])


def test_reachability_lines() -> None:
    assert reachability_text("reachable", False) == "reachability: reachable (full node)"
    assert reachability_text("unknown", True) == "reachability: unknown (ephemeral)"
    assert json.loads(reachability_json("unreachable", True)) == {
        "reachability": "unreachable",
        "ephemeral": True,
    }
