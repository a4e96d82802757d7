"""The feature registry on SQLite and PostgreSQL: versions, audit, lookups, watermarks."""

from __future__ import annotations

import itertools
import re
import textwrap
import threading
import time
from pathlib import Path

import pytest

import keel
from _support.features import driver_stats_definitions, write_definitions
from keel.errors import Conflict, InvalidInput, NotFound
from keel.features.definitions import (
    Entity,
    FeatureView,
    Field,
    FileSource,
    OnDemandFeatureView,
    parse_feature_refs,
    spec_digest,
)
from keel.features.loading import Definitions, load_definitions
from keel.governance import audit

pytestmark = pytest.mark.parametrize("any_env", ["sqlite", "postgres"], indirect=True)


def write_defs(folder: Path, ttl_hours: int = 2, name: str = "defs.py") -> Path:
    return write_definitions(folder, driver_stats_definitions(ttl_hours=ttl_hours), name)


def entries(kind: str | None = None) -> list[audit.AuditEntry]:
    store = keel.Client().transport.store
    found = audit.list_entries(store, newest_first=False)
    return [e for e in found if kind is None or e.object_type == kind]


def feature_entries() -> list[audit.AuditEntry]:
    return [e for e in entries() if e.action.endswith(".apply")]


def test_apply_versions_each_definition_and_audits_it(any_env, tmp_path):
    client = keel.Client()
    result = client.features.apply(write_defs(tmp_path))

    assert [(d.kind, d.name, d.version) for d in result.created] == [
        ("entity", "driver", 1),
        ("feature_view", "driver_stats", 1),
        ("on_demand_feature_view", "per_km", 1),
    ]
    assert result.updated == [] and result.unchanged == []
    view = client.features.get("driver_stats")
    assert view.join_keys == ["driver_id"]
    assert view.spec["ttl_seconds"] == 7200
    assert view.spec["source"]["path"] == str(tmp_path / "data" / "stats")
    assert view.source_file == str(tmp_path / "defs.py")
    assert view.created_by == any_env.user
    logged = feature_entries()
    assert [(e.action, e.object_id) for e in logged] == [
        ("entity.apply", "driver/1"),
        ("feature_view.apply", "driver_stats/1"),
        ("on_demand_feature_view.apply", "per_km/1"),
    ]
    assert logged[1].after["digest"] == view.digest
    assert audit.verify(client.transport.store).ok


def test_reapplying_unchanged_definitions_writes_nothing(any_env, tmp_path):
    client = keel.Client()
    path = write_defs(tmp_path)
    client.features.apply(path)
    before = len(entries())

    again = client.features.apply(path)

    assert again.created == [] and again.updated == []
    assert [(d.name, d.version) for d in again.unchanged] == [
        ("driver", 1),
        ("driver_stats", 1),
        ("per_km", 1),
    ]
    assert len(entries()) == before
    assert [d.version for d in client.features.history("driver_stats")] == [1]


def test_a_changed_view_gets_the_next_version_and_the_rest_stay(any_env, tmp_path):
    client = keel.Client()
    client.features.apply(write_defs(tmp_path, ttl_hours=2))

    result = client.features.apply(write_defs(tmp_path, ttl_hours=5))

    assert [(d.name, d.version) for d in result.updated] == [("driver_stats", 2)]
    assert {d.name for d in result.unchanged} == {"driver", "per_km"}
    history = client.features.history("driver_stats")
    assert [(d.version, d.spec["ttl_seconds"]) for d in history] == [(1, 7200), (2, 18000)]
    assert client.features.get("driver_stats").version == 2
    assert client.features.get("driver_stats", 1).spec["ttl_seconds"] == 7200
    assert client.features.resolve("features:/driver_stats@1").version == 1
    assert client.features.resolve("features:/driver_stats").version == 2
    update = feature_entries()[-1]
    assert (update.action, update.object_id) == ("feature_view.apply", "driver_stats/2")
    assert update.before == {"version": 1, "digest": history[0].digest}
    assert audit.verify(client.transport.store).ok


