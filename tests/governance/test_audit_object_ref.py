"""``TYPE:ID`` object references for filtering the audit log."""

from __future__ import annotations

import pytest

from keel.errors import InvalidInput
from keel.governance.audit import parse_object_ref


def test_an_object_ref_splits_at_the_first_colon():
    assert parse_object_ref("alias:churn@champion") == ("alias", "churn@champion")
    assert parse_object_ref("run:ab12*") == ("run", "ab12*")
    assert parse_object_ref("deployment:a:b") == ("deployment", "a:b")


@pytest.mark.parametrize("ref", ["churn", ":churn", "alias:", ""])
def test_an_object_ref_without_type_or_id_shows_the_form(ref):
    with pytest.raises(
        InvalidInput, match=r"^an audit object must be TYPE:ID such as alias:churn@champion"
    ):
        parse_object_ref(ref)
