"""Event kinds are checked where events live, so the library and the CLI refuse alike."""

from __future__ import annotations

import pytest

from keel.automation import EVENT_KINDS, history
from keel.automation.events import check_kinds
from keel.errors import InvalidInput


def test_check_kinds_accepts_every_event_kind():
    assert check_kinds(iter(EVENT_KINDS)) == EVENT_KINDS


def test_check_kinds_lists_the_valid_kinds_for_an_unknown_one():
    with pytest.raises(
        InvalidInput,
        match=r"^unknown event kind\(s\) promote, trigger; expected triggered, retrain_started, ",
    ):
        check_kinds(["triggered", "trigger", "promote"])


def test_history_refuses_an_unknown_kind_instead_of_returning_nothing(any_env):
    assert history(kinds=("promoted",)) == []
    with pytest.raises(InvalidInput, match=r"unknown event kind\(s\) promote;"):
        history(kinds=("promote",))
