"""The compose deployment's files as data, for the tests of tests/unit/compose/.

Pure reading: YAML through PyYAML's safe loader (anchors, aliases and ``<<`` merges
resolved, as compose resolves them), pyproject through tomllib, the Dockerfile's
instructions with their line continuations joined, the requests the OpenSearch roles
script sends.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "CLI_SERVICE",
    "COMPOSE",
    "COMPOSE_FILE",
    "ROLES_SCRIPT",
    "ROLES_SERVICE",
    "ROOT",
    "SEARCHSYNC_SERVICES",
    "Instruction",
    "RolesRequest",
    "compose_file",
    "dockerfile_instructions",
    "pyproject",
    "roles_requests",
]

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose"
COMPOSE_FILE = COMPOSE / "docker-compose.yml"
# the services that run searchsync (the app image); the rest are the products'
SEARCHSYNC_SERVICES = ("search-sync", "search-sync-stores", "search-sync-consumer")
# the CLI's service (profile cli: `docker compose run --rm searchsync-cli …`)
CLI_SERVICE = "searchsync-cli"
# the one-shot job that makes the OpenSearch roles and users
ROLES_SERVICE = "opensearch-roles"
ROLES_SCRIPT = COMPOSE / "opensearch" / "searchsync-roles.sh"


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


@dataclass(frozen=True)
class RolesRequest:
    """One ``put`` of the roles script: the security API path and its JSON body (None
    for a body built from a password, which the script escapes at run time)."""

    path: str
    body: Any


_PUT = re.compile(
    r'^put "(?P<path>[^"]+)" (?:<<JSON\n(?P<heredoc>.*?)\nJSON$|<<<\'(?P<literal>[^\']*)\'$|<<<")',
    flags=re.MULTILINE | re.DOTALL,
)


def _patterns(aliases: str, *suffixes: str) -> str:
    """The script's ``patterns SUFFIX…``: ``"<alias><suffix>"`` for every alias of the
    space-separated ``aliases`` and every suffix, as JSON strings."""
    return ", ".join(json.dumps(a + s) for a in aliases.split() for s in suffixes)


def roles_requests(alias: str, path: Path = ROLES_SCRIPT) -> list[RolesRequest]:
    """The script's PUTs in order, ``$every``/``$versions`` replaced by the patterns of
    ``alias`` (one alias, or several separated by spaces: ALIAS) as the script's
    ``patterns`` writes them into its here-documents. Raises AssertionError for a ``put`` line this
    reading does not understand (so none is skipped unseen)."""
    text = path.read_text()
    requests: list[RolesRequest] = []
    for match in _PUT.finditer(text):
        body: Any = None
        if match.group("heredoc") is not None:
            expanded = re.sub(
                r"\$every\b", _patterns(alias, "", "_v*", "_resync"), match.group("heredoc")
            )
            expanded = re.sub(r"\$versions\b", _patterns(alias, "_v*"), expanded)
            assert "$" not in expanded, expanded
            body = json.loads(expanded)
        elif match.group("literal") is not None:
            body = json.loads(match.group("literal"))
        requests.append(RolesRequest(match.group("path"), body))
    calls = re.findall(r"^put ", text, flags=re.MULTILINE)
    assert len(calls) == len(requests), "a put the reading does not understand"
    return requests
