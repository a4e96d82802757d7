"""Other tools' formats: importing their history into Keel.

``import_mlflow`` brings an MLflow tracking database and its artifacts over
(``keel import mlflow``); :class:`ImportSummary` says what came, what was
updated and what had no place in Keel.
"""

from __future__ import annotations

from keel.interop.mlflow_import import ImportSummary, import_mlflow

__all__ = ["ImportSummary", "import_mlflow"]
