"""compose/Dockerfile builds what it says: every COPY source exists in the build context
compose gives it and is not left out by .dockerignore, the commands it and compose run
are console scripts of pyproject, and its import check names the module pyproject builds.

No Docker engine runs here, so the image is never built; these are the facts a build
depends on, read from the files the build reads.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import shlex
from pathlib import Path, PurePosixPath

from tests.unit.compose.deployment import (
    CLI_SERVICE,
    COMPOSE,
    ROOT,
    SEARCHSYNC_SERVICES,
    compose_file,
    dockerfile_instructions,
    pyproject,
)


def build_context() -> tuple[Path, Path]:
    """The build context and Dockerfile compose uses for the app image."""
    build = compose_file()["services"]["search-sync"]["build"]
    context = (COMPOSE / build["context"]).resolve()
    return context, context / build["dockerfile"]


def copy_sources(dockerfile: Path) -> list[str]:
    sources: list[str] = []
    for instruction in dockerfile_instructions(dockerfile):
        if instruction.keyword in ("COPY", "ADD"):
            words = [w for w in shlex.split(instruction.arguments) if not w.startswith("--")]
            assert len(words) >= 2, instruction
            sources += words[:-1]
    return sources


def ignore_patterns(context: Path) -> list[str]:
    lines = (context / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for these patterns (no ``!`` exceptions are used): a path is left
    out when it or a directory above it matches; ``**/`` matches any depth."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        assert not pattern.startswith("!"), "exceptions are not modelled here"
        variants = [pattern, pattern.removeprefix("**/")]
        for prefix in prefixes:
            tail = prefix.split("/")[-1]
            if any(fnmatch.fnmatchcase(prefix, v) for v in variants):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(tail, variants[1]):
                return True
    return False


def test_the_build_context_is_the_repository() -> None:
    context, dockerfile = build_context()
    assert context == ROOT
    assert dockerfile == ROOT / "compose" / "Dockerfile"


def test_every_copy_source_exists_in_the_build_context() -> None:
    context, dockerfile = build_context()
    sources = copy_sources(dockerfile)
    assert {"pyproject.toml", "searchsync", "producer", "consumer", "common", "cli"} <= set(sources)
    for source in sources:
        assert (context / source).exists(), source


def test_the_dockerignore_keeps_what_the_image_copies_and_drops_the_rest() -> None:
    context, dockerfile = build_context()
    patterns = ignore_patterns(context)
    for source in copy_sources(dockerfile):
        assert not ignored(source, patterns), source
    for heavy in (".devstack", ".venv", ".git", "producer/__pycache__/x.pyc", ".mypy_cache"):
        assert ignored(heavy, patterns), heavy
    assert ignored("compose/.env", patterns)  # the deployment's passwords


def test_the_commands_the_image_runs_are_console_scripts() -> None:
    scripts: dict[str, str] = pyproject()["project"]["scripts"]
    _, dockerfile = build_context()
    [cmd] = [i for i in dockerfile_instructions(dockerfile) if i.keyword == "CMD"]
    commands = [json.loads(cmd.arguments)[0]]
    services = compose_file()["services"]
    commands += [services[name]["command"][0] for name in SEARCHSYNC_SERVICES]
    assert set(commands) == {"searchsync-producer", "searchsync-consumer"}
    commands += services[CLI_SERVICE]["entrypoint"]  # the CLI (profile cli)
    for command in commands:
        assert command in scripts, command
        module, _, function = scripts[command].partition(":")
        assert callable(getattr(importlib.import_module(module), function)), scripts[command]


def test_the_import_check_names_the_extension_pyproject_builds() -> None:
    _, dockerfile = build_context()
    runs = " ".join(i.arguments for i in dockerfile_instructions(dockerfile) if i.keyword == "RUN")
    checked = re.findall(r'python -P -c "import ([\w.]+)"', runs)
    assert checked == ["searchsync.producer._speedups"]
    extensions = pyproject()["tool"]["setuptools"]["ext-modules"]
    [extension] = [e for e in extensions if e["name"] == checked[0]]
    for source in extension["sources"]:
        assert (ROOT / source).is_file(), source
        assert (ROOT / source).parts[-2] == "producer"  # a file the image copies


def test_the_ignore_rule_matches_like_docker() -> None:
    patterns = [".venv", "**/__pycache__", "compose/.env", "*.egg-info"]
    assert ignored(".venv/lib/python3.11/site.py", patterns)
    assert ignored("consumer/__pycache__/bulk.cpython-311.pyc", patterns)
    assert ignored("searchsync.egg-info/PKG-INFO", patterns)
    assert not ignored("compose/.env.example", patterns)
    assert not ignored("consumer/bulk.py", patterns)
