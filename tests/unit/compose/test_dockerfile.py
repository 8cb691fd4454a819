"""compose/Dockerfile installs the project as `make install` does: the same Python, the same
extras (but `dev`), every package, the dashboard's files by the Makefile's own rule.

No image can be built here, so the Dockerfile is parsed and compared with pyproject.toml and
the Makefile.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "compose" / "Dockerfile"
MAKEFILE = ROOT / "Makefile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(text: str) -> list[tuple[str, str]]:
    """A Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined and
    comments left out."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), " ".join(rest.split())))
    return found


def dockerfile() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def pip_extras(command: str) -> tuple[bool, set[str]]:
    """Whether a `pip install` command installs the project editable, and with which extras."""
    words = shlex.split(command)
    target = next(word for word in words if word.startswith((".[", "'.[")) or word == ".")
    editable = words[words.index(target) - 1] == "-e"
    extras = re.fullmatch(r"\.(?:\[(.*)\])?", target)
    assert extras is not None, target
    return editable, set(filter(None, (extras.group(1) or "").split(",")))


def makefile_pip_install() -> str:
    return next(
        line.strip()
        for line in MAKEFILE.read_text().splitlines()
        if "pip install" in line and "-e" in line
    )


def test_instructions_are_parsed_whole() -> None:
    parsed = instructions("# c\nFROM a:1\nRUN x \\\n    && y\n\nENV A=b\n")
    assert parsed == [("FROM", "a:1"), ("RUN", "x && y"), ("ENV", "A=b")]


def test_the_python_is_the_one_the_project_is_checked_for() -> None:
    base = next(args for keyword, args in dockerfile() if keyword == "FROM")
    found = re.fullmatch(r"python:(\d+\.\d+)-slim(-\w+)?", base)
    assert found is not None, base
    assert found.group(1) == PYPROJECT["tool"]["mypy"]["python_version"]
    assert PYPROJECT["project"]["requires-python"] == f">={found.group(1)}"


def test_the_extras_are_make_installs_but_dev() -> None:
    runs = [args for keyword, args in dockerfile() if keyword == "RUN"]
    pip = next(run for run in runs if "pip install" in run)
    make_editable, make_extras = pip_extras(makefile_pip_install().split("pip install", 1)[1])
    editable, extras = pip_extras(pip.split("pip install", 1)[1])
    assert make_editable and editable
    assert extras == make_extras - {"dev"}
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


def test_every_package_and_the_build_files_are_copied() -> None:
    copied = {
        source
        for keyword, args in dockerfile()
        if keyword == "COPY"
        for source in args.split()[:-1]
    }
    packages = {
        name.rstrip("*") for name in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied
    assert {"pyproject.toml", "README.md", "Makefile"} <= copied


def test_the_dashboard_files_come_from_the_makefile_rule_before_the_install() -> None:
    variables = dict(re.findall(r"^(\w+) := (.*)$", MAKEFILE.read_text(), re.M))
    stamp = variables["WEB_STAMP"].replace("$(WEB)", variables["WEB"])
    runs = [args for keyword, args in dockerfile() if keyword == "RUN"]
    assert f"make {stamp}" in runs
    pip = next(i for i, run in enumerate(runs) if "pip install" in run)
    # Package data (api/web/vendor/*) must exist when the project is installed.
    assert runs.index(f"make {stamp}") < pip


def test_the_sandbox_and_the_entry_point_are_there() -> None:
    runs = " ".join(args for keyword, args in dockerfile() if keyword == "RUN")
    assert "bubblewrap" in runs  # `make install` installs it too
    entry = next(args for keyword, args in dockerfile() if keyword == "ENTRYPOINT")
    assert entry == '["stagecast"]'
    assert "stagecast" in PYPROJECT["project"]["scripts"]
