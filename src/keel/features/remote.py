"""The feature part over ``keel server``: definitions and watermarks as REST, the work here.

Definitions and materialization watermarks are rows of the server's metadata store,
so each of those methods is one request to :mod:`keel.server.routes.features`, where
the server checks the caller's role and runs :class:`keel.features.registry.FeatureRegistry`
as the token's user (who applied a version is never what the client says). Applying a
file loads it here (its own code runs in this process, as locally) and sends the specs.

Training sets and materialization run in this process, from specs fetched from the
server and the sources this process can reach; materialization writes to this
process's ``online_store`` setting and records its watermark on the server. An online
read with no ``store`` goes through the server's route and reads the *server's* online
store, so point both at one store (Redis, for a team); with ``store`` it reads that
store here.
"""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from keel.errors import InvalidInput
from keel.features.definitions import FeatureRef
from keel.features.entities import ApplyResult, FeatureDefinition, Watermark
from keel.features.part import Features
from keel.features.registry import check_kind
from keel.features.serving_read import OnlineFeatures
from keel.transport.http import HttpTransport
from keel.uris import parse_feature_uri
from keel.validation import check_name

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["RemoteFeatures", "online_features_from_wire"]


def _seg(text: Any) -> str:
    return quote(str(text), safe="")


def online_features_from_wire(data: dict[str, Any]) -> OnlineFeatures:
    """The :class:`OnlineFeatures` of the online route's answer.

    Timestamp features cross as ISO 8601 text; the columns the answer names in
    ``timestamp_columns`` are turned back into timezone-aware datetimes.

    Raises:
        InvalidInput: the answer does not have the route's shape.
    """
    try:
        columns = dict(data["features"])
        event_ms = dict(data["event_ms"])
        feature_columns = [str(c) for c in data["feature_columns"]]
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(
            "the online features answer needs features, event_ms and feature_columns"
        ) from None
    for column in data.get("timestamp_columns") or []:
        values = columns.get(column)
        if values is not None:
            columns[column] = [None if v is None else datetime.fromisoformat(v) for v in values]
    return OnlineFeatures(columns, event_ms, feature_columns)


