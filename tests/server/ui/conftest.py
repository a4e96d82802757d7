"""A real ``keel server`` on SQLite with two runs logged through the client, for the UI's tests."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import keel
from _support.control_plane import ControlPlane, start_control_plane
from keel.config import load_settings
from keel.tracking.entities import Metric
from keel.transport.http import HttpTransport

#: Steps of the ``loss`` metric each seeded run logs.
STEPS = 5_000


@dataclass
class Seeded:
    """The server, its experiment and the two runs logged to it."""

    server: ControlPlane
    experiment_id: int
    run_ids: dict[str, str]  # by run name


def _log(client: keel.Client, experiment_id: int, name: str, lr: str, shift: float) -> str:
    run = client.create_run(experiment_id, name, capture=True)
    points = [
        Metric("loss", math.exp(-step / 1_000) + shift + 0.01 * math.sin(step), step, step)
        for step in range(STEPS)
    ]
    client.log_batch(run.id, points, params={"lr": lr, "model": "rf"}, tags={"stage": "dev"})
    client.set_terminated(run.id)
    return run.id


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    home = tmp_path_factory.mktemp("ui-server")
    with start_control_plane(home / "server") as server:
        settings = load_settings(
            home=home / "client", server_url=server.url, token=server.admin_token
        )
        client = keel.Client(transport=HttpTransport(settings))
        experiment_id = client.create_experiment("churn")
        run_ids = {
            "fast": _log(client, experiment_id, "fast", "0.1", 0.0),
            "slow": _log(client, experiment_id, "slow", "0.01", 0.5),
        }
        yield Seeded(server, experiment_id, run_ids)
