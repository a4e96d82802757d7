"""Feast's side of bench/features.py: runs inside Feast's own virtualenv, never imports Keel.

``bench/features.py`` writes the data and a JSON plan, then runs this file with
the interpreter of ``.venv-feast`` (``feast[redis]==0.67.0``) once per step::

    .venv-feast/bin/python bench/feast_side.py join PLAN.json
    .venv-feast/bin/python bench/feast_side.py materialize PLAN.json
    .venv-feast/bin/python bench/feast_side.py online PLAN.json
    .venv-feast/bin/python bench/feast_side.py teardown PLAN.json

Each step builds the feature store from the plan (a local file registry in the
plan's folder, the local provider, the ``file`` offline store, which is Feast's
Dask store, and the Redis online store), applies the entity and the feature views,
then times its one operation with ``perf_counter`` and prints one JSON line as its
last line of output: the figures, and the process's peak resident memory
(``VmHWM``) read right after the operation and before anything is written out
for the comparison. What each step does:

* ``join``: ``store.get_historical_features(entity_df, refs).to_df()``. The entity
  frame is read from Parquet and its timestamps set to ``pytz.UTC`` before the
  timer starts (Feast takes a row-by-row path for any other time zone object).
  The result is written to Parquet afterwards for the value check.
* ``materialize``: ``store.materialize(start, end, feature_views=…)``.
* ``online``: ``store.get_online_features(features, entity_rows=[{key: k}]).to_dict()``
  for one entity at a time, ``warm`` untimed reads, then ``rounds`` rounds of ``reads``
  timed ones; the values of the first ``sample`` keys are written out for the value
  check.
* ``teardown``: ``store.teardown()``, which deletes the project's Redis keys,
  then a count of any the project left behind.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

Plan = dict[str, Any]


def peak_mb() -> float:
    """This process's peak resident memory in MB (``VmHWM``: ``ru_maxrss`` survives exec)."""
    with open("/proc/self/status") as status:
        for text in status:
            if text.startswith("VmHWM:"):
                return int(text.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log(message: str) -> None:
    print(f"    [feast] {message}", file=sys.stderr, flush=True)


def build_store(plan: Plan) -> tuple[Any, list[Any]]:
    """The feature store of the plan, with its entity and views applied; (store, views)."""
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
    from feast.types import Float64

    repo = Path(plan["feast_repo"])
    repo.mkdir(parents=True, exist_ok=True)
    config = RepoConfig(
        project=plan["feast_project"],
        registry=str(repo / "registry.db"),
        provider="local",
        offline_store={"type": "file"},
        online_store={"type": "redis", "connection_string": plan["feast_redis"]},
        entity_key_serialization_version=3,
        repo_path=str(repo),
    )
    store = FeatureStore(config=config)
    entity = Entity(name=plan["entity"], join_keys=[plan["join_key"]], value_type=ValueType.INT64)
    views = [
        FeatureView(
            name=view["name"],
            entities=[entity],
            ttl=timedelta(seconds=plan["ttl_seconds"]),
            schema=[Field(name=f, dtype=Float64) for f in view["features"]],
            source=FileSource(
                name=f"{view['name']}_source",
                path=view["path"],
                timestamp_field=plan["timestamp_field"],
                created_timestamp_column=plan["created_field"],
            ),
            online=True,
        )
        for view in plan["views"]
    ]
    store.apply([entity, *views])
    return store, views


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def join(plan: Plan) -> dict[str, Any]:
    import pandas as pd
    import pytz

    store, _ = build_store(plan)
    step = plan["join"]
    entity_df = pd.read_parquet(step["entity_df"])
    entity_df["event_timestamp"] = entity_df["event_timestamp"].dt.tz_convert(pytz.UTC)
    ready_mb = peak_mb()
    _log(
        f"get_historical_features: {len(entity_df):,} entity rows, {len(step['features'])} features"
    )
    started = time.perf_counter()
    frame = store.get_historical_features(entity_df=entity_df, features=step["features"]).to_df()
    seconds = time.perf_counter() - started
    peak = peak_mb()
    rows = len(frame)
    frame.to_parquet(step["feast_out"], index=False)
    return {"seconds": seconds, "peak_mb": peak, "ready_mb": ready_mb, "rows": rows}


def materialize(plan: Plan) -> dict[str, Any]:
    store, views = build_store(plan)
    step = plan["materialize"]
    ready_mb = peak_mb()
    _log(f"materialize {len(views)} views")
    started = time.perf_counter()
    store.materialize(
        start_date=_utc(step["start_ms"]),
        end_date=_utc(step["end_ms"]),
        feature_views=[v.name for v in views],
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_mb": peak_mb(),
        "ready_mb": ready_mb,
        "keys": _project_keys(plan),
    }


def _project_keys(plan: Plan) -> int:
    """How many Redis keys the project holds (Feast ends each key with the project's name)."""
    import redis

    host, port, db = plan["redis_host"], plan["redis_port"], plan["redis_db"]
    client = redis.Redis(host=host, port=port, db=db)
    pattern = b"*" + plan["feast_project"].encode()
    return sum(1 for _ in client.scan_iter(pattern, count=10_000))


def online(plan: Plan) -> dict[str, Any]:
    store, _ = build_store(plan)
    step = plan["online"]
    key = plan["join_key"]
    features = step["features"]
    keys = json.loads(Path(step["keys"]).read_text())
    warm, reads, sample = step["warm"], step["reads"], step["sample"]

    def read(k: int) -> dict[str, list[Any]]:
        result: dict[str, list[Any]] = store.get_online_features(
            features=features, entity_rows=[{key: k}]
        ).to_dict()
        return result

    _log(f"get_online_features: {warm:,} warm-up reads, {step['rounds']} x {reads:,} timed")
    for k in keys[:warm]:
        read(k)
    rounds = []
    for _ in range(step["rounds"]):
        latencies = []
        for k in keys[warm : warm + reads]:
            started = time.perf_counter()
            read(k)
            latencies.append(time.perf_counter() - started)
        rounds.append(latencies)
    values = {}
    for k in keys[:sample]:
        row = read(k)
        values[str(k)] = {f.split(":", 1)[1]: row[f.split(":", 1)[1]][0] for f in features}
    Path(step["feast_out"]).write_text(json.dumps(values))
    return {"latencies_s": rounds, "peak_mb": peak_mb()}


def teardown(plan: Plan) -> dict[str, Any]:
    store, _ = build_store(plan)
    store.teardown()
    return {"keys_left": _project_keys(plan)}


STEPS = {"join": join, "materialize": materialize, "online": online, "teardown": teardown}


def main() -> None:
    if len(sys.argv) != 3 or sys.argv[1] not in STEPS:
        raise SystemExit(f"usage: feast_side.py {{{'|'.join(STEPS)}}} PLAN.json")
    import feast

    plan = json.loads(Path(sys.argv[2]).read_text())
    result = STEPS[sys.argv[1]](plan)
    result["version"] = feast.__version__
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
