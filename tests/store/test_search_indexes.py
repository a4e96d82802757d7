"""Run search reads covering indexes, and an upgraded store gains them with its runs intact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, inspect

from keel.store import Store, normalize_url
from keel.store import schema as s
from keel.store.migrate import upgrade
from keel.tracking.client import TrackingClient
from keel.tracking.entities import Metric

FILTER = "metrics.m0 > 0.5 and params.model != 'rf'"


def _log_runs(client: TrackingClient, count: int) -> list[str]:
    experiment = client.create_experiment("search")
    ids = []
    for n in range(count):
        run = client.create_run(experiment, capture=False)
        client.log_batch(
            run.id,
            metrics=[Metric("m0", n / count, 0, 0), Metric("m1", 1 - n / count, 0, 0)],
            params={"model": ("rf", "gb")[n % 2], "depth": n},
        )
        ids.append(run.id)
    return ids


def _plans(store: Store, search: Any) -> list[str]:
    """The query plan of every statement ``search()`` runs (SQLite's EXPLAIN QUERY PLAN)."""
    statements: list[tuple[str, Any]] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        statements.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", seen)
    try:
        search()
    finally:
        event.remove(store.engine, "before_cursor_execute", seen)
    details = []
    with store.engine.connect() as conn:
        for statement, parameters in statements:
            if statement.lstrip().upper().startswith("SELECT"):
                plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                details.extend(row[3] for row in plan)
    return details


def test_a_filtered_search_and_its_load_read_covering_indexes_on_sqlite(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'keel.db'}")
    client = TrackingClient(store=store)
    _log_runs(client, 40)
    details = _plans(
        store, lambda: client.search_runs_frame(filter_string=FILTER, order_by="metrics.m1 DESC")
    )
    for used in (
        "COVERING INDEX ix_latest_metrics_key_value_run",  # the metric filter
        "COVERING INDEX ix_params_key_value_run",  # the param filter
        "COVERING INDEX ix_latest_metrics_run_key_value",  # the order and the metrics' load
        "COVERING INDEX ix_params_run_key_value",  # the params' load
    ):
        assert any(used in detail for detail in details), (used, details)
    store.dispose()


def test_upgrading_a_store_with_runs_adds_the_indexes_and_keeps_every_run(empty_store_url):
    engine = create_engine(normalize_url(empty_store_url))
    with engine.connect() as conn:
        upgrade(conn, "0009")
        conn.execute(s.experiments.insert().values(id=1, name="old", created_at=0))
        for n in range(6):
            run_id = f"{n:032x}"
            conn.execute(
                s.runs.insert().values(
                    id=run_id,
                    experiment_id=1,
                    name=f"run-{n}",
                    status="FINISHED",
                    start_time=n,
                    user_name="ana",
                )
            )
            conn.execute(
                s.params.insert().values(
                    run_id=run_id, key="model", value=("rf", "gb")[n % 2], value_num=None
                )
            )
            conn.execute(
                s.latest_metrics.insert().values(
                    run_id=run_id, key="m0", step=0, timestamp=0, value=n / 6
                )
            )
        conn.commit()
        assert "ix_latest_metrics_key_value" in {
            i["name"] for i in inspect(conn).get_indexes("latest_metrics")
        }
    engine.dispose()

    store = Store(empty_store_url)
    client = TrackingClient(store=store)
    page = client.search_runs(filter_string="metrics.m0 > 0.3 and params.model = 'gb'")
    assert [run.info.id for run in page.runs] == [f"{n:032x}" for n in (5, 3)]
    assert page.runs[0].params == {"model": "gb"} and page.runs[0].metrics == {"m0": 5 / 6}
    with store.read() as conn:
        names = {i["name"] for i in inspect(conn).get_indexes("latest_metrics")}
    assert "ix_latest_metrics_key_value" not in names
    assert {"ix_latest_metrics_key_value_run", "ix_latest_metrics_run_key_value"} <= names
    store.dispose()
