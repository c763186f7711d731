"""The compose deployment's files as data, for the tests of tests/unit/compose/.

Pure reading: YAML through PyYAML's safe loader (anchors and aliases resolved, as
compose resolves them), pyproject through tomllib, the Dockerfile's instructions with
their line continuations joined.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "COMPOSE",
    "COMPOSE_FILE",
    "ROOT",
    "SEARCHSYNC_SERVICES",
    "Instruction",
    "compose_file",
    "dockerfile_instructions",
    "pyproject",
]

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
# the services that run searchsync (the app image); the rest are the products'
SEARCHSYNC_SERVICES = ("search-sync", "search-sync-consumer")


def compose_file(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as compose reads it before interpolation. Raises yaml.YAMLError."""
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: ``COPY``, ``RUN`` … and the rest of its line."""

    keyword: str
    arguments: str


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Instructions in order; comments dropped, ``\\`` continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        match = re.match(r"\s*([A-Za-z]+)\s+(.*)", whole)
        assert match is not None, f"not an instruction: {whole!r}"
        instructions.append(Instruction(match.group(1).upper(), match.group(2).strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions
