"""The wheel as a user gets it: built from the files the image copies, installed into a
fresh virtual environment, run from a directory that is not the repository.

No services. Needs PyPI or a local wheel directory (PIP_FIND_LINKS) for the build
backend and the dependencies; pip's cache makes a second run take seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[2]
# what compose/Dockerfile copies into the image before `pip install .`
SHIPPED = ("pyproject.toml", "constraints.txt", "README.md", "searchsync", "common",
           "producer", "consumer", "cli")  # fmt: skip
COMMANDS = ("searchsync", "searchsync-producer", "searchsync-consumer")


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        args, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=540
    )
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in SHIPPED:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.so")
            shutil.copytree(path, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), "."], source)
    (built,) = out.glob("searchsync-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", str(home)], home)
    pip = [str(home / "bin" / "python"), "-m", "pip", "install", "-q"]
    _run([*pip, "-c", str(ROOT / "constraints.txt"), str(wheel)], home)
    return home


def test_the_wheels_only_top_level_import_name_is_searchsync(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(
        ".dist-info")}  # fmt: skip
    assert tops == {"searchsync"}
    for package in ("producer", "consumer", "common", "cli"):
        assert f"searchsync/{package}/__init__.py" in names
    # the producer's C hot path is compiled into the wheel, and no developer tool is
    assert any(name.startswith("searchsync/producer/_speedups.") for name in names)
    assert not [name for name in names if "devstack" in name or "/tests/" in name]


def test_the_installed_commands_answer_help_outside_the_repository(venv: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    python = str(venv / "bin" / "python")
    where = _run([python, "-c", "import searchsync, sys; print(searchsync.__file__)"], venv, env)
    assert Path(where.strip()).is_relative_to(venv), where  # not the checkout
    for command in COMMANDS:
        out = _run([str(venv / "bin" / command), "--help"], venv, env)
        assert "usage:" in out.lower(), (command, out)
    out = _run([python, "-m", "searchsync", "--help"], venv, env)
    assert "usage: searchsync" in out
    assert _run([python, "-c", "import searchsync.producer._speedups"], venv, env) == ""