def test_changing_an_entitys_keys_versions_the_views_over_it(any_env, tmp_path):
    client = keel.Client()
    path = write_defs(tmp_path)
    client.features.apply(path)
    path.write_text(path.read_text().replace('join_keys=["driver_id"]', 'join_keys=["driver"]'))

    result = client.features.apply(path)

    assert {(d.name, d.version) for d in result.updated} == {("driver", 2), ("driver_stats", 2)}
    assert client.features.get("driver_stats").join_keys == ["driver"]


def test_list_gives_the_latest_of_each_definition_by_kind(any_env, tmp_path):
    client = keel.Client()
    client.features.apply(write_defs(tmp_path, ttl_hours=1))
    client.features.apply(write_defs(tmp_path, ttl_hours=3))

    listed = client.features.list()

    assert [(d.kind, d.name, d.version) for d in listed] == [
        ("entity", "driver", 1),
        ("feature_view", "driver_stats", 2),
        ("on_demand_feature_view", "per_km", 1),
    ]
    assert [d.name for d in client.features.list("entity")] == ["driver"]
    with pytest.raises(InvalidInput, match="kind must be one of entity, feature_view"):
        client.features.list("view")


def test_unknown_names_and_versions_say_what_exists_and_how_to_fix(any_env, tmp_path):
    client = keel.Client()
    with pytest.raises(NotFound, match=r"there are no feature views yet.*keel features apply"):
        client.features.get("driver_stats")
    client.features.apply(write_defs(tmp_path))

    with pytest.raises(
        NotFound, match=r"no feature view 'drivr_stats' \(did you mean 'driver_stats'"
    ):
        client.features.get("drivr_stats")
    with pytest.raises(NotFound, match="'driver_stats' has no version 3; its versions are 1 to 1"):
        client.features.get("driver_stats", 3)
    with pytest.raises(NotFound, match="did you mean 'driver_stats'"):
        client.features.history("driver_stat")
    with pytest.raises(NotFound, match="no feature view or on-demand feature view 'per_kn'"):
        client.features.resolve("features:/per_kn")
    with pytest.raises(InvalidInput, match="expected a feature URI"):
        client.features.resolve("models:/driver_stats")
    with pytest.raises(InvalidInput, match="version must be a positive integer, got 0"):
        client.features.get("driver_stats", 0)


def test_views_for_resolves_views_and_on_demand_views_and_checks_features(any_env, tmp_path):
    client = keel.Client()
    client.features.apply(write_defs(tmp_path))

    found = client.features.views_for(
        parse_feature_refs(["driver_stats:trips", "per_km:rate_per_km", "driver_stats:conv_rate"])
    )

    assert {name: d.kind for name, d in found.items()} == {
        "driver_stats": "feature_view",
        "per_km": "on_demand_feature_view",
    }
    with pytest.raises(NotFound, match=r"unknown feature view 'driver_stat' \(did you mean"):
        client.features.views_for(parse_feature_refs(["driver_stat:trips"]))
    with pytest.raises(
        InvalidInput,
        match=r"feature view 'driver_stats' has no feature 'trip'; it has \['conv_rate', 'trips'\]",
    ):
        client.features.views_for(parse_feature_refs(["driver_stats:trip"]))
    with pytest.raises(InvalidInput, match="on-demand feature view 'per_km' has no feature 'km'"):
        client.features.views_for(parse_feature_refs(["per_km:km"]))


# -- bad definitions: the file and line ------------------------------------------------------


def test_a_view_over_an_unknown_entity_names_its_line(any_env, tmp_path):
    path = tmp_path / "defs.py"
    path.write_text(
        textwrap.dedent(
            """\
            from keel.features import Entity, FeatureView, Field, FileSource

            driver = Entity("driver")
            stats = FeatureView(
                "stats", entities=["drivr"], source=FileSource("x"),
                timestamp_field="ts", features=[Field("f")],
            )
            """
        )
    )
    with pytest.raises(
        InvalidInput, match=rf"^{re.escape(str(path))}:4: feature view 'stats' names unknown entity"
    ):
        keel.Client().features.apply(path)
    assert feature_entries() == []


