"""Helpers shared by the test suite.

They live in one package so that their module names cannot clash with each other
or with test modules: without ``__init__.py`` files, pytest imports every test
folder's modules under their bare names, in one namespace. ``tests/`` is on
``sys.path`` because the root ``conftest.py`` sits in it (pytest's default
``prepend`` import mode), so any test or conftest imports ``_support.<module>``.

- ``cli``: the installed ``keel`` command as a child process (``run_keel``, and
  the command and environment for ``subprocess.Popen``).
- ``network``: a free loopback port.
- ``monitoring``: feature frames, a prediction-log writer and a webhook receiver.
- ``models``: models registered for the check and model-card tests.
- ``serving``: a registered model and a real uvicorn server on a free port.
- ``mlflow``: the mlflow client's virtualenv and a script run in it (``run_mlflow``).
- ``features``: feature-store definitions files, Parquet sources, online store URLs
  and a registered champion model.
"""
