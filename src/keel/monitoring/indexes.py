"""Index aliases as monitored subjects: watches, freshness checks and the ``index_stale`` alert.

A RAG index alias (``kb@production``) goes stale when its source dataset gets a
version with other documents (:mod:`keel.llm.rag.freshness`). Monitoring learns
which aliases to watch from a **watch** (``keel rag watch kb@production
--max-age 7d``, or :func:`watch_index`): a stored setting per alias, like a
deployment's monitor settings, changed by compare-and-set and audited. It holds
``max_age`` (how long the index may lag its source before the alert fires; 0,
the default, fires at once), the alert's ``fire_after`` / ``resolve_after``
(1 and 1: a source change is a fact, not a noisy measurement) and the sinks
(``webhook_url`` with ``webhook_secret_env``, ``command``), exactly as a
deployment's settings name them.

A **check** (``keel rag check``, :func:`check_index` / :func:`check_indexes`, and
the automation controller for an index policy's alias) measures the alias's
freshness and moves the ``index_stale`` rule through the alert machinery of
:mod:`keel.monitoring.alerts`: the same state row under a row lock, the same
hysteresis, the same alert events, audit entries and sinks. The measured value is
the number of documents changed; the alert fires when the index is overdue and
resolves once it is fresh again (rebuilt on the newest source and its alias
moved), so one stale spell is one alert however often it is checked.

Watches and alerts are keyed by the alias's URI, ``rag:/kb@production``: the
subject of the alert rows (``keel monitor alerts rag:/kb@production``) and of the
stored watch. A deployment name can never be spelled so (no ``:``, ``/`` or
``@``), so the two never collide. Only an alias can be watched: a version never
changes, so its alert could never clear.

Watches and checks use the metadata store, so they run where it is: with a
local store, or on the host of ``keel server``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from keel.errors import Conflict, InvalidInput, KeelError, NotFound
from keel.monitoring.alerts import Alert, Measurement, Sink, deliver, evaluate
from keel.monitoring.clients import resolve_client
from keel.monitoring.windows import parse_window
from keel.uris import RAG, RagURI, parse_rag_uri

if TYPE_CHECKING:
    from keel.client import Client
    from keel.llm.rag.freshness import Freshness

__all__ = [
    "RULE",
    "IndexCheck",
    "IndexWatch",
    "check_index",
    "check_indexes",
    "get_index_watch",
    "index_subject",
    "list_index_watches",
    "unwatch_index",
    "watch_index",
]

#: The alert rule of a stale index.
RULE = "index_stale"
#: What a stored watch says it is (the settings row is shared with deployments).
_KIND = "rag-index"


def index_subject(ref: str | RagURI) -> RagURI:
    """The alias ``ref`` names, as the subject of watches and alerts (``rag:/kb@production``).

    Raises:
        InvalidInput: ``ref`` is not an index reference, or names a version, not an alias.
    """
    uri = ref if isinstance(ref, RagURI) else parse_rag_uri(ref)
    if uri.alias is None:
        raise InvalidInput(
            f"watch an index alias such as {uri.name}@production, not a version ({ref}): a "
            "version never changes, so its stale alert could never clear"
        )
    return uri


@dataclass(frozen=True)
class IndexWatch:
    """How an index alias is watched (the defaults until something is stored).

    Attributes:
        index: ``rag:/kb@production``.
        max_age: seconds the index may lag its source before ``index_stale`` fires.
        fire_after: consecutive overdue checks before the alert fires.
        resolve_after: consecutive fresh checks before it resolves.
        webhook_url, webhook_secret_env, command: the alert sinks, as a deployment's.
        revision: 0 for the defaults (not watched); counts stored changes.
    """

    index: str
    max_age: float = 0.0
    fire_after: int = 1
    resolve_after: int = 1
    webhook_url: str | None = None
    webhook_secret_env: str | None = None
    command: str | None = None
    revision: int = 0

    @property
    def watched(self) -> bool:
        return self.revision > 0

    def sinks(self) -> list[Sink]:
        """Where alerts go besides the store (built as a deployment's settings build them)."""
        return self.monitor_settings().sinks()

    def monitor_settings(self) -> Any:
        """The watch as the monitor's settings: its hysteresis and its alert sinks."""
        from keel.monitoring.settings import MonitorSettings

        return MonitorSettings(
            fire_after=self.fire_after,
            resolve_after=self.resolve_after,
            webhook_url=self.webhook_url,
            webhook_secret_env=self.webhook_secret_env,
            command=self.command,
        )

    def stored(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if k not in ("index", "revision")}
        return {"kind": _KIND, **doc}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "watched": self.watched}


