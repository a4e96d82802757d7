"""Registered models, versions, aliases, approvals and comparing two versions.

Each page checks what the matching API route (:mod:`keel.server.routes.registry`)
checks, then reads through ``caller.client.registry``:

- ``read`` on model NAME for the model, its versions, aliases, history and approvals;
- global ``read`` for the alias policies (as ``GET /api/v1/alias-policies``);
- ``read`` on the source run's experiment for the run's metrics and params, which
  are left out, with a note, for a caller who may read the model but not the run;
- ``approve`` on model NAME to approve, and ``write`` on alias NAME@ALIAS to move one.

Approving and moving are two steps, as in the CLI (``keel models approve`` then
``keel models alias set``): an approval only records a vote, and the alias moves
when someone allowed to move it does so once the policy's approvals are in. The
registry decides both; a refusal (403), a race lost (409) or a missing approval
is shown on the version page with its message and status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from keel.errors import InvalidInput, KeelError, PermissionDenied
from keel.registry.card import parse_description
from keel.registry.entities import AliasPolicy, Approval, ModelCheck, ModelVersion
from keel.server.context import Caller
from keel.server.permissions import on_run
from keel.server.ui.render import PageCaller, failed, render, same_origin
from keel.tracking.entities import Run
from keel.validation import MAX_NAME_CHARS

if TYPE_CHECKING:
    from keel.models.signature import Schema

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

ModelName = Annotated[str, Path(max_length=MAX_NAME_CHARS)]
AliasName = Annotated[str, Path(max_length=MAX_NAME_CHARS)]
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]
_COMMENT_CHARS = 5_000

#: What a redirect after a form says on the version page (a code, so no link can make
#: the page say something the server did not).
_NOTICES = {
    "approved": "You approved this version for {alias}.",
    "moved": "{alias} now points at this version.",
}


def _model_path(name: str) -> str:
    return f"/models/{quote(name, safe='')}"


def _version_path(name: str, version: int) -> str:
    return f"{_model_path(name)}/versions/{version}"


# -- the list ------------------------------------------------------------------------------


@router.get("/models")
def models_page(caller: PageCaller) -> HTMLResponse:
    """The registered models the caller may read, with their latest version and aliases."""
    try:
        if "api" not in caller.principal.scopes:
            caller.require("read")
        listed = caller.client.registry.list_registered_models()
    except KeelError as exc:
        return failed(exc)
    # a model-scoped reader sees the models granted to it, as the API's listing does
    models = [m for m in listed if caller.can("read", "model", m.name)]
    return render("models.html", title="Models", user=caller.user, models=models)


# -- one model -------------------------------------------------------------------------------


@dataclass
class _Policies:
    """The alias policies, or why the caller may not see them."""

    by_alias: dict[str, AliasPolicy] = field(default_factory=dict)
    hidden: str | None = None


def _policies(caller: Caller) -> _Policies:
    # listing the policies needs global read, as GET /api/v1/alias-policies does
    if not caller.can("read"):
        return _Policies(hidden="the alias policies are shown to users with read everywhere")
    policies = caller.client.registry.list_alias_policies()
    return _Policies({p.alias: p for p in policies})


def _latest_checks(
    caller: Caller, name: str, versions: list[ModelVersion]
) -> dict[int, ModelCheck]:
    registry = caller.client.registry
    latest: dict[int, ModelCheck] = {}
    for mv in versions:
        checks = registry.list_checks(name, mv.version)
        if checks:
            latest[mv.version] = checks[-1]
    return latest


@router.get("/models/{name}")
def model_page(name: ModelName, caller: PageCaller) -> HTMLResponse:
    """A model: its versions, aliases with their history, protected aliases, a compare form."""
    try:
        caller.require("read", "model", name)
        registry = caller.client.registry
        model = registry.get_registered_model(name)
        versions = registry.list_model_versions(name)
        history = registry.alias_history(name)
        approvals = registry.list_approvals(name)
        policies = _policies(caller)
        checks = _latest_checks(caller, name, versions)
    except KeelError as exc:
        return failed(exc)
    # the approvals behind each move: those of the version it moved to, for that alias
    behind: dict[tuple[str, int], list[Approval]] = {}
    for a in approvals:
        behind.setdefault((a.alias, a.version), []).append(a)
    moves = [
        (change, behind.get((change.alias, change.to_version or 0), []))
        for change in reversed(history)
    ]
    newest = versions[-1].version if versions else None
    return render(
        "model.html",
        title=name,
        user=caller.user,
        model=model,
        versions=list(reversed(versions)),
        checks=checks,
        moves=moves,
        policies=policies,
        compare_a=versions[-2].version if len(versions) > 1 else newest,
        compare_b=newest,
        model_path=_model_path(name),
    )


# -- one version -------------------------------------------------------------------------------


@dataclass
class _Source:
    """A version's source run as the caller may see it."""

    run: Run | None = None
    hidden: str | None = None


