"""``keel models check``: measure a registered version on a holdout and apply gates."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.checks.gates import CheckReport, Rules, evaluate, load_rules
from keel.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from keel.registry.client import RegistryClient


__all__ = ["check_model_version", "latest_check", "read_columns", "read_table"]


def _table_kind(file: Path) -> str:
    if not file.exists():
        raise InvalidInput(f"data file {file} does not exist")
    suffix = file.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt"):
        return "csv"
    raise InvalidInput(f"data file {file} must be .parquet or .csv, got {suffix or 'no suffix'!r}")


def read_table(path: str | os.PathLike[str]) -> Any:
    """A Parquet or CSV file as a DataFrame."""
    import pandas as pd

    file = Path(path)
    if _table_kind(file) == "parquet":
        return pd.read_parquet(file)
    return pd.read_csv(file)


def read_columns(path: str | os.PathLike[str]) -> list[str]:
    """The column names of a Parquet or CSV file, reading only its schema or header."""
    file = Path(path)
    if _table_kind(file) == "parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(file)
        # A pandas index stored with the table comes back as the index, not as a column.
        index = {
            c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)
        }
        return [str(name) for name in schema.names if name not in index]
    import pandas as pd

    return [str(name) for name in pd.read_csv(file, nrows=0).columns]


def _baseline_uri(name: str, against: str) -> str:
    return f"models:/{name}/{against}" if against.isdigit() else f"models:/{name}@{against}"


def check_model_version(
    name: str,
    version: int,
    data: str | os.PathLike[str] | Any,
    target: str,
    rules: Rules | str | os.PathLike[str] | None = None,
    *,
    against: str | None = None,
    client: RegistryClient | None = None,
    record: bool = True,
) -> CheckReport:
    """Evaluate ``models:/name/version`` on ``data`` and decide the gates.

    Args:
        data: a DataFrame, or the path of a Parquet or CSV file.
        target: the label column in ``data``.
        rules: a :class:`Rules`, a YAML/JSON rules file, or ``None`` (measure only).
        against: an alias (``champion``) or version number to compare with on the same rows.
        record: store the report with the version (for model cards and history).
    """
    from keel.artifacts import hash_bytes
    from keel.client import Client
    from keel.models import load_model
    from keel.models.signature import enforce

    client = client or Client().registry
    frame = data if not isinstance(data, (str, os.PathLike)) else read_table(data)
    parsed = rules if isinstance(rules, Rules) else load_rules(rules)
    candidate = client.get_model_version(name, version)
    model = load_model(candidate.uri)
    baseline = None
    base_version: int | None = None
    against_info = None
    if against is not None:
        try:
            base_version = client.resolve_model(_baseline_uri(name, against)).version
        except NotFound:
            base_version = None
        if base_version is None:
            raise NotFound(f"nothing to check against: model {name!r} has no {against!r}")
        baseline = load_model(f"models:/{name}/{base_version}")
        against_info = {"ref": against, "version": base_version}
    signature = getattr(model, "signature", None)
    validate = None
    if signature is not None and getattr(signature, "inputs", None) is not None:

        def validate(features: Any) -> None:
            enforce(signature.inputs, features)

    report = evaluate(model, frame, target, parsed, baseline=baseline, validate=validate)
    report.model, report.version, report.against = name, candidate.version, against_info
    if record:
        import pandas as pd

        data_digest = hash_bytes(
            pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
        )
        # the report is an artifact: stored first (through the blob routes on a server),
        # so the check's row only ever names bytes that are there
        blob = client.artifacts.put_json(report.to_dict())
        client.record_check(
            name,
            candidate.version,
            against_version=base_version,
            passed=report.passed,
            data_digest=data_digest,
            report_digest=blob.digest,
        )
    return report


def latest_check(client: RegistryClient, name: str, version: int) -> dict[str, Any] | None:
    """The most recent recorded check report of a version, if any."""
    checks = client.list_checks(name, version)
    if not checks:
        return None
    last = checks[-1]
    report = client.artifacts.get_json(last.report_digest)
    report["checked_at"] = last.created_at
    report["checked_by"] = last.created_by
    return dict(report)
