"""``keel models compile`` on every mode, ``keel server`` included.

The compiled package and its parity report cross through the blob routes, the
compilation through the registry's routes, and the reference's dataset through
the data routes; on the server mode nothing here opens the metadata store.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import keel
from keel.config import Settings
from keel.errors import InvalidInput
from keel.models.compile import compile_version
from keel.registry.remote import RemoteRegistry

pytest.importorskip("skl2onnx", reason="compiling to ONNX needs keel[compile]")
pytest.importorskip("treelite", reason="compiling to treelite needs keel[compile]")


@pytest.mark.slow
def test_a_version_compiles_records_and_serves_its_compiled_form_on_every_mode(
    any_env: Settings, breast_cancer: Any
) -> None:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    X, y = breast_cancer
    with keel.start_run(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keel.log_dataset(X.assign(target=y), name="cancer-train")
        forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
        info = keel.log_model(forest, "model", input_example=X.head(5))
        pipeline = make_pipeline(LogisticRegression(max_iter=50)).fit(X, y)
        other = keel.log_model(pipeline, "pipeline", input_example=X.head(5))
    keel.register_model(info.uri, "cancer")
    keel.register_model(other.uri, "cancer")
    client = keel.Client()
    assert isinstance(client.registry, RemoteRegistry) == bool(any_env.server_url)

    result = compile_version("cancer", 1, to="onnx")

    assert result.passed
    assert result.report["data"] == [
        "input_example: 5 rows",
        f"datasets:/cancer-train@1 (reference): {len(X)} rows",
    ]
    [recorded] = client.registry.list_compilations("cancer", 1)
    assert recorded == result.compilation and recorded.created_by == client.user
    assert client.artifacts.get_json(recorded.report_digest) == result.report
    served = keel.load_model("models:/cancer/1", runtime="onnx")
    assert served.runtime == "onnx" and served.flavor == "onnx"
    native = keel.load_model("models:/cancer/1")
    assert np.array_equal(served.predict(X), native.predict(X))

    with pytest.raises(InvalidInput, match="cannot be compiled to treelite: a pipeline is not"):
        compile_version("cancer", 2, to="treelite")
    [refused] = client.registry.list_compilations("cancer", 2)
    assert (refused.passed, refused.package_digest) == (False, None)
    assert keel.load_model("models:/cancer/2", runtime="auto").runtime == "native"
