"""The module-level API (``keel.start_run``, ``keel.log_metric`` …) in all three modes.

The fluent API buffers metric points and flushes them in batches; through a
server each flush is one request. Resuming a run goes on from the steps the
store holds, read through the same client.
"""

from __future__ import annotations

import keel
from keel.config import Settings


def test_a_fluent_run_logs_params_metrics_and_tags_and_resumes_at_the_next_step(
    any_env: Settings,
) -> None:
    keel.set_experiment("fluent")
    with keel.start_run(name="first") as run:
        keel.log_params({"lr": 0.1, "depth": 3})
        keel.set_tag("team", "fraud")
        for _ in range(120):
            keel.log_metric("loss", 0.5)
    with keel.start_run(run_id=run.id):
        keel.log_metric("loss", 0.25)

    client = keel.Client()
    stored = client.get_run(run.id)
    assert stored.params == {"lr": "0.1", "depth": "3"}
    assert stored.tags["team"] == "fraud"
    history = client.get_metric_history(run.id, "loss")
    assert [p.step for p in history] == list(range(121))  # resumed at 120, not at 0
    assert history[-1].value == 0.25
    assert client.get_experiment_by_name("fluent") is not None