_SETTABLE = (
    "max_age",
    "fire_after",
    "resolve_after",
    "webhook_url",
    "webhook_secret_env",
    "command",
)


def _check_watch(watch: IndexWatch) -> IndexWatch:
    from keel.monitoring.settings import check_settings

    check_settings(watch.monitor_settings())
    return watch


def _max_age(value: Any) -> float:
    # 0 means "at once"; a window is longer than zero, so zero in any unit is caught first
    if isinstance(value, str) and re.fullmatch(r"\s*0+\s*[smhdw]?\s*", value):
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    return parse_window(value) / 1000


def _local(client: Client, what: str) -> None:
    from keel.transport.http import HttpTransport

    if isinstance(client.transport, HttpTransport):
        raise InvalidInput(
            f"{what} needs the metadata store, and this client reaches Keel through keel server; "
            "run it on the server's host (with its KEEL_STORE_URL)"
        )


def _row(client: Client, subject: str) -> Any:
    from keel.store import schema as s

    with client.store.read() as conn:
        return conn.execute(
            select(s.monitor_settings).where(s.monitor_settings.c.deployment == subject)
        ).first()


def _watch(subject: str, row: Any) -> IndexWatch:
    if row is None:
        return IndexWatch(subject)
    doc = json.loads(row.settings)
    if doc.get("kind") != _KIND:  # pragma: no cover - no deployment is named rag:/…
        raise Conflict(f"the monitor settings of {subject!r} are not an index watch")
    values = {k: doc[k] for k in _SETTABLE if k in doc}
    return IndexWatch(subject, **values, revision=int(row.revision))


def get_index_watch(ref: str | RagURI, *, client: Client | None = None) -> IndexWatch:
    """The alias's stored watch, or the defaults (``revision`` 0) when it is not watched."""
    client = resolve_client(client)
    _local(client, "an index watch")
    subject = str(index_subject(ref))
    return _watch(subject, _row(client, subject))


def list_index_watches(*, client: Client | None = None) -> list[IndexWatch]:
    """Every watched index alias, by name."""
    from keel.store import schema as s

    client = resolve_client(client)
    _local(client, "listing index watches")
    table = s.monitor_settings
    with client.store.read() as conn:
        rows = conn.execute(
            select(table).where(table.c.deployment.startswith(RAG)).order_by(table.c.deployment)
        ).all()
    return [_watch(row.deployment, row) for row in rows]


def watch_index(
    ref: str | RagURI,
    *,
    client: Client | None = None,
    expected_revision: int | None = None,
    **changes: Any,
) -> IndexWatch:
    """Watch an index alias, or change how it is watched (only the given fields); audited.

    Args:
        ref: the alias, ``kb@production`` or ``rag:/kb@production``.
        expected_revision: the revision the caller read; a concurrent change makes this
            raise ``Conflict`` instead of overwriting it (default: the one read here).
        **changes: :class:`IndexWatch` fields: ``max_age`` (``"7d"``, seconds), ``fire_after``,
            ``resolve_after``, ``webhook_url``, ``webhook_secret_env``, ``command``.

    Raises:
        InvalidInput: an unknown field or a bad value.
        NotFound: no such index or alias.
        Conflict: the watch changed since ``expected_revision``.
    """
    from keel.governance import audit
    from keel.store import schema as s
    from keel.store.sql import insert_on_conflict, now_ms

    client = resolve_client(client)
    _local(client, "an index watch")
    uri = index_subject(ref)
    subject = str(uri)
    unknown = sorted(set(changes) - set(_SETTABLE))
    if unknown:
        raise InvalidInput(
            f"unknown index watch setting(s) {', '.join(unknown)}; valid: {', '.join(_SETTABLE)}"
        )
    if "max_age" in changes:
        changes["max_age"] = _max_age(changes["max_age"])
    client.rag.resolve(subject)  # the alias must exist: a typo must not start a watch
    current = _watch(subject, _row(client, subject))
    seen = current.revision if expected_revision is None else expected_revision
    wanted = _check_watch(replace(current, **changes))
    stored = json.dumps(wanted.stored(), sort_keys=True)
    table = s.monitor_settings
    with client.store.write() as conn:
        if seen == 0:
            moved = (
                conn.execute(
                    insert_on_conflict(conn, table)
                    .values(
                        deployment=subject,
                        settings=stored,
                        revision=1,
                        updated_at=now_ms(),
                        updated_by=client.user,
                    )
                    .on_conflict_do_nothing(index_elements=["deployment"])
                    .returning(table.c.revision)
                ).first()
                is not None
            )
        else:
            moved = (
                conn.execute(
                    update(table)
                    .where(table.c.deployment == subject, table.c.revision == seen)
                    .values(
                        settings=stored,
                        revision=seen + 1,
                        updated_at=now_ms(),
                        updated_by=client.user,
                    )
                ).rowcount
                == 1
            )
        if not moved:
            raise Conflict(
                f"the watch of {subject} changed since revision {seen}; read it again "
                f"(keel rag watch {uri.name}@{uri.alias} --show) and retry"
            )
        audit.record(
            conn,
            actor=client.user,
            action="monitor.watch_index",
            object_type="rag-index",
            object_id=subject,
            before=current.stored() if current.watched else None,
            after=wanted.stored(),
        )
    return replace(wanted, revision=seen + 1)


