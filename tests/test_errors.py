"""The error tree: every Keel error hangs on the right branch and is drawn in ``keel.errors``."""

from __future__ import annotations

import keel.errors
from keel.errors import InvalidInput, KeelError, TooLarge, Unprocessable, UserError
from keel.pipelines import StepFailed


def test_a_failed_step_is_a_user_error_the_tree_draws():
    assert issubclass(StepFailed, UserError)
    assert StepFailed.status_code == 500
    assert "StepFailed" in (keel.errors.__doc__ or "")


def test_serving_errors_live_in_keel_errors_with_their_status():
    from keel import asgi
    from keel.serving import app

    # the body limit's 413 is raised by the shared reader the serving app calls
    assert app.Unprocessable is Unprocessable and asgi.TooLarge is TooLarge
    assert app.read_body is asgi.read_body
    assert issubclass(Unprocessable, InvalidInput) and Unprocessable.status_code == 422
    assert issubclass(TooLarge, InvalidInput) and TooLarge.status_code == 413


def test_every_error_class_is_drawn_in_the_tree():
    doc = keel.errors.__doc__ or ""
    classes = [n for n in keel.errors.__all__ if isinstance(getattr(keel.errors, n), type)]
    assert set(keel.errors.__all__) - set(classes) == {"from_os_error"}  # the one function
    for name in classes:
        assert issubclass(getattr(keel.errors, name), KeelError)
        assert f" {name} " in doc or f"\n    {name}\n" in doc, name