def test_a_bad_dtype_names_its_line(any_env, tmp_path):
    path = tmp_path / "defs.py"
    path.write_text(
        "from keel.features import Entity, FeatureView, Field, FileSource\n"
        "e = Entity('e')\n"
        "v = FeatureView('v', entities=[e], source=FileSource('x'), timestamp_field='ts',\n"
        "                features=[Field('f', 'float')])\n"
    )
    with pytest.raises(
        InvalidInput,
        match=rf"^{re.escape(str(path))}:3: feature view 'v''s field 'f' has type 'float'",
    ):
        keel.Client().features.apply(path)


def test_a_syntax_error_names_its_line(any_env, tmp_path):
    path = tmp_path / "defs.py"
    path.write_text("from keel.features import Entity\n\ne = Entity('e'\n")
    with pytest.raises(InvalidInput, match=rf"^{re.escape(str(path))}:3: "):
        keel.Client().features.apply(path)


def test_a_definitions_file_imports_its_sibling_modules(any_env, tmp_path):
    # shared constants or transformations beside defs.py import as under `python defs.py`
    folder = tmp_path / "project_features"
    folder.mkdir()
    (folder / "feature_constants_sibling.py").write_text("TTL_HOURS = 5\nFEATURE = 'rate'\n")
    path = folder / "defs.py"
    path.write_text(
        textwrap.dedent(
            """\
            from datetime import timedelta

            from feature_constants_sibling import FEATURE, TTL_HOURS
            from keel.features import Entity, FeatureView, Field, FileSource

            driver = Entity("driver", join_keys=["driver_id"])
            stats = FeatureView("stats", entities=[driver], source=FileSource("data"),
                                timestamp_field="ts", features=[Field(FEATURE)],
                                ttl=timedelta(hours=TTL_HOURS))
            """
        )
    )
    keel.Client().features.apply(path)
    spec = keel.Client().features.get("stats").spec
    assert (spec["ttl_seconds"], [f["name"] for f in spec["features"]]) == (5 * 3600, ["rate"])