class RemoteFeatures(Features):
    """Feature definitions and watermarks through ``keel server``; the rest in this process."""

    transport: HttpTransport

    def __init__(self, client: Client) -> None:
        super().__init__(client)
        if not isinstance(client.transport, HttpTransport):
            raise InvalidInput("RemoteFeatures needs a client of keel server (KEEL_SERVER_URL)")

    def _definition(self, kind: str, name: str) -> str:
        # a name that is not one (``a/b``) would change the route: refuse it as locally
        check_kind(kind)
        check_name(name, f"{kind.replace('_', ' ')} name")
        return f"/features/definitions/{_seg(kind)}/{_seg(name)}"

    # -- definitions --------------------------------------------------------------------------

    def apply_specs(
        self,
        specs: builtins.list[dict[str, Any]],
        file: str | None,
        sites: dict[str, str] | None = None,
    ) -> ApplyResult:
        body = {"specs": specs, "source_file": file, "sites": sites or {}}
        return self.transport.call("POST", "/features/definitions", ApplyResult, json=body)

    def get(
        self, name: str, version: int | None = None, *, kind: str = "feature_view"
    ) -> FeatureDefinition:
        params = None if version is None else {"version": version}
        path = self._definition(kind, name)
        return self.transport.call("GET", path, FeatureDefinition, params=params)

    def list(self, kind: str | None = None) -> builtins.list[FeatureDefinition]:
        params = None if kind is None else {"kind": check_kind(kind)}
        return self.transport.call(
            "GET", "/features/definitions", builtins.list[FeatureDefinition], params=params
        )

    def history(self, name: str, *, kind: str = "feature_view") -> builtins.list[FeatureDefinition]:
        path = f"{self._definition(kind, name)}/history"
        return self.transport.call("GET", path, builtins.list[FeatureDefinition])

    def resolve(self, uri: str) -> FeatureDefinition:
        parse_feature_uri(uri)  # a malformed URI fails here, as locally
        params = {"uri": uri}
        return self.transport.call("GET", "/features/resolve", FeatureDefinition, params=params)

    def views_for(self, refs: builtins.list[FeatureRef]) -> dict[str, FeatureDefinition]:
        if not refs:
            return {}
        params = {"features": [str(ref) for ref in refs]}
        return self.transport.call(
            "GET", "/features/views-for", dict[str, FeatureDefinition], params=params
        )

    # -- watermarks ---------------------------------------------------------------------------

    def watermark(self, view: str, store: str) -> Watermark | None:
        found = self.transport.call(
            "GET",
            "/features/watermarks",
            builtins.list[Watermark],
            params={"view": view, "store": store},
        )
        return found[0] if found else None

    def record_inputs(self, run_id: str, definitions: builtins.list[FeatureDefinition]) -> None:
        body = {
            "views": [{"kind": d.kind, "name": d.name, "version": d.version} for d in definitions]
        }
        path = f"/runs/{quote(run_id, safe='')}/feature-inputs"
        self.transport.call("POST", path, dict[str, Any], json=body)

    def watermarks(self) -> builtins.list[Watermark]:
        return self.transport.call("GET", "/features/watermarks", builtins.list[Watermark])

    def set_watermark(
        self,
        view: str,
        store: str,
        *,
        view_version: int,
        last_event_ms: int | None,
        last_created_ms: int | None,
        rows: int,
    ) -> Watermark:
        body = {
            "view": view,
            "store": store,
            "view_version": view_version,
            "last_event_ms": last_event_ms,
            "last_created_ms": last_created_ms,
            "rows": rows,
        }
        return self.transport.call("POST", "/features/watermarks", Watermark, json=body)

    # -- online reads -------------------------------------------------------------------------

    def get_online_features(
        self, entity_rows: Any, features: builtins.list[str], *, store: str | None = None, **kw: Any
    ) -> OnlineFeatures:
        """The server's online store's values; with ``store``, that store's, read here.

        Args:
            entity_rows: dicts of join key values (and request fields), or a DataFrame.
            features: ``["view:feature", …]``.
            store: an online store to read from this process instead of the server's.
            **kw: ``full_feature_names``.

        Raises:
            NotFound: an unknown view.
            InvalidInput: an unknown feature, a missing join key or request field.
        """
        if store is not None:
            return super().get_online_features(entity_rows, features, store=store, **kw)
        unknown = sorted(set(kw) - {"full_feature_names"})
        if unknown:
            raise InvalidInput(
                f"get_online_features takes store and full_feature_names, got {unknown}"
            )
        if isinstance(features, str):
            features = [features]
        body: dict[str, Any] = {
            "features": builtins.list(features),
            "full_feature_names": bool(kw.get("full_feature_names", False)),
        }
        if isinstance(entity_rows, builtins.list | tuple):
            body["entity_rows"] = builtins.list(entity_rows)
        else:
            import pandas as pd

            if not isinstance(entity_rows, pd.DataFrame):
                raise InvalidInput(
                    "entity_rows must be a list of dicts ({join key: value, …}) or a pandas "
                    f"DataFrame, got {type(entity_rows).__name__}"
                )
            # column-wise, as the route's "entities" shape takes them: no dict per row
            body["entities"] = {str(c): entity_rows[c].tolist() for c in entity_rows.columns}
        import orjson

        try:
            # numpy scalars (rows from a DataFrame's records) cross as plain numbers
            content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        except TypeError as exc:
            raise InvalidInput(
                f"entity_rows must hold JSON values (numbers, text, true/false, null): {exc}"
            ) from None
        answer = self.transport.request(
            "POST",
            "/features/online",
            content=content,
            headers={"content-type": "application/json"},
            keyed=False,
        )
        return online_features_from_wire(answer)
