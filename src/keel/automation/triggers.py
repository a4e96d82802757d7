"""Deciding whether a policy's triggers fire, each with a key that names the occasion.

A fired trigger carries a *key*: the same occasion always gives the same key
(the drift window, the scheduled time, the dataset version, the alert, the
prompt version), and a key is claimed once in the store, so one occasion never
starts two cycles however many controllers look at it or however often. A
trigger whose occasion was claimed already gives way to the next one.

A prompt policy's occasions are about its candidate (the newest untried
version): each key names it too, so the same still-firing alert tries each new
candidate once, and never one candidate twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from keel.automation.durations import human_duration
from keel.automation.policy import Policy, Trigger

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["Fired", "check_triggers", "latest_dataset_versions"]


@dataclass(frozen=True)
class Fired:
    """A trigger that fired: its claim key, why, and what was measured."""

    key: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def check_triggers(
    policy: Policy,
    *,
    now_ms: int,
    since_ms: int,
    seen_datasets: dict[str, int],
    monitor: Any = None,
    champion: int | None = None,
    client: Client | None = None,
    candidate: int | None = None,
    claimed: Callable[[str], bool] | None = None,
) -> Fired | None:
    """The first trigger of ``policy`` that fires now for an occasion not claimed yet, or None.

    Args:
        now_ms: the time of the check.
        since_ms: when the policy's last cycle ended (or it was applied; for a prompt, not
            before its candidate was registered): a schedule fires for the newest scheduled
            time after it.
        seen_datasets: the newest version of each watched dataset already accounted for.
        monitor: runs the deployment's monitor over a window (``run_monitor``); injected so
            one check reads the prediction logs once per window.
        champion: the version the policy's alias holds: drift is judged on its traffic.
        client: where dataset versions and alerts are looked up (default: one on the
            process settings).
        candidate: a prompt policy's candidate version: the occasion is about it.
        claimed: ``claimed(key)`` is True for an occasion acted on before.
    """
    served = None if champion is None else f"{policy.model}/{champion}"
    for trigger in policy.triggers:
        if trigger.kind == "dataset":
            fired = _dataset(trigger, seen_datasets, client)
        elif trigger.kind == "alert":
            fired = _alert(trigger, policy, client)
        elif trigger.kind == "prompt":
            fired = None if candidate is None else _prompt(policy, candidate, champion)
        else:
            fired = _check(trigger, policy, now_ms, since_ms, monitor, served)
        if fired is None:
            continue
        if candidate is not None and trigger.kind != "prompt":
            fired = replace(fired, key=f"{fired.key} for {policy.label(candidate)}")
        if claimed is not None and claimed(fired.key):
            continue  # acted on before (an alert still firing, say): the next trigger may fire
        return fired
    return None


def _check(
    trigger: Trigger,
    policy: Policy,
    now_ms: int,
    since_ms: int,
    monitor: Any,
    served: str | None,
) -> Fired | None:
    if trigger.kind == "schedule":
        return _schedule(trigger, now_ms, since_ms)
    assert trigger.window is not None
    result = monitor(policy.deployment, trigger.window)
    if result is None:
        return None
    if trigger.kind == "drift":
        return _drift(trigger, result, served)
    return _quality(trigger, result)


def _window_key(kind: str, result: Any) -> str:
    return f"{kind}:{int(result.window_start)}-{int(result.window_end)}"


def _feature(column: str) -> str:
    return column.removeprefix("input.")


def _drift(trigger: Trigger, result: Any, served: str | None) -> Fired | None:
    # The champion's own traffic against its own reference: rows an older version
    # answered earlier in the window say nothing about the model serving now.
    mine = (result.versions or {}).get(served) if served else None
    if mine is not None:
        share_value, columns, rows = mine["share_drifted"], mine["drifted_columns"], mine["rows"]
    else:
        share_value, columns, rows = result.share_drifted, result.drifted_columns, result.rows
    if share_value is None:  # no reference profile to compare with
        return None
    drifted = [_feature(c) for c in columns if not c.startswith("output.")]
    share = float(share_value)
    if trigger.columns:
        hit = [c for c in trigger.columns if c in drifted]
        if not hit:
            return None
        reason = f"drift in {', '.join(hit)} over the last {human_duration(trigger.window)}"
    else:
        assert trigger.share is not None
        if share < trigger.share or not drifted:
            return None
        reason = (
            f"{share:.0%} of feature columns drifted (threshold {trigger.share:.0%}) over the "
            f"last {human_duration(trigger.window)}: {', '.join(drifted[:6])}"
            f"{' …' if len(drifted) > 6 else ''}"
        )
    return Fired(
        _window_key("drift", result),
        f"{reason} ({rows} predictions{f' served by {served}' if mine is not None else ''})",
        {"share_drifted": share, "drifted_columns": drifted, "rows": rows, "served_by": served},
    )


def _quality(trigger: Trigger, result: Any) -> Fired | None:
    labels = int(result.labelled_rows or 0)
    value = ((result.quality or {}).get("metrics") or {}).get(trigger.metric or "")
    if value is None or labels < trigger.min_labels or value != value:  # NaN: not measured
        return None
    assert trigger.below is not None
    if float(value) >= trigger.below:
        return None
    return Fired(
        _window_key("quality", result),
        f"{trigger.metric} {float(value):.4g} < {trigger.below:g} on {labels} labelled "
        f"predictions over the last {human_duration(trigger.window)}",
        {"metric": trigger.metric, "value": float(value), "labels": labels},
    )


def _schedule(trigger: Trigger, now_ms: int, since_ms: int) -> Fired | None:
    from datetime import UTC, datetime

    from croniter import croniter

    now = datetime.fromtimestamp(now_ms / 1000, UTC)
    due = croniter(trigger.cron, now).get_prev(datetime)
    due_ms = int(due.timestamp() * 1000)
    if due_ms <= since_ms:
        return None
    return Fired(
        f"schedule:{due_ms}",
        f"scheduled run {trigger.cron!r} due at {due.isoformat(timespec='minutes')}",
        {"due": due.isoformat()},
    )


def _dataset(trigger: Trigger, seen: dict[str, int], client: Client | None) -> Fired | None:
    assert trigger.dataset is not None
    latest = latest_dataset_versions([trigger.dataset], client=client).get(trigger.dataset)
    if latest is None or latest <= seen.get(trigger.dataset, 0):
        return None
    return Fired(
        f"dataset:{trigger.dataset}@{latest}",
        f"dataset {trigger.dataset} has a new version {latest} "
        f"(previous {seen.get(trigger.dataset) or 'none'})",
        {"dataset": trigger.dataset, "version": latest},
    )


def _alert(trigger: Trigger, policy: Policy, client: Client | None) -> Fired | None:
    """Fires while the deployment's alert ``trigger.rule`` is firing (its newest transition)."""
    from keel.monitoring.alerts import list_alerts

    for alert in list_alerts(policy.deployment, client=client):  # newest first
        if alert.rule != trigger.rule:
            continue
        if alert.state != "firing":
            return None
        return Fired(
            f"alert:{alert.rule}:{alert.id}",
            f"alert {alert.rule} of {policy.deployment} is firing: {alert.message}",
            {"alert": alert.id, "rule": alert.rule, "value": alert.value},
        )
    return None


def _prompt(policy: Policy, candidate: int, champion: int | None) -> Fired:
    held = f"{policy.alias} holds version {champion}" if champion else f"{policy.alias} is not set"
    return Fired(
        f"prompt:{policy.label(candidate)}",
        f"prompt {policy.model} has a version newer than {policy.alias}'s: {candidate} ({held})",
        {"prompt": policy.model, "candidate": candidate},
    )


def latest_dataset_versions(names: list[str], *, client: Client | None = None) -> dict[str, int]:
    """The newest version number of each named dataset that exists.

    Each is one lookup of the client's data part: a query of its own store, or
    through ``keel server`` one request.

    Args:
        names: dataset names.
        client: whose datasets (default: a client on the process settings).
    """
    from keel.errors import NotFound
    from keel.monitoring.clients import resolve_client

    catalog = resolve_client(client).data
    out: dict[str, int] = {}
    for name in names:
        try:
            out[name] = int(catalog.get_version(name).version)
        except NotFound:
            continue
    return out
