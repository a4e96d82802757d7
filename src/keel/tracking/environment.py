"""What a run needs to be reproduced: interpreter, platform, packages, code, seeds.

The interpreter, platform and installed distributions form an *environment*
named by the digest of their canonical JSON, stored once and shared by the
runs that used it. The code state (git commit, whether the tree was dirty
and a digest of the uncommitted changes, see ``keel.tracking.gitstate``) and
the command line belong to
each run.
"""

from __future__ import annotations

import functools
import os
import platform
import random
import shlex
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import blake3

from keel.artifacts.store import canonical_json
from keel.tracking.gitstate import GitState, capture_git

__all__ = [
    "Capture",
    "Environment",
    "GitState",
    "capture",
    "capture_environment",
    "capture_git",
    "command_line",
    "seed_everything",
]


@dataclass(frozen=True)
class Environment:
    python_version: str
    implementation: str
    platform: str
    distributions: tuple[str, ...]

    @functools.cached_property
    def digest(self) -> str:
        """BLAKE3 of the canonical JSON; computed once, as every run of a process records it."""
        return blake3.blake3(canonical_json(self.to_dict())).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "python_version": self.python_version,
            "implementation": self.implementation,
            "platform": self.platform,
            "distributions": list(self.distributions),
        }


def _distributions() -> tuple[str, ...]:
    """``name==version`` of every installed distribution, normalized and sorted.

    Names and versions are read from the ``<name>-<version>.dist-info`` folder
    names on ``sys.path`` (their standard spelling), not by parsing every
    package's METADATA, which took over 100 ms per process; a folder whose name
    does not carry a version (an editable ``*.egg-info``) is read properly.
    """
    seen: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for folder in names:
            if not folder.endswith((".dist-info", ".egg-info")):
                continue
            project, _, version = folder.rsplit(".", 1)[0].partition("-")
            if not version:
                try:
                    dist = metadata.PathDistribution(Path(entry or ".") / folder)
                    project, version = dist.metadata["Name"] or "", dist.version
                except (KeyError, OSError):  # a broken install without metadata
                    continue
            if project and version:
                seen.setdefault(project.lower().replace("_", "-").replace(".", "-"), version)
    return tuple(sorted(f"{name}=={version}" for name, version in seen.items()))


@functools.lru_cache(maxsize=1)
def capture_environment() -> Environment:
    """The interpreter, platform and installed distributions (``name==version``), sorted.

    Computed once per process: packages installed while a process runs are not
    seen by code it already imported either.
    """
    return Environment(
        python_version=platform.python_version(),
        implementation=platform.python_implementation(),
        platform=platform.platform(),
        distributions=_distributions(),
    )


@dataclass(frozen=True)
class Capture:
    """Where a run ran: the interpreter and packages, the git state and the command.

    Captured by the process that runs the code. A client of ``keel server``
    captures its own and sends it with the run; the server records what it is
    sent, since its own interpreter is not the run's.
    """

    environment: Environment
    git: GitState | None
    command: str


def capture() -> Capture:
    """This process's :class:`Capture`."""
    return Capture(capture_environment(), capture_git(), command_line())


def command_line() -> str:
    """The command that started this process, shell-quoted."""
    return shlex.join(getattr(sys, "orig_argv", sys.argv))


def seed_everything(seed: int) -> dict[str, int]:
    """Seed Python's ``random``, NumPy and (when installed) PyTorch; return what was seeded.

    ``PYTHONHASHSEED`` is set for child processes; it cannot change the
    current interpreter's string hashing.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        from keel.errors import InvalidInput

        raise InvalidInput(f"seed must be an integer in [0, 2**32), got {seed!r}")
    seeded = {"python": seed}
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed)
        seeded["numpy"] = seed
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    if "torch" in sys.modules or _installed("torch"):
        try:
            import torch

            torch.manual_seed(seed)
            seeded["torch"] = seed
        except ImportError:  # pragma: no cover - broken install
            pass
    return seeded


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True
