"""Pipelines under test live in real files (the code digest reads their source)."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def write_module(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Write ``<name>.py`` in a project folder; forget imported project modules afterwards."""
    project = tmp_path / "project"
    project.mkdir()
    written: list[str] = []

    def write(name: str, source: str) -> Path:
        path = project / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        written.append(name)
        forget()
        return path

    def forget() -> None:
        for name in list(sys.modules):
            module = sys.modules[name]
            file = getattr(module, "__file__", None) or ""
            if file.startswith(str(project)):
                del sys.modules[name]

    yield write
    forget()
    while str(project) in sys.path:
        sys.path.remove(str(project))
