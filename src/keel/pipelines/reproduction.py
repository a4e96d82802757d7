"""``keel runs reproduce RUN_ID``: re-execute a pipeline run and compare.

The stored pipeline run names its target, its parameters with dataset
references pinned to versions, its seed and its code digest. Reproducing
loads the target as the code stands now, runs it with those parameters and
that seed, never from the cache, and compares with the original:

- the code digest (a change is listed with the functions whose source differs),
- every step's output digests, node by node,
- every metric of the pipeline run and of each step run,
- the pipeline's returned values.

Differences are listed; none means the run reproduced exactly. A different
Python or package set is reported as a note, since it may explain a
difference but is not one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput

if TYPE_CHECKING:
    from keel.tracking.client import TrackingClient


__all__ = ["Reproduction", "reproduce"]


@dataclass
class Reproduction:
    """The outcome of :func:`reproduce`.

    Attributes:
        original: the reproduced pipeline run's id.
        run_id: the new pipeline run's id.
        differences: one line per difference; empty when it reproduced exactly.
        notes: facts that may explain differences (environment, code).
        compared: how many output digests and metrics were compared.
    """

    original: str
    run_id: str
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared: int = 0

    @property
    def identical(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "run_id": self.run_id,
            "identical": self.identical,
            "differences": self.differences,
            "notes": self.notes,
            "compared": self.compared,
        }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return bool(a == b)


def _code_changes(client: TrackingClient, old: str | None, new: str | None) -> list[str]:
    if not old or not new:
        return []
    before = client.artifacts.get_json(old).get("sources", {})
    after = client.artifacts.get_json(new).get("sources", {})
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return changed


def reproduce(
    run_id: str, *, executor: str | None = None, target: str | None = None
) -> Reproduction:
    """Re-execute pipeline run ``run_id`` and compare outputs and metrics with it.

    Args:
        run_id: the pipeline run (a unique prefix of 6+ characters is enough).
        executor: run it on this executor instead of the one it used.
        target: load the pipeline from here instead of the recorded target.

    Raises:
        InvalidInput: the run is not a pipeline run.
        StepFailed: a step failed when re-executed.
    """
    from keel.pipelines.part import pipeline_records_for
    from keel.pipelines.runner import run_pipeline
    from keel.tracking.remote import tracking_for

    client = tracking_for()  # the process settings' store, or the keel server they name
    records = pipeline_records_for(client)
    original_id = client.resolve_run_id(run_id)
    record = records.get_pipeline_record(original_id)
    where = target or record.target
    if where.startswith("<in-memory>"):
        raise InvalidInput(
            f"pipeline run {original_id} was started from a pipeline object that was not in an "
            "importable module or file; pass target='module:attr' to say where it lives now"
        )
    original = records.get_pipeline_run(original_id)
    new = run_pipeline(
        where,
        params=record.params,
        executor=executor or record.executor,
        cache=False,
        seed=record.seed,
        reproduces=original_id,
    )
    report = Reproduction(original_id, new.run_id)
    new_record = records.get_pipeline_record(new.run_id)
    if new_record.code_digest != record.code_digest:
        changed = _code_changes(client, record.code_snapshot, new_record.code_snapshot)
        report.notes.append(
            f"code changed since the original run ({record.code_digest[:12]} → "
            f"{new_record.code_digest[:12]})" + (f": {', '.join(changed)}" if changed else "")
        )
    before_env = client.get_environment(original_id)
    after_env = client.get_environment(new.run_id)
    if before_env.get("environment_digest") != after_env.get("environment_digest"):
        report.notes.append(
            "the Python environment differs from the original run's (interpreter, platform or "
            "installed packages)"
        )
    steps_after = {s.node: s for s in new.steps}
    for step in original.steps:
        now = steps_after.get(step.node)
        if now is None:
            report.differences.append(f"step {step.node!r} did not run this time")
            continue
        for name, digest in step.outputs.items():
            report.compared += 1
            got = now.outputs.get(name)
            if got != digest:
                report.differences.append(
                    f"step {step.node!r} output {name!r}: {digest[:12]} → {(got or 'missing')[:12]}"
                )
        # A cached step's metrics are those of the run that computed its outputs.
        report.differences += _metric_differences(
            client, f"step {step.node!r} ", step.source_run_id or step.run_id, now.run_id, report
        )
    for node in steps_after.keys() - {s.node for s in original.steps}:
        report.differences.append(f"step {node!r} is new: the original run did not have it")
    report.differences += _metric_differences(client, "", original_id, new.run_id, report)
    if _returned(record.outputs) != _returned(new_record.outputs):
        report.differences.append("the pipeline returned different values (see both runs' outputs)")
    return report


def _returned(outputs: Any) -> str:
    """What the pipeline returned, with output references reduced to their content digests."""

    def reduce(value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("$keel") == "output":
                return {"digest": value.get("digest"), "path": value.get("path")}
            return {k: reduce(v) for k, v in value.items()}
        if isinstance(value, list):
            return [reduce(v) for v in value]
        return value

    return json.dumps(reduce(outputs), sort_keys=True)


def _metric_differences(
    client: TrackingClient, label: str, before_id: str, after_id: str, report: Reproduction
) -> list[str]:
    before = client.get_run(before_id).metrics
    after = client.get_run(after_id).metrics
    out = []
    for key in sorted(set(before) | set(after)):
        report.compared += 1
        a, b = before.get(key), after.get(key)
        if a is None or b is None:
            out.append(f"{label}metric {key!r}: {a} → {b}")
        elif not _same(a, b):
            out.append(f"{label}metric {key!r}: {a!r} → {b!r}")
    return out
