"""The recorded compilations of versions (``keel models compile``), inside the registry's
transactions.

A row names a parity report already in the artifact store, and only a report that says
what the row says: the same model, version, target and verdict. A row that names a
compiled package names a folder manifest the store holds, so a runtime that picks the
row finds every file. The row, its lineage edge (the compiled package is derived from
the version) and its audit entry are written in the caller's transaction.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from keel.artifacts import ArtifactStore, check_digest
from keel.errors import InvalidInput, NotFound
from keel.governance import audit
from keel.registry.entities import ModelCompilation
from keel.store import schema as s

__all__ = ["TARGETS", "check_target", "insert", "of_version", "stored_report"]

#: What ``keel models compile --to`` converts to.
TARGETS = ("onnx", "treelite")


def check_target(target: Any) -> str:
    if target not in TARGETS:
        raise InvalidInput(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    return str(target)


def stored_report(artifacts: ArtifactStore, compilation: ModelCompilation) -> dict[str, Any]:
    """The parity report ``compilation`` names, once the store holds it (and the package).

    Raises:
        InvalidInput: a malformed digest, a report of something else, or a package
            recorded for a compilation that did not pass.
        NotFound: the store lacks the report or the package's manifest.
    """
    where = f"{compilation.name}/{compilation.version}"
    digests = [("report_digest", compilation.report_digest)]
    if compilation.package_digest is not None:
        digests.append(("package_digest", compilation.package_digest))
    for field, digest in digests:
        try:
            check_digest(digest)
        except InvalidInput as exc:
            raise InvalidInput(f"{field}: {exc}") from None
        if not artifacts.exists(digest):
            raise NotFound(
                f"the artifact store {artifacts.url} does not hold the {field.split('_')[0]} "
                f"{digest} of the compilation of {where}; store it first, then record it"
            )
    if compilation.passed and compilation.package_digest is None:
        raise InvalidInput(f"a passed compilation of {where} must name its compiled package")
    if compilation.package_digest is not None:
        artifacts.read_manifest(compilation.package_digest)  # a folder manifest, not any blob
    try:
        report = artifacts.get_json(compilation.report_digest)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise InvalidInput(
            f"object {compilation.report_digest} is not a parity report (a JSON object); "
            "store the report keel.models.compile_version wrote"
        )
    says = (report.get("model"), report.get("version"), report.get("target"), report.get("passed"))
    expected = (compilation.name, compilation.version, compilation.target, compilation.passed)
    if says != expected:
        raise InvalidInput(
            f"report {compilation.report_digest} is of model {says[0]!r} version {says[1]} "
            f"(target {says[2]!r}, passed={says[3]}), not of the compilation recorded for "
            f"{compilation.name!r} version {compilation.version} (target "
            f"{compilation.target!r}, passed={compilation.passed})"
        )
    return report


def insert(
    conn: Connection, model_id: int, compilation: ModelCompilation, report: dict[str, Any]
) -> None:
    """Write ``compilation``'s row, its lineage edge and its audit entry in ``conn``."""
    from keel.pipelines.lineage import Edge, add_edges

    c = compilation
    conn.execute(
        s.model_compilations.insert().values(
            model_id=model_id,
            version=c.version,
            target=c.target,
            passed=c.passed,
            package_digest=c.package_digest,
            report_digest=c.report_digest,
            created_at=c.created_at,
            created_by=c.created_by,
        )
    )
    if c.package_digest is not None:
        # the compiled package is an artifact derived from the version (label: its target)
        edge = Edge(
            f"models:/{c.name}/{c.version}", f"artifacts:/{c.package_digest}", "compiled", c.target
        )
        add_edges(conn, [edge])
    audit.record(
        conn,
        actor=c.created_by,
        action="model_version.compile",
        object_type="model_version",
        object_id=f"{c.name}/{c.version}",
        after={
            "target": c.target,
            "passed": c.passed,
            "package_digest": c.package_digest,
            "report_digest": c.report_digest,
            "reason": report.get("reason"),
        },
    )


def of_version(conn: Connection, name: str, model_id: int, version: int) -> list[ModelCompilation]:
    """The compilations recorded for one version, oldest first."""
    t = s.model_compilations
    rows = conn.execute(
        select(t).where(t.c.model_id == model_id, t.c.version == version).order_by(t.c.id)
    ).all()
    return [
        ModelCompilation(
            name,
            r.version,
            r.target,
            bool(r.passed),
            r.package_digest,
            r.report_digest,
            r.created_at,
            r.created_by,
        )
        for r in rows
    ]