def test_a_file_that_defines_nothing_is_refused(any_env, tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("from keel.features import Entity\n\ndef make():\n    return Entity('e')\n")
    with pytest.raises(
        InvalidInput, match=r"empty\.py defines no Entity, FeatureView or on-demand"
    ):
        keel.Client().features.apply(path)


def test_a_missing_file_says_what_to_pass(any_env, tmp_path):
    with pytest.raises(NotFound, match=r"no definitions file at .*nope\.py; pass the \.py file"):
        keel.Client().features.apply(tmp_path / "nope.py")


def _view(name: str, entity: str | Entity, site: tuple[str, int] | None = None) -> FeatureView:
    return FeatureView(
        name,
        (entity,),
        FileSource("data"),
        "ts",
        (Field("f"),),
        site=site,
    )


def test_a_view_may_use_an_entity_applied_before(any_env, tmp_path):
    client = keel.Client()
    client.features.apply(write_defs(tmp_path))
    file = str(tmp_path / "more.py")

    result = client.features.apply(Definitions(file, (), (_view("more", "driver"),), ()))

    assert [(d.name, d.version) for d in result.created] == [("more", 1)]
    assert client.features.get("more").join_keys == ["driver_id"]


def test_a_view_over_an_entity_nowhere_is_refused_before_writing(any_env, tmp_path):
    client = keel.Client()
    file = str(tmp_path / "more.py")
    definitions = Definitions(file, (), (_view("more", "rider", (file, 7)),), ())

    with pytest.raises(
        InvalidInput, match=rf"^{re.escape(file)}:7: feature view 'more' names unknown entity"
    ):
        client.features.apply(definitions)
    with pytest.raises(NotFound):
        client.features.get("more")


def _fn(df):  # an on-demand function for the tests below
    return df


def test_an_on_demand_view_over_a_view_nowhere_is_refused(any_env, tmp_path):
    client = keel.Client()
    file = str(tmp_path / "odfv.py")
    source = _view("elsewhere", Entity("driver", ("driver_id",), site=None))
    odfv = OnDemandFeatureView("derived", (source,), (Field("g"),), _fn, site=(file, 3))

    with pytest.raises(
        InvalidInput,
        match=rf"^{re.escape(file)}:3: on-demand feature view 'derived' reads unknown feature view 'elsewhere'",
    ):
        client.features.apply(Definitions(file, (), (), (odfv,)))
    assert feature_entries() == []

    client.features.apply(write_defs(tmp_path))
    stats = _view("driver_stats", "driver")
    ok = OnDemandFeatureView("derived", (stats,), (Field("g"),), _fn, site=(file, 3))
    assert [d.name for d in client.features.apply(Definitions(file, (), (), (ok,))).created] == [
        "derived"
    ]


def test_views_and_on_demand_views_share_one_namespace_in_the_store(any_env, tmp_path):
    client = keel.Client()
    client.features.apply(write_defs(tmp_path))
    file = str(tmp_path / "clash.py")
    clash = _view("per_km", "driver", (file, 9))

    with pytest.raises(
        InvalidInput, match=rf"^{re.escape(file)}:9: 'per_km' is already an on-demand feature"
    ):
        client.features.apply(Definitions(file, (), (clash,), ()))


def test_specs_from_elsewhere_are_checked(any_env):
    with pytest.raises(InvalidInput, match=r"kind one of entity, feature_view.*got 'table'"):
        keel.Client().features.apply_specs([{"kind": "table", "name": "x"}], None)
    with pytest.raises(InvalidInput, match=r"the spec of feature view 'v' lacks \['entities'"):
        keel.Client().features.apply_specs([{"kind": "feature_view", "name": "v"}], None)
    entity = {"kind": "entity", "name": "e", "join_keys": ["e"], "dtype": "int64"}
    with pytest.raises(InvalidInput, match=r"name \['entity e'\] more than once"):
        keel.Client().features.apply_specs([entity, dict(entity)], None)


# -- many views, concurrent applies ----------------------------------------------------------


def write_many(
    folder: Path, views: int = 100, entities: int = 10, ttl: str = "days", name: str = "many.py"
) -> Path:
    lines = ["from datetime import timedelta", "from keel.features import *", ""]
    for e in range(entities):
        lines.append(f"e{e} = Entity('entity_{e}', join_keys=['key_{e}'])")
    for v in range(views):
        features = ", ".join(f"Field('f{i}')" for i in range(10))
        lines.append(
            f"v{v} = FeatureView('view_{v}', entities=[e{v % entities}], "
            f"source=FileSource('data/view_{v}'), timestamp_field='ts', "
            f"features=[{features}], ttl=timedelta({ttl}={1 + v % 7}))"
        )
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_applying_a_hundred_views_versions_them_all(any_env, tmp_path):
    client = keel.Client()
    client.features.list()  # open the store first: the figure below is the apply alone
    path = write_many(tmp_path)

    started = time.perf_counter()
    result = client.features.apply(path)
    seconds = time.perf_counter() - started

    assert len(result.created) == 110 and result.updated == [] and result.unchanged == []
    views = client.features.list("feature_view")
    assert [d.name for d in views] == sorted(f"view_{v}" for v in range(100))
    assert client.features.get("view_42").join_keys == ["key_2"]
    assert client.features.get("view_42").spec["ttl_seconds"] == 86400 * (1 + 42 % 7)
    assert len(feature_entries()) == 110
    again = client.features.apply(load_definitions(path))
    assert len(again.unchanged) == 110 and again.changed == []
    print(f"\napply of 100 views + 10 entities: {seconds * 1000:.0f} ms (load and write)")
    assert audit.verify(client.transport.store).ok


def test_concurrent_applies_of_one_file_number_each_version_once(any_env, tmp_path):
    first = load_definitions(write_many(tmp_path, 30, 3))
    second = load_definitions(write_many(tmp_path, 30, 3, ttl="hours", name="changed.py"))
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def apply(definitions: Definitions) -> None:
        client = keel.Client()
        barrier.wait()
        try:
            client.features.apply(definitions)
        except BaseException as exc:  # collected: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=(d,)) for d in (first, first, second, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert [e for e in errors if not isinstance(e, Conflict)] == []
    client = keel.Client()
    stored = 0
    for v in range(30):
        history = client.features.history(f"view_{v}")
        # numbers run 1..n without a gap or a repeat, and each version differs from the last
        assert [d.version for d in history] == list(range(1, len(history) + 1))
        assert all(a.digest != b.digest for a, b in itertools.pairwise(history))
        assert 1 <= len(history) <= 4
        stored += len(history)
    # every apply is whole: the latest versions are all of one file, the last to commit
    latest = {d.name: d.digest for d in client.features.list("feature_view")}
    assert latest in [
        {s["name"]: spec_digest(s) for s in d.specs() if s["kind"] == "feature_view"}
        for d in (first, second)
    ]
    logged = [e for e in feature_entries() if e.object_type == "feature_view"]
    assert len(logged) == stored  # one audit entry per version, none for a rolled-back try
    assert audit.verify(client.transport.store).ok


# -- watermarks ------------------------------------------------------------------------------


def test_a_watermark_never_moves_back_and_counts_add_up(any_env):
    features = keel.Client().features
    assert features.watermark("stats", "sqlite:///online.db") is None

    first = features.set_watermark(
        "stats",
        "sqlite:///online.db",
        view_version=1,
        last_event_ms=1_000,
        last_created_ms=None,
        rows=10,
    )
    assert (first.last_event_ms, first.last_created_ms, first.rows_written, first.runs) == (
        1_000,
        None,
        10,
        1,
    )
    older = features.set_watermark(
        "stats",
        "sqlite:///online.db",
        view_version=1,
        last_event_ms=500,
        last_created_ms=700,
        rows=3,
    )
    assert (older.last_event_ms, older.last_created_ms, older.rows_written, older.runs) == (
        1_000,
        700,
        13,
        2,
    )
    # a run of a new view version rebuilt the view: its (older) times stand as given
    rebuilt = features.set_watermark(
        "stats",
        "sqlite:///online.db",
        view_version=2,
        last_event_ms=600,
        last_created_ms=700,
        rows=0,
    )
    assert (rebuilt.view_version, rebuilt.last_event_ms, rebuilt.last_created_ms) == (2, 600, 700)
    older = features.set_watermark(
        "stats",
        "sqlite:///online.db",
        view_version=2,
        last_event_ms=1_000,
        last_created_ms=None,
        rows=0,
    )
    empty = features.set_watermark(
        "stats",
        "sqlite:///online.db",
        view_version=2,
        last_event_ms=None,
        last_created_ms=None,
        rows=0,
    )
    assert (empty.last_event_ms, empty.last_created_ms, empty.runs) == (1_000, 700, 5)
    newer = features.set_watermark(
        "stats",
        "sqlite:///online.db",
        view_version=2,
        last_event_ms=2_000,
        last_created_ms=800,
        rows=1,
    )
    assert (newer.last_event_ms, newer.last_created_ms, newer.rows_written) == (2_000, 800, 14)
    assert features.watermark("stats", "sqlite:///online.db") == newer
    assert features.watermark("stats", "redis://127.0.0.1:6379/0") is None
    other = features.set_watermark(
        "stats",
        "redis://127.0.0.1:6379/0",
        view_version=2,
        last_event_ms=5,
        last_created_ms=None,
        rows=1,
    )
    assert [(w.store, w.last_event_ms) for w in features.watermarks()] == [
        ("redis://127.0.0.1:6379/0", 5),
        ("sqlite:///online.db", 2_000),
    ]
    assert other.runs == 1
    with pytest.raises(InvalidInput, match="rows must be a non-negative integer, got -1"):
        features.set_watermark(
            "stats", "x", view_version=1, last_event_ms=1, last_created_ms=None, rows=-1
        )


def test_concurrent_watermark_writes_keep_the_newest_time_and_every_count(any_env):
    features = keel.Client().features
    features.set_watermark("v", "s", view_version=1, last_event_ms=0, last_created_ms=0, rows=0)
    barrier = threading.Barrier(8)

    def run(i: int) -> None:
        client = keel.Client()
        barrier.wait()
        for j in range(5):
            client.features.set_watermark(
                "v", "s", view_version=1, last_event_ms=i * 100 + j, last_created_ms=j, rows=1
            )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    mark = features.watermark("v", "s")
    assert mark is not None
    assert (mark.last_event_ms, mark.last_created_ms, mark.rows_written, mark.runs) == (
        704,
        4,
        40,
        41,
    )
