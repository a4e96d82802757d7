"""The recorded checks of versions (``keel models check``), inside the registry's transactions.

A row names a report already in the artifact store, and only a report that says
what the row says: the same model, version, verdict and baseline version. The row
and its audit entry are written in the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from keel.artifacts import ArtifactStore, check_digest
from keel.errors import InvalidInput, NotFound
from keel.governance import audit
from keel.registry.entities import ModelCheck
from keel.store import schema as s

__all__ = ["insert", "of_version", "stored_report"]


def stored_report(artifacts: ArtifactStore, check: ModelCheck) -> dict[str, Any]:
    """The report ``check`` names, once it is in ``artifacts`` and reports this check.

    Raises:
        InvalidInput: a malformed digest, or a report of something else.
        NotFound: the store does not hold the report.
    """
    for field, digest in (
        ("data_digest", check.data_digest),
        ("report_digest", check.report_digest),
    ):
        try:
            check_digest(digest)
        except InvalidInput as exc:
            raise InvalidInput(f"{field}: {exc}") from None
    where = f"{check.name}/{check.version}"
    if not artifacts.exists(check.report_digest):
        raise NotFound(
            f"the artifact store {artifacts.url} does not hold report {check.report_digest} "
            f"of the check of {where}; store the report first (put_json), then record the check"
        )
    try:
        report = artifacts.get_json(check.report_digest)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise InvalidInput(
            f"object {check.report_digest} is not a check report (a JSON object); store the "
            "report of keel.checks.check_model_version"
        )
    reported_against = (report.get("against") or {}).get("version")
    says = (report.get("model"), report.get("version"), report.get("passed"), reported_against)
    expected = (check.name, check.version, check.passed, check.against_version)
    if says != expected:
        raise InvalidInput(
            f"report {check.report_digest} is of model {says[0]!r} version {says[1]} "
            f"(passed={says[2]}, against version {says[3]}), not of the check recorded for "
            f"{check.name!r} version {check.version} (passed={check.passed}, against version "
            f"{check.against_version})"
        )
    return report


def insert(conn: Connection, model_id: int, check: ModelCheck, report: dict[str, Any]) -> None:
    """Write ``check``'s row and its audit entry in ``conn``'s transaction."""
    conn.execute(
        s.model_checks.insert().values(
            model_id=model_id,
            version=check.version,
            against_version=check.against_version,
            passed=check.passed,
            data_digest=check.data_digest,
            report_digest=check.report_digest,
            created_at=check.created_at,
            created_by=check.created_by,
        )
    )
    audit.record(
        conn,
        actor=check.created_by,
        action="model_version.check",
        object_type="model_version",
        object_id=f"{check.name}/{check.version}",
        after={
            "passed": check.passed,
            "report_digest": check.report_digest,
            "against": report.get("against"),
        },
    )


def of_version(conn: Connection, name: str, model_id: int, version: int) -> list[ModelCheck]:
    """The checks recorded for one version, oldest first."""
    rows = conn.execute(
        select(s.model_checks)
        .where(s.model_checks.c.model_id == model_id, s.model_checks.c.version == version)
        .order_by(s.model_checks.c.id)
    ).all()
    return [
        ModelCheck(
            name,
            r.version,
            r.against_version,
            bool(r.passed),
            r.data_digest,
            r.report_digest,
            r.created_at,
            r.created_by,
        )
        for r in rows
    ]
