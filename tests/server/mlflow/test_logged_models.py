"""The library under MLflow's logged models: ``keel.tracking.logged_models`` on a real store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import keel
from keel.errors import Conflict, InvalidInput, NotFound
from keel.governance import audit
from keel.store import get_store
from keel.tracking.logged_models import LoggedModels


@pytest.fixture
def setup(tmp_path: Path) -> tuple[LoggedModels, int, str]:
    settings = keel.init(home=tmp_path / ".keel")
    tracking = keel.Client().tracking
    experiment = tracking.create_experiment("models")
    run = tracking.create_run(experiment, capture=False)
    return LoggedModels(get_store(settings), "ana"), experiment, run.id


def test_create_records_a_pending_model_and_audits_it(setup: tuple[LoggedModels, int, str]) -> None:
    models, experiment, run_id = setup
    model = models.create(experiment, "model", source_run_id=run_id, params={"alpha": 0.5})
    assert model.id.startswith("m-") and len(model.id) == 34
    assert models.get(model.id) == model
    assert (model.status, model.params, model.created_by) == ("PENDING", {"alpha": "0.5"}, "ana")
    entries = audit.list_entries(models.store, object_type="logged_model", object_id=model.id)
    assert [e.action for e in entries] == ["logged_model.create"]


def test_a_source_run_of_another_experiment_is_refused(
    setup: tuple[LoggedModels, int, str],
) -> None:
    models, _, run_id = setup
    other = keel.Client().tracking.create_experiment("elsewhere")
    with pytest.raises(InvalidInput, match="log the model in its run's experiment"):
        models.create(other, "model", source_run_id=run_id)
    with pytest.raises(NotFound, match="no run"):
        models.create(other, "model", source_run_id="0" * 32)


def test_finalize_tags_and_params(setup: tuple[LoggedModels, int, str]) -> None:
    models, experiment, run_id = setup
    model = models.create(experiment, "model", source_run_id=run_id)
    assert models.finalize(model.id, "READY").status == "READY"
    with pytest.raises(InvalidInput, match="PENDING, READY, FAILED"):
        models.finalize(model.id, "DONE")
    models.set_tags(model.id, {"a": "1", "b": "2"})
    assert models.delete_tag(model.id, "a").tags == {"b": "2"}
    with pytest.raises(NotFound, match="no tag 'a'"):
        models.delete_tag(model.id, "a")
    models.log_params(model.id, {"p": "1"})
    models.log_params(model.id, {"p": "1"})  # the same value again is fine
    with pytest.raises(Conflict, match="write-once"):
        models.log_params(model.id, {"p": "2"})
    with pytest.raises(InvalidInput, match="'m-' and 32 hex"):
        models.get("m-../../x")


def test_concurrent_tag_writers_lose_no_key(setup: tuple[LoggedModels, int, str]) -> None:
    models, experiment, run_id = setup
    model = models.create(experiment, "model", source_run_id=run_id)

    def write(n: int) -> None:
        for i in range(5):
            models.set_tags(model.id, {f"w{n}-{i}": str(i)})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(models.get(model.id).tags) == 20


def test_search_finds_models_by_experiment_and_run(setup: tuple[LoggedModels, int, str]) -> None:
    models, experiment, run_id = setup
    first = models.create(experiment, "a", source_run_id=run_id)
    second = models.create(experiment, "b")
    assert {m.id for m in models.search([experiment])} == {first.id, second.id}
    assert [m.id for m in models.search(source_run_id=run_id)] == [first.id]
    assert models.search([experiment + 1000]) == []