def _source(caller: Caller, mv: ModelVersion) -> _Source:
    """The source run, when the caller may read its experiment (the API's rule for runs)."""
    if mv.run_id is None:
        return _Source(hidden="this version names no source run")
    try:
        on_run(caller, "read", mv.run_id)
        return _Source(caller.client.tracking.get_run(mv.run_id))
    except PermissionDenied as exc:
        return _Source(hidden=f"the source run's metrics and params are not shown: {exc}")


def _package(caller: Caller, mv: ModelVersion) -> dict[str, Any] | None:
    """The ``keel-model.json`` the version pinned (flavor, signature, requirements)."""
    from keel.models.reference import pinned_metadata

    return pinned_metadata(caller.client.registry.artifacts, mv.manifest_digest)


def _schema_rows(schema: Schema | None) -> list[tuple[str, str]]:
    """(name, type) of each column or tensor of a signature's inputs or outputs."""
    if schema is None:
        return []
    rows = []
    for column in schema.columns:
        missing = " (missing allowed)" if column.allow_missing else ""
        rows.append((column.name, f"{column.type}{missing}"))
    for i, tensor in enumerate(schema.tensors):
        missing = " (missing allowed)" if tensor.allow_missing else ""
        rows.append((tensor.name or f"#{i}", f"{tensor.dtype} {list(tensor.shape)}{missing}"))
    return rows


def _signature(package: dict[str, Any] | None) -> dict[str, list[tuple[str, str]]] | None:
    """The package's signature as rows, read by the signature's own parser."""
    from keel.models.signature import Signature  # numpy and pandas: only for this page

    doc = (package or {}).get("signature")
    if doc is None:
        return None
    try:
        signature = Signature.from_dict(doc)
    except InvalidInput:
        return None  # a package the loader would refuse: the page shows no signature
    return {"inputs": _schema_rows(signature.inputs), "outputs": _schema_rows(signature.outputs)}


@dataclass
class _Gate:
    """A protected alias this version could move to, and where its approvals stand."""

    policy: AliasPolicy
    holds: int | None
    approvals: list[Approval]
    counted: int
    mine: bool
    can_approve: bool
    can_move: bool


def _gates(
    caller: Caller,
    mv: ModelVersion,
    policies: _Policies,
    approvals: list[Approval],
    current: dict[str, int],
) -> list[_Gate]:
    gates = []
    can_approve = caller.can("approve", "model", mv.name)
    for alias, policy in sorted(policies.by_alias.items()):
        given = [a for a in approvals if a.alias == alias]
        # the count the alias move checks: current role holders, four eyes
        counted, _ = caller.client.registry.approval_count(mv.name, mv.version, alias)
        holds = current.get(alias)
        mine = any(a.approver == caller.user for a in given)
        gates.append(
            _Gate(
                policy=policy,
                holds=holds,
                approvals=given,
                counted=counted,
                mine=mine,
                can_approve=can_approve and not mine and holds != mv.version,
                can_move=(
                    holds != mv.version
                    and counted >= policy.approvals
                    and caller.can("write", "alias", f"{mv.name}@{alias}")
                ),
            )
        )
    return gates


def _version_page(
    caller: Caller,
    name: str,
    version: int,
    *,
    notice: str | None = None,
    error: KeelError | None = None,
) -> HTMLResponse:
    try:
        caller.require("read", "model", name)
        registry = caller.client.registry
        mv = registry.get_model_version(name, version)
        model = registry.get_registered_model(name)
        approvals = registry.list_approvals(name, version)
        checks = registry.list_checks(name, version)
        policies = _policies(caller)
        package = _package(caller, mv)
        source = _source(caller, mv)
        report = _check_report(caller, checks[-1]) if checks else None
    except KeelError as exc:
        return failed(exc if error is None else error)
    return render(
        "model_version.html",
        status=200 if error is None else error.status_code,
        title=f"{name} version {version}",
        user=caller.user,
        mv=mv,
        model=model,
        approvals=approvals,
        checks=checks,
        report=report,
        policies=policies,
        gates=_gates(caller, mv, policies, approvals, model.aliases),
        package=package,
        signature=_signature(package),
        source=source,
        card=parse_description(mv.description),
        notice=notice,
        error=None if error is None else str(error),
        error_status=None if error is None else error.status_code,
        model_path=_model_path(name),
        version_path=_version_path(name, version),
    )


def _check_report(caller: Caller, check: ModelCheck) -> dict[str, Any] | None:
    """The stored report of a recorded check (its metrics and gates)."""
    report = caller.client.registry.artifacts.get_json(check.report_digest)
    return report if isinstance(report, dict) else None


@router.get("/models/{name}/versions/{version}")
def version_page(
    name: ModelName,
    version: Version,
    caller: PageCaller,
    done: Annotated[str | None, Query(max_length=20)] = None,
    alias: Annotated[str | None, Query(max_length=MAX_NAME_CHARS)] = None,
) -> HTMLResponse:
    """A version: its run's metrics and params, signature, card, checks, approvals, tags."""
    template = _NOTICES.get(done or "")
    notice = template.format(alias=alias or "the alias") if template else None
    return _version_page(caller, name, version, notice=notice)


