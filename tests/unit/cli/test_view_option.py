"""``--view`` on every CLI command (cli.main), and what a views file of several views
requires of it: checked before any connection is opened."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from searchsync.cli import main as cli_main

VIEWS = """
[[views]]
name = "orders_mv"
key_column = "order_id"
index_alias = "orders"

[[views]]
name = "stores_mv"
key_column = "store_id"
index_alias = "stores"
mapping = { store_id = { type = "keyword" } }
"""


def leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [leaf for child in action.choices.values() for leaf in leaves(child)]
    return [parser]


def test_every_command_takes_view() -> None:
    found = leaves(cli_main._parser())
    assert len(found) >= 13  # status, verify, index ×3, resync, dlq ×4, purge-key, replay, wait…
    for parser in found:
        assert any("--view" in action.option_strings for action in parser._actions), parser.prog


@pytest.mark.parametrize(
    "argv",
    [["verify"], ["resync", "--yes"], ["dlq", "list"], ["index", "create"], ["wait", "--now"]],
)
def test_several_views_and_no_view_exits_2_naming_them(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "views.toml"
    path.write_text(VIEWS)
    monkeypatch.setenv("SEARCHSYNC_CONFIG", str(path))
    for variable in ("VIEW_NAME", "KEY_COLUMN", "OS_INDEX_NAME", "INDEX_MAPPING"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SystemExit) as caught:
        cli_main.main(argv)
    assert caught.value.code == 2
    assert "lists 2 views (orders_mv, stores_mv): name one with --view" in capsys.readouterr().err


def test_an_unknown_view_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "views.toml"
    path.write_text(VIEWS)
    monkeypatch.setenv("SEARCHSYNC_CONFIG", str(path))
    for variable in ("VIEW_NAME", "KEY_COLUMN", "OS_INDEX_NAME", "INDEX_MAPPING"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SystemExit) as caught:
        cli_main.main(["status", "--view", "customers_mv"])
    assert caught.value.code == 2
    assert "no view 'customers_mv'" in capsys.readouterr().err
