"""Runs side by side: which params and latest metrics they share and where they differ."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput

if TYPE_CHECKING:
    from keel.tracking.client import TrackingClient

__all__ = ["compare_runs"]


def _same(values: list[Any]) -> bool:
    # NaN != NaN, yet two runs that both logged NaN agree: compare NaN as a value.
    def key(value: Any) -> Any:
        return "NaN" if isinstance(value, float) and math.isnan(value) else value

    first = key(values[0])
    return all(key(v) == first for v in values[1:])


def compare_runs(
    client: TrackingClient, run_ids: Sequence[str], *, only_diff: bool = False
) -> dict[str, Any]:
    """Compare runs: one row per param and per latest metric, with whether the runs differ.

    Args:
        client: the client to read the runs through.
        run_ids: two or more run ids (or unique prefixes of 6+ characters).
        only_diff: keep only the rows where the runs differ.

    Returns:
        ``{"runs": [RunInfo dict, ...], "rows": [{"kind", "key", "values", "differs"}, ...]}``
        with rows sorted params first, then metrics, each by key; ``values`` is in
        the order of ``run_ids`` and holds ``None`` where a run lacks the key.

    Raises:
        InvalidInput: fewer than two run ids.
        NotFound: a run id matches no run.
    """
    if len(run_ids) < 2:
        raise InvalidInput(
            f"compare needs at least two run ids, got {len(run_ids)}; "
            "pass the runs to compare, e.g. `keel runs compare RUN_A RUN_B`"
        )
    runs = [client.get_run(client.resolve_run_id(r)) for r in run_ids]
    rows: list[dict[str, Any]] = []
    for kind in ("params", "metrics"):
        for key in sorted({k for run in runs for k in getattr(run, kind)}):
            values = [getattr(run, kind).get(key) for run in runs]
            differs = not _same(values)
            if differs or not only_diff:
                rows.append({"kind": kind, "key": key, "values": values, "differs": differs})
    return {"runs": [run.info.to_dict() for run in runs], "rows": rows}
