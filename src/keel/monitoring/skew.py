"""Training-serving skew: the feature values a deployment served against the offline store's.

A deployment that declares features (``keel deploy create … --features``) logs,
with each prediction, the join keys, the request data and the feature values
it served (:mod:`keel.serving.features`). Each monitor run of such a deployment
then:

1. takes a seeded sample of up to ``skew_sample`` rows of its window (the
   ``skew_sample`` monitor setting, 1,000 by default): rows that carry every join
   key, a shadow's copies left out. The sample is a bounded priority sample over
   the window's batches, the same for the same window;
2. builds an entity frame of the rows' join keys, request fields and request
   times, and asks the offline store for each declared feature's point-in-time
   value at each request's time (``get_historical_features``; on-demand features
   run the same function over the offline values and the logged request data);
3. compares, per feature, the served value with the offline one: numbers are
   equal within a relative tolerance of 1e-6 (absolute 1e-9), other values when
   identical; both missing is equal, one missing is skew.

The skew rate per feature is stored with the run (``MonitorResult.skew``) and
moves the alert rule ``skew:<view>:<feature>``: it fires when the rate is above
the ``skew_rate`` setting (0.05 by default) and resolves at or below 0.6 times it.

What the comparison means: the offline value is the one the sources hold *now*
for the request's time, so a source row that arrived after the request, for an
event time before it, counts as skew too. That is what a materialization lag
looks like from the served side (the online store had not seen the row yet), as
do late corrections not yet materialized and backfills. A difference in code
between the online and offline paths shows as skew of the features it computes.
Rows logged before the deployment declared a feature read it as missing, and
count as skew where the offline store has a value.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from keel.errors import InvalidInput, KeelError, NotFound
from keel.monitoring.alerts import Measurement
from keel.predictions import INPUT_PREFIX

if TYPE_CHECKING:
    import pandas as pd

    from keel.client import Client
    from keel.serving.features import FeatureLayout


__all__ = [
    "DEFAULT_SKEW_RATE",
    "DEFAULT_SKEW_SAMPLE",
    "SkewReport",
    "compare_values",
    "feature_skew",
    "skew_measurements",
]

log = logging.getLogger("keel.monitoring")

#: The skew rate above which a feature's ``skew:`` alert fires.
DEFAULT_SKEW_RATE = 0.05
#: The most served rows a monitor run compares with the offline store.
DEFAULT_SKEW_SAMPLE = 1000
#: Numbers compare equal within this relative tolerance (and :data:`ABS_TOLERANCE`).
REL_TOLERANCE = 1e-6
ABS_TOLERANCE = 1e-9
_CLEAR_FACTOR = 0.6  # a skew alert resolves at or below 0.6 x its threshold
_EXAMPLES = 5  # request ids of skewed rows kept per feature, to look up


@dataclass
class SkewReport:
    """One window's served feature values against the offline store's.

    Attributes:
        features: per ``view:feature``: ``rows`` compared, ``skewed``, ``rate``,
            ``served_missing`` and ``offline_missing`` (rows null on each side) and
            ``examples`` (request ids of a few skewed rows).
        rows: the window's rows that could be compared (carrying every join key).
        sampled: how many of them were compared.
        excluded: the window's other rows (logged without the join keys, or a shadow's).
        error: why the offline values could not be computed (then no rates).
    """

    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: int = 0
    sampled: int = 0
    excluded: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "rows": self.rows,
            "sampled": self.sampled,
            "excluded": self.excluded,
            "error": self.error,
            "tolerance": {"relative": REL_TOLERANCE, "absolute": ABS_TOLERANCE},
        }


def feature_skew(
    client: Client,
    deployment: str,
    start_ms: int,
    end_ms: int,
    *,
    sample: int = DEFAULT_SKEW_SAMPLE,
) -> SkewReport | None:
    """Compare a window's served feature values with the offline store's at request time.

    Args:
        client: a client with its own store and artifact root (the monitor's).
        deployment: the deployment; ``None`` comes back unless it declares features.
        start_ms: the window's inclusive start (epoch ms).
        end_ms: its exclusive end; the sample is seeded by it, so a window's sample repeats.
        sample: the most rows compared.

    Returns:
        The report, or ``None`` for a deployment without features (or not stored).
        A failure to compute the offline values (a source gone, a changed on-demand
        function) is reported in ``error``, not raised: the rest of the monitor run stands.
    """
    from keel.serving.deployments import Deployments
    from keel.serving.features import feature_layout

    try:
        features = Deployments(client).get(deployment).spec.features
    except NotFound:  # served from a model URI: no stored spec, no features
        return None
    if not features:
        return None
    try:
        layout = feature_layout(client, features)
    except KeelError as exc:
        return SkewReport(error=f"the deployment's features cannot be resolved: {exc}")
    report = SkewReport()
    rows, total = _sample(client, deployment, layout, start_ms, end_ms, sample, report)
    report.excluded = total - report.rows
    if rows.num_rows == 0:
        return report
    report.sampled = rows.num_rows
    try:
        offline = _offline(client, layout, rows)
    except KeelError as exc:
        log.warning("keel: skew check of %s skipped: %s", deployment, exc)
        report.error = f"the offline values could not be computed: {exc}"
        return report
    ids = rows.column("request_id").to_numpy(zero_copy_only=False)
    for ref, column in zip(layout.features, layout.columns, strict=True):
        served = rows.column(INPUT_PREFIX + column).to_pandas()
        expected = offline[column].reset_index(drop=True)
        equal = compare_values(served, expected)
        skewed = ~equal
        count = int(skewed.sum())
        report.features[ref] = {
            "rows": len(equal),
            "skewed": count,
            "rate": count / len(equal),
            "served_missing": int(served.isna().sum()),
            "offline_missing": int(expected.isna().sum()),
            "examples": [str(i) for i in ids[skewed][:_EXAMPLES]],
        }
    return report


def compare_values(served: pd.Series, offline: pd.Series) -> np.ndarray:
    """Row by row, whether the served value equals the offline one (vectorized).

    Numbers (booleans included) within :data:`REL_TOLERANCE`/:data:`ABS_TOLERANCE`,
    timestamps to the millisecond, anything else as text; both missing (null or NaN)
    is equal, one missing is not.
    """
    import pandas as pd
    from pandas.api import types

    served_na = served.isna().to_numpy()
    offline_na = offline.isna().to_numpy()
    both = ~served_na & ~offline_na
    if types.is_datetime64_any_dtype(served) or types.is_datetime64_any_dtype(offline):
        try:
            a = pd.to_datetime(served, utc=True).to_numpy(dtype="datetime64[ms]")
            b = pd.to_datetime(offline, utc=True).to_numpy(dtype="datetime64[ms]")
            return (served_na & offline_na) | (both & (a == b))
        except (TypeError, ValueError):
            pass  # not both times: compared as text below
    if _numeric(served) and _numeric(offline):
        a = served.to_numpy(dtype=np.float64, na_value=np.nan)
        b = offline.to_numpy(dtype=np.float64, na_value=np.nan)
        close = np.isclose(a, b, rtol=REL_TOLERANCE, atol=ABS_TOLERANCE)
    else:
        close = served.astype(str).to_numpy() == offline.astype(str).to_numpy()
    return np.asarray((served_na & offline_na) | (both & close), dtype=bool)


def _numeric(values: pd.Series) -> bool:
    from pandas.api import types

    if types.is_numeric_dtype(values) or types.is_bool_dtype(values):
        return True
    if values.dtype == object:  # numbers with gaps (None) read back as objects
        kinds = {type(v) for v in values.dropna().head(64)}
        return bool(kinds) and all(issubclass(k, int | float | np.number) for k in kinds)
    return False


def skew_measurements(report: SkewReport | None, threshold: float) -> list[Measurement]:
    """The ``skew:<view>:<feature>`` rule of each compared feature (none without a report)."""
    if report is None:
        return []
    out = []
    for ref, stats in report.features.items():
        rate = float(stats["rate"])
        out.append(
            Measurement(
                f"skew:{ref}",
                rate,
                rate > threshold,
                rate <= _CLEAR_FACTOR * threshold,
                threshold,
                f"feature skew: {ref} was served a value other than the offline store's at "
                f"request time in {rate:.1%} of {stats['rows']:,} sampled requests (alert "
                f"above {threshold:.1%}); materialize the view (`keel features materialize`) "
                "or check that online and offline compute it alike",
            )
        )
    return out


# -- the sample ----------------------------------------------------------------------------------


def _columns(layout: FeatureLayout) -> list[str]:
    names = [*layout.join_keys, *layout.request_fields, *layout.columns]
    return ["request_id", "time", "route", *(INPUT_PREFIX + n for n in dict.fromkeys(names))]


def _batches(
    client: Client, deployment: str, columns: list[str], start_ms: int, end_ms: int
) -> Iterator[pa.RecordBatch]:
    """The window's batches with ``columns`` (a column no file of the window has is null)."""
    from keel.predictions import PredictionReader

    settings = client.settings
    reader = PredictionReader(settings.artifacts_url, s3_endpoint_url=settings.s3_endpoint_url)
    try:
        yield from reader.batches(deployment, start=start_ms, end=end_ms, columns=columns)
        return
    except InvalidInput:  # a column the window never logged (features declared since)
        pass
    for batch in reader.batches(deployment, start=start_ms, end=end_ms):
        arrays = [
            batch.column(c) if c in batch.schema.names else pa.nulls(batch.num_rows)
            for c in columns
        ]
        yield pa.RecordBatch.from_arrays(arrays, names=columns)


def _sample(
    client: Client,
    deployment: str,
    layout: FeatureLayout,
    start_ms: int,
    end_ms: int,
    size: int,
    report: SkewReport,
) -> tuple[pa.Table, int]:
    """Up to ``size`` comparable rows of the window, by seeded priority, and the window's rows.

    Every comparable row gets a random priority; the ``size`` lowest are kept as
    batches go by, so memory stays at one batch plus the sample.
    """
    columns = _columns(layout)
    keys = [INPUT_PREFIX + k for k in layout.join_keys]
    rng = np.random.default_rng(zlib.crc32(f"{deployment}:{end_ms}".encode()))
    kept: pa.Table | None = None
    priority = np.empty(0)
    total = 0
    for batch in _batches(client, deployment, columns, start_ms, end_ms):
        total += batch.num_rows
        mask = pc.not_equal(pc.fill_null(batch.column("route"), ""), "shadow")
        for key in keys:
            mask = pc.and_(mask, pc.is_valid(batch.column(key)))
        part = pa.Table.from_batches([batch]).filter(mask)
        if part.num_rows == 0:
            continue
        report.rows += part.num_rows
        kept = (
            part if kept is None else pa.concat_tables([kept, part], promote_options="permissive")
        )
        priority = np.concatenate([priority, rng.random(part.num_rows)])
        if kept.num_rows > size:
            keep = np.argpartition(priority, size - 1)[:size]
            kept, priority = kept.take(pa.array(keep)), priority[keep]
    if kept is None:
        return pa.table({c: pa.array([], pa.null()) for c in columns}), total
    order = pc.sort_indices(kept, sort_keys=[("time", "ascending")])
    return kept.take(order), total


def _offline(client: Client, layout: FeatureLayout, rows: pa.Table) -> pd.DataFrame:
    """The offline point-in-time value of each feature at each sampled row's request time."""
    import pandas as pd

    names = [*layout.join_keys, *(f for f in layout.request_fields if f not in layout.join_keys)]
    timestamp = _free_name("request_time", names)
    entity = pd.DataFrame(
        {
            **{n: rows.column(INPUT_PREFIX + n).to_pandas() for n in names},
            timestamp: rows.column("time").to_pandas(),
        }
    )
    result = client.features.get_historical_features(
        entity, list(layout.features), timestamp_column=timestamp
    )
    if not isinstance(result, pd.DataFrame):  # pragma: no cover - pandas is the default
        raise InvalidInput("get_historical_features returned no DataFrame for the skew check")
    return result


def _free_name(name: str, taken: Sequence[str]) -> str:
    while name in taken:
        name = f"_{name}"
    return name
