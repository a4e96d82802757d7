"""Model packages: flavors, signatures, safe serialization and integrity checks.

::

    with keel.start_run():
        info = keel.models.log_model(clf, "model", input_example=X_train[:5])
    model = keel.models.load_model(info.uri)      # verified before anything is deserialized
    model.predict(X_test)                          # checked against the signature

Names are loaded on first use, so ``import keel.models`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from keel.lazy import lazy_exports

__all__ = [
    "ColSpec",
    "KeelWarning",
    "LoadedModel",
    "ModelInfo",
    "Schema",
    "Signature",
    "TensorSpec",
    "infer_signature",
    "load_model",
    "log_model",
]

_EXPORTS = {
    "ColSpec": "keel.models.signature",
    "KeelWarning": "keel.models.warning",
    "LoadedModel": "keel.models.api",
    "ModelInfo": "keel.models.api",
    "Schema": "keel.models.signature",
    "Signature": "keel.models.signature",
    "TensorSpec": "keel.models.signature",
    "infer_signature": "keel.models.signature",
    "load_model": "keel.models.api",
    "log_model": "keel.models.api",
}

if TYPE_CHECKING:
    from keel.models.api import LoadedModel, ModelInfo, load_model, log_model
    from keel.models.signature import ColSpec, Schema, Signature, TensorSpec, infer_signature
    from keel.models.warning import KeelWarning


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
