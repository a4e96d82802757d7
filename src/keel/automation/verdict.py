"""The canary's verdict: promote, roll back or wait, from its live metrics and bounds.

A pure function of what was measured (:class:`~keel.automation.live.LiveMetrics`)
and what the policy's rollout allows (:class:`~keel.automation.policy.Rollout`),
so every rule below is one row of a table test:

1. Once the canary has :data:`MIN_JUDGED_REQUESTS` requests (answered or
   failed), any breach of ``rollback_when`` rolls it back at once.
2. Once it answered ``canary.min_requests`` requests, it is promoted if every
   measured ``promote_when`` bound holds, else rolled back.
3. Otherwise it waits, until ``canary.max_duration`` has passed: a canary that
   never got enough traffic is rolled back rather than left running.

A canary already awaiting approval has passed rule 2: only rule 1 can still
roll it back; otherwise the promotion goes ahead once the approvals are in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from keel.automation.durations import human_duration
from keel.automation.live import LiveMetrics
from keel.automation.policy import Rollout

__all__ = ["MIN_JUDGED_REQUESTS", "Verdict", "judge_canary"]

#: Requests a canary needs before its rollback bounds are judged (noise below that).
MIN_JUDGED_REQUESTS = 20

Action = Literal["promote", "rollback", "wait"]


@dataclass(frozen=True)
class Verdict:
    """What to do with the canary, and why.

    Attributes:
        action: ``promote``, ``rollback`` or ``wait``.
        reasons: each finding that decided it (``error_rate 0.08 > 0.05``, …).
        reason: the one line an event records: the findings and the request counts.
    """

    action: Action
    reasons: tuple[str, ...] = ()
    reason: str = ""


def judge_canary(
    metrics: LiveMetrics,
    rollout: Rollout,
    *,
    elapsed_seconds: float,
    awaiting_approval: bool = False,
) -> Verdict:
    """The verdict on a canary (see the module docstring for the rules).

    Args:
        metrics: what the canary and the primary did since the canary started.
        rollout: the policy's canary size and duration, and its promotion and
            rollback bounds.
        elapsed_seconds: how long the canary has run.
        awaiting_approval: the canary passed already and waits for approvals.
    """
    measured = metrics.measured()
    judged = metrics.canary_requests + metrics.canary_errors >= MIN_JUDGED_REQUESTS
    breaches = tuple(rollout.rollback_when.breaches(measured)) if judged else ()
    if awaiting_approval:
        if breaches:
            return Verdict("rollback", breaches, "while awaiting approval: " + "; ".join(breaches))
        return Verdict("promote", (), "approved; live metrics within bounds")
    counts = (
        f" ({metrics.canary_requests} canary requests, {metrics.canary_errors} failed; "
        f"{metrics.primary_requests} primary)"
    )
    if breaches:
        return Verdict("rollback", breaches, "; ".join(breaches) + counts)
    if metrics.canary_requests >= rollout.canary.min_requests:
        failing = tuple(rollout.promote_when.breaches(measured))
        if failing:
            return Verdict(
                "rollback", failing, "promotion bounds not met: " + "; ".join(failing) + counts
            )
        bounds = rollout.promote_when.to_dict()
        held = tuple(
            f"{k} {v:.4g} <= {bounds[k]:g}"
            for k, v in measured.items()
            if k in bounds and v is not None
        )
        return Verdict("promote", held, ("; ".join(held) or "no bound measured") + counts)
    if elapsed_seconds > rollout.canary.max_duration:
        late = (
            f"the canary saw {metrics.canary_requests} of the {rollout.canary.min_requests} "
            f"requests it needs within {human_duration(rollout.canary.max_duration)}"
        )
        return Verdict("rollback", (late,), late)
    return Verdict("wait")
