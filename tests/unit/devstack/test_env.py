"""devstack/env.py: reading .devstack/env as bash would."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.env import devstack_env, require


def test_reads_export_lines_with_bash_quoting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = tmp_path / "env"
    env.write_text(
        "export PGPORT=5432\n"
        "export DATABASE_URL=postgresql://postgres@127.0.0.1:5432/freshmart\n"
        "export ODD=a\\ b\n"
        "# a comment\n"
    )
    monkeypatch.delenv("PGPORT", raising=False)
    assert devstack_env(env) == {
        "PGPORT": "5432",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/freshmart",
        "ODD": "a b",
    }


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "env"
    env.write_text("export REDIS_URL=redis://127.0.0.1:6379/0\n")
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:1/0")
    assert devstack_env(env)["REDIS_URL"] == "redis://elsewhere:1/0"


def test_require_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OS_HOST", raising=False)
    monkeypatch.setenv("OS_PORT", "9200")
    with pytest.raises(RuntimeError, match="OS_HOST not set"):
        require(["OS_HOST", "OS_PORT"], tmp_path / "missing")
