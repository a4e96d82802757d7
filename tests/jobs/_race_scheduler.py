"""A job scheduler in a process of its own, for ``test_scheduler_races.py``.

Runs ``Scheduler(owner=...).schedule()`` in a loop on the store that ``KEEL_HOME`` and
``KEEL_STORE_URL`` name, until ``--stop-file`` exists or ``--seconds`` pass. When it
ends by itself it prints one JSON line:
``{"owner": ..., "passes": n, "admitted": [job ids it admitted]}``; a test may kill it
at any point instead.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import keel
from keel.jobs import Scheduler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--owner", default=None, help="lease owner (default: host:pid:random)")
    parser.add_argument("--lease-seconds", type=float, default=30.0)
    parser.add_argument("--max-admissions", type=int, default=0, help="per pass; 0: no limit")
    parser.add_argument("--pause", type=float, default=0.0, help="most seconds between passes")
    parser.add_argument("--stop-file", default=None)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    scheduler = Scheduler(
        keel.Client(),
        owner=args.owner,
        lease_seconds=args.lease_seconds,
        pool_timeout_ms=3_600_000,  # the test's pools beat slower than a worker would
    )
    stop = Path(args.stop_file) if args.stop_file else None
    deadline = time.monotonic() + args.seconds
    admitted: list[int] = []
    passes = 0
    while time.monotonic() < deadline and not (stop is not None and stop.exists()):
        decisions = scheduler.schedule(max_admissions=args.max_admissions or None)
        passes += 1
        admitted += [d.job_id for d in decisions if d.action == "admit"]
        if args.pause:
            time.sleep(rng.uniform(0, args.pause))
    print(json.dumps({"owner": scheduler.owner, "passes": passes, "admitted": admitted}))


if __name__ == "__main__":
    main()