def unwatch_index(ref: str | RagURI, *, client: Client | None = None) -> IndexWatch:
    """Stop watching an index alias; audited. Its alerts stay, as history.

    Returns:
        The watch that was removed.

    Raises:
        NotFound: the alias is not watched.
    """
    from keel.governance import audit
    from keel.store import schema as s

    client = resolve_client(client)
    _local(client, "an index watch")
    subject = str(index_subject(ref))
    table = s.monitor_settings
    with client.store.write() as conn:
        row = conn.execute(select(table).where(table.c.deployment == subject)).first()
        if row is None:
            raise NotFound(f"{subject} is not watched; `keel rag watch --list` shows what is")
        current = _watch(subject, row)
        conn.execute(delete(table).where(table.c.deployment == subject))
        audit.record(
            conn,
            actor=client.user,
            action="monitor.unwatch_index",
            object_type="rag-index",
            object_id=subject,
            before=current.stored(),
            after=None,
        )
    return current


# -- checks --------------------------------------------------------------------------------------


@dataclass
class IndexCheck:
    """One freshness check of one alias and the alert transitions it made.

    Attributes:
        index: ``rag:/kb@production``.
        freshness: what was measured (``None`` when the check failed).
        alerts: what this check raised or resolved.
        error: why the check failed (:func:`check_indexes` goes on with the next alias).
    """

    index: str
    freshness: Freshness | None
    alerts: list[Alert] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "freshness": None if self.freshness is None else self.freshness.to_dict(),
            "alerts": [a.to_dict() for a in self.alerts],
            "error": self.error,
        }


def _measurement(freshness: Freshness) -> Measurement:
    message = freshness.summary()
    if freshness.stale:
        message += f"; rebuild: {freshness.rebuild_command}, then move {freshness.alias} to it"
    return Measurement(
        RULE,
        float(freshness.documents_changed),
        freshness.overdue,
        not freshness.stale,
        freshness.max_age,
        message,
    )


def check_index(
    ref: str | RagURI,
    *,
    client: Client | None = None,
    sinks: Sequence[Sink] | None = None,
    now: int | None = None,
) -> IndexCheck:
    """Measure an alias's freshness and move its ``index_stale`` alert; tell the sinks.

    An alias that is not watched is checked with the defaults (max age 0).

    Args:
        ref: the alias, ``kb@production``.
        sinks: where alerts go besides the store (default: the watch's).
        now: the check's time (ms since the epoch; default: now).

    Raises:
        InvalidInput: a version instead of an alias, or a client of ``keel server``.
        NotFound: no such index or alias, or its source dataset is gone.
    """
    from keel.llm.rag.freshness import index_freshness

    client = resolve_client(client)
    _local(client, "an index check")
    watch = get_index_watch(ref, client=client)
    freshness = index_freshness(client, watch.index, max_age=watch.max_age, now=now)
    with client.store.write() as conn:
        raised = evaluate(
            conn,
            deployment=watch.index,
            run_id=None,
            window_end=freshness.checked_at,
            measurements=[_measurement(freshness)],
            fire_after=watch.fire_after,
            resolve_after=watch.resolve_after,
            actor=client.user,
        )
    extra: Mapping[str, Any] = {"index": watch.index, "freshness": freshness.to_dict()}
    delivered = deliver(client.store, raised, watch.sinks() if sinks is None else sinks, extra)
    return IndexCheck(watch.index, freshness, delivered)


def check_indexes(*, client: Client | None = None, now: int | None = None) -> list[IndexCheck]:
    """Check every watched alias (see :func:`check_index`); one that fails does not stop the rest."""
    client = resolve_client(client)
    checks = []
    for watch in list_index_watches(client=client):
        try:
            checks.append(check_index(watch.index, client=client, now=now))
        except KeelError as exc:
            checks.append(IndexCheck(watch.index, None, error=str(exc)))
    return checks
