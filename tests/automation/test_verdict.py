"""The canary's verdict, one rule per row: live metrics and bounds in, promote/rollback/wait out."""

from __future__ import annotations

import pytest

from keel.automation.live import LiveMetrics
from keel.automation.policy import Canary, LiveCriteria, Rollout
from keel.automation.verdict import MIN_JUDGED_REQUESTS, Verdict, judge_canary

#: The default rollout: 200 requests within 30m; promote at error_rate <= 0.01 and
#: p99_ratio <= 2; roll back above error_rate 0.05 or p99_ratio 5.
DEFAULT = Rollout()
ONLY_LATENCY = Rollout(promote_when=LiveCriteria(p99_ratio=2.0))
SMALL = Rollout(canary=Canary(weight=10, min_requests=20, max_duration=60.0))


def live(
    requests: int,
    errors: int = 0,
    *,
    primary: int = 100,
    p99: tuple[float, float] | None = None,
    drift: float | None = None,
) -> LiveMetrics:
    """Canary requests and failures, the primary's requests, (canary, primary) p99 in ms."""
    return LiveMetrics(
        canary_requests=requests,
        canary_errors=errors,
        primary_requests=primary,
        primary_errors=0,
        canary_p99_ms=None if p99 is None else p99[0],
        primary_p99_ms=None if p99 is None else p99[1],
        prediction_drift=drift,
    )


CASES = [
    # -- waiting: too little traffic to say anything yet --------------------------------------
    ("a young canary waits", live(5), DEFAULT, 60, False, Verdict("wait")),
    (
        "errors below the judged minimum are noise",
        live(10, 5),
        DEFAULT,
        60,
        False,
        Verdict("wait"),
    ),
    ("at exactly max_duration it still waits", live(50), DEFAULT, 1800, False, Verdict("wait")),
    # -- rule 1: a rollback bound breached, once judged ------------------------------------------
    (
        "the error rate breaks the rollback bound",
        live(20, 5),
        DEFAULT,
        60,
        False,
        Verdict(
            "rollback",
            ("error_rate 0.2 > 0.05",),
            "error_rate 0.2 > 0.05 (20 canary requests, 5 failed; 100 primary)",
        ),
    ),
    (
        "latency against the primary breaks the rollback bound",
        live(30, p99=(600.0, 100.0)),
        DEFAULT,
        60,
        False,
        Verdict(
            "rollback",
            ("p99_ratio 6 > 5",),
            "p99_ratio 6 > 5 (30 canary requests, 0 failed; 100 primary)",
        ),
    ),
    (
        "a rollback bound wins over enough requests",
        live(200, 25, primary=300),
        DEFAULT,
        60,
        False,
        Verdict(
            "rollback",
            ("error_rate 0.1111 > 0.05",),
            "error_rate 0.1111 > 0.05 (200 canary requests, 25 failed; 300 primary)",
        ),
    ),
    # -- rule 2: enough requests: promote if every measured promotion bound holds ----------------
    (
        "enough requests within the promotion bounds promote",
        live(200, 1, primary=300, p99=(15.0, 10.0)),
        DEFAULT,
        60,
        False,
        Verdict(
            "promote",
            ("error_rate 0.004975 <= 0.01", "p99_ratio 1.5 <= 2"),
            "error_rate 0.004975 <= 0.01; p99_ratio 1.5 <= 2 "
            "(200 canary requests, 1 failed; 300 primary)",
        ),
    ),
    (
        "a promotion bound not met rolls back",
        live(200, 3, primary=300),
        DEFAULT,
        60,
        False,
        Verdict(
            "rollback",
            ("error_rate 0.01478 > 0.01",),
            "promotion bounds not met: error_rate 0.01478 > 0.01 "
            "(200 canary requests, 3 failed; 300 primary)",
        ),
    ),
    (
        "bounds that could not be measured do not hold promotion back",
        live(200),
        ONLY_LATENCY,
        60,
        False,
        Verdict("promote", (), "no bound measured (200 canary requests, 0 failed; 100 primary)"),
    ),
    (
        "a small canary is judged on its own minimum",
        live(20),
        SMALL,
        10,
        False,
        Verdict(
            "promote",
            ("error_rate 0 <= 0.01",),
            "error_rate 0 <= 0.01 (20 canary requests, 0 failed; 100 primary)",
        ),
    ),
    # -- rule 3: out of time --------------------------------------------------------------------
    (
        "too few requests within max_duration roll back",
        live(50),
        DEFAULT,
        1801,
        False,
        Verdict(
            "rollback",
            ("the canary saw 50 of the 200 requests it needs within 30m",),
            "the canary saw 50 of the 200 requests it needs within 30m",
        ),
    ),
    # -- awaiting approval: only a judged rollback bound stops the promotion ----------------------
    (
        "awaiting approval, a breach rolls back",
        live(20, 5),
        DEFAULT,
        7200,
        True,
        Verdict(
            "rollback", ("error_rate 0.2 > 0.05",), "while awaiting approval: error_rate 0.2 > 0.05"
        ),
    ),
    (
        "awaiting approval, an unjudged breach does not",
        live(10, 5),
        DEFAULT,
        7200,
        True,
        Verdict("promote", (), "approved; live metrics within bounds"),
    ),
    (
        "awaiting approval, neither time nor a promotion bound matters",
        live(100, 2),
        DEFAULT,
        7200,
        True,
        Verdict("promote", (), "approved; live metrics within bounds"),
    ),
]


@pytest.mark.parametrize(
    ("metrics", "rollout", "elapsed", "awaiting", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_canary_verdict_follows_its_rules(metrics, rollout, elapsed, awaiting, expected):
    verdict = judge_canary(metrics, rollout, elapsed_seconds=elapsed, awaiting_approval=awaiting)
    assert verdict == expected


def test_the_judged_minimum_counts_answered_and_failed_requests():
    assert MIN_JUDGED_REQUESTS == 20
    at_the_minimum = live(MIN_JUDGED_REQUESTS - 4, 4)
    assert judge_canary(at_the_minimum, DEFAULT, elapsed_seconds=1).action == "rollback"
    below = live(MIN_JUDGED_REQUESTS - 5, 4)
    assert judge_canary(below, DEFAULT, elapsed_seconds=1).action == "wait"
