"""The serving app's OpenAPI document, written out rather than derived.

Every endpoint reads its raw body (the wire formats are parsed and checked
in :mod:`keel.serving.protocols`, faster and with better messages than a
model-per-request framework would), so the schema is declared here once,
next to the route table it describes. Clients and fuzzers
(schemathesis in the tests) read it from ``GET /openapi.json``.
"""

from __future__ import annotations

from typing import Any

from keel.serving.protocols import V2_DATATYPES

__all__ = ["PREDICTION_HEADERS", "Operation", "openapi_document"]

_JSON = "application/json"
_ERROR = {
    "description": "What was wrong and what was expected",
    "content": {
        _JSON: {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            }
        }
    },
}

V2_INFER_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "shape", "datatype", "data"],
                "properties": {
                    "name": {"type": "string"},
                    "shape": {"type": "array", "items": {"type": "integer"}},
                    "datatype": {"type": "string", "enum": list(V2_DATATYPES)},
                    "data": {"type": "array"},
                },
            },
        },
    },
}

FEEDBACK_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["ids", "labels"],
    "properties": {
        "ids": {"type": "array", "items": {"type": "string"}},
        "labels": {"type": "array"},
        "rows": {"type": "array", "items": {"type": "integer"}},
    },
}

#: Headers of a prediction's 200 answer.
PREDICTION_HEADERS: dict[str, Any] = {
    "x-request-id": {
        "description": "The request's id: its v2 id, its x-request-id header, or a new one",
        "schema": {"type": "string"},
    },
    "x-keel-ignored-inputs": {
        "description": "How many inputs the request sent that the model's signature does not "
        "name: dropped before predicting and not logged (absent when none)",
        "schema": {"type": "integer", "minimum": 1},
    },
}

V1_BODY: dict[str, Any] = {
    "type": "object",
    "required": ["instances"],
    "properties": {"instances": {"type": "array"}},
}


class Operation:
    """One documented endpoint: method, path, summary, for POSTs its body schemas, and the
    headers of its 200 answer."""

    def __init__(
        self,
        method: str,
        path: str,
        summary: str,
        bodies: dict[str, dict[str, Any]] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.summary = summary
        self.bodies = bodies
        self.headers = headers

    def document(self) -> dict[str, Any]:
        params = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in _path_params(self.path)
        ]
        doc: dict[str, Any] = {
            "summary": self.summary,
            "operationId": f"{self.method}_{self.path}".replace("/", "_").strip("_"),
            "responses": {"200": {"description": "OK"}, "4XX": _ERROR},
        }
        if self.headers:
            doc["responses"]["200"]["headers"] = self.headers
        if params:
            doc["parameters"] = params
        if self.bodies is not None:
            doc["requestBody"] = {
                "required": True,
                "content": {kind: {"schema": schema} for kind, schema in self.bodies.items()},
            }
        return doc


def _path_params(path: str) -> list[str]:
    out, start = [], path.find("{")
    while start >= 0:
        end = path.index("}", start)
        out.append(path[start : end + 1])
        start = path.find("{", end)
    return out


def openapi_document(title: str, version: str, operations: list[Operation]) -> dict[str, Any]:
    """An OpenAPI 3.1 document for ``operations``."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = op.document()
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
    }