async def _form(request: Request) -> dict[str, str]:
    # parsed here rather than by FastAPI, which would need python-multipart
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {key: values[0] for key, values in parsed.items()}


def _back(name: str, version: int, done: str, alias: str) -> RedirectResponse:
    query = urlencode({"done": done, "alias": alias})
    return RedirectResponse(f"{_version_path(name, version)}?{query}", status_code=303)


@router.post("/models/{name}/versions/{version}/approve", response_model=None)
async def approve(
    name: ModelName, version: Version, request: Request, caller: PageCaller
) -> HTMLResponse | RedirectResponse:
    """Approve the version for a protected alias, as the caller (the API's approve route)."""
    form = await _form(request)
    alias = form.get("alias", "").strip()
    comment = form.get("comment", "").strip()[:_COMMENT_CHARS] or None
    try:
        same_origin(request)
        caller.require("approve", "model", name)
        if not alias:
            raise InvalidInput("choose the protected alias to approve this version for")
        caller.client.registry.approve(name, version, alias, comment)
    except KeelError as exc:
        return _version_page(caller, name, version, error=exc)
    return _back(name, version, "approved", alias)


@router.post("/models/{name}/aliases/{alias}", response_model=None)
async def move_alias(
    name: ModelName, alias: AliasName, request: Request, caller: PageCaller
) -> HTMLResponse | RedirectResponse:
    """Move an alias to a version (the API's PUT of the alias), from the version page.

    The form sends the version the alias held when the page was drawn, so a move made
    meanwhile by someone else is a 409 here rather than silently overwritten.
    """
    form = await _form(request)
    try:
        version = int(form.get("version", ""))
    except ValueError:
        version = 0
    if version < 1:
        return failed(
            InvalidInput(f"version must be a positive number, got {form.get('version')!r}")
        )
    held = form.get("expected", "")
    comment = form.get("comment", "").strip()[:_COMMENT_CHARS] or None
    try:
        same_origin(request)
        caller.require("write", "alias", f"{name}@{alias}")
        if held and not held.isdigit():
            raise InvalidInput(f"expected must be the version the alias holds, got {held!r}")
        expected = int(held) if held else None
        caller.client.registry.set_alias(name, alias, version, expected=expected, comment=comment)
    except KeelError as exc:
        return _version_page(caller, name, version, error=exc)
    return _back(name, version, "moved", alias)


# -- comparing two versions ------------------------------------------------------------------------


@dataclass
class _Side:
    mv: ModelVersion
    source: _Source
    signature: dict[str, list[tuple[str, str]]] | None
    check: ModelCheck | None


def _side(caller: Caller, name: str, version: int) -> _Side:
    registry = caller.client.registry
    mv = registry.get_model_version(name, version)
    checks = registry.list_checks(name, version)
    return _Side(
        mv, _source(caller, mv), _signature(_package(caller, mv)), checks[-1] if checks else None
    )


def _metric_rows(
    a: Run | None, b: Run | None
) -> list[tuple[str, float | None, float | None, float | None]]:
    """(key, a, b, b - a) for every metric either run logged."""
    ma = a.metrics if a else {}
    mb = b.metrics if b else {}
    rows = []
    for key in sorted(set(ma) | set(mb)):
        va, vb = ma.get(key), mb.get(key)
        diff = None
        if va is not None and vb is not None and math.isfinite(va) and math.isfinite(vb):
            diff = vb - va
        rows.append((key, va, vb, diff))
    return rows


def _pair_rows(
    a: dict[str, str], b: dict[str, str]
) -> list[tuple[str, str | None, str | None, bool]]:
    """(key, a, b, differs) for every key of either mapping."""
    return [(k, a.get(k), b.get(k), a.get(k) != b.get(k)) for k in sorted(set(a) | set(b))]


@router.get("/models/{name}/compare")
def compare_page(
    name: ModelName,
    caller: PageCaller,
    a: Annotated[int, Query(ge=1, le=2**31 - 1)],
    b: Annotated[int, Query(ge=1, le=2**31 - 1)],
) -> HTMLResponse:
    """Two versions side by side: metrics with their difference, params, signature, checks."""
    try:
        caller.require("read", "model", name)
        left, right = _side(caller, name, a), _side(caller, name, b)
        versions = caller.client.registry.list_model_versions(name)
    except KeelError as exc:
        return failed(exc)
    ra, rb = left.source.run, right.source.run
    signatures = {
        part: _pair_rows(
            dict((left.signature or {}).get(part, [])), dict((right.signature or {}).get(part, []))
        )
        for part in ("inputs", "outputs")
    }
    return render(
        "model_compare.html",
        title=f"{name}: version {a} and {b}",
        user=caller.user,
        model_name=name,
        left=left,
        right=right,
        versions=[v.version for v in versions],
        metrics=_metric_rows(ra, rb),
        params=_pair_rows(ra.params if ra else {}, rb.params if rb else {}),
        signatures=signatures,
        model_path=_model_path(name),
    )
