"""Comparing runs, a run's artifacts (with previews) and its lineage.

- ``/compare?runs=a,b`` shows the params the runs disagree on, each metric's min,
  max and last value per run, and one chart per metric with every run's series
  overlaid; the chart's JSON (``/ui/api/compare/metrics/{key}``) answers all the
  runs in one request, each downsampled as :func:`keel.server.ui.api.run_series` does.
- ``/runs/{id}/artifacts`` lists a folder of a run's artifacts; ``…/artifacts/view``
  previews one file (:mod:`keel.server.ui.previews` decides how), and
  ``/ui/api/runs/{id}/artifacts/raw`` streams its bytes under a type and a
  Content-Security-Policy that let no user file run script on this server's origin.

Every route checks ``read`` on each run's experiment, as the tracking API's routes do,
and reads through ``caller.client``; artifact paths pass the library's own check
(:func:`keel.validation.check_relative_path`), so ``..`` is refused with its message.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.responses import StreamingResponse

from keel.artifacts import ArtifactStore
from keel.errors import InvalidInput, KeelError, NotFound
from keel.pipelines.lineage import LineageGraph
from keel.server.context import Caller, SessionCallerDep
from keel.server.permissions import check_run, on_run
from keel.server.ui.api import MAX_WIDTH, Axis, run_series
from keel.server.ui.previews import (
    JSON_LIMIT,
    PAGE_ROWS,
    head_text,
    pretty_json,
    preview_kind,
    served_as,
    table_page,
)
from keel.server.ui.render import PageCaller, failed, render
from keel.tracking.compare import compare_runs
from keel.tracking.entities import ArtifactEntry, RunInfo
from keel.uris import DatasetURI, ModelURI, RunURI, parse_uri
from keel.validation import check_relative_path

__all__ = ["MAX_COMPARE", "LineageRow", "router", "run_lineage"]

#: The most runs one comparison draws.
MAX_COMPARE = 100
_CHUNK = 1 << 20
_PATH = Annotated[str | None, Query(max_length=4_096)]
_RUNS = Annotated[str | None, Query(max_length=MAX_COMPARE * 40)]

router = APIRouter(include_in_schema=False)


# -- comparing runs ------------------------------------------------------------------------


def _run_ids(runs: str | None) -> list[str]:
    """The ids in ``runs`` (comma-separated), each once, in order; at most :data:`MAX_COMPARE`."""
    ids = list(dict.fromkeys(r.strip() for r in (runs or "").split(",") if r.strip()))
    if len(ids) > MAX_COMPARE:
        raise InvalidInput(
            f"compare takes up to {MAX_COMPARE} runs, got {len(ids)}; tick fewer runs (or "
            "narrow the table with a filter) and compare again"
        )
    if not ids:
        raise InvalidInput(
            "compare needs run ids, as runs=<id>,<id>; tick runs in an experiment's table and "
            "press Compare"
        )
    return ids


def _readable_runs(caller: Caller, ids: list[str]) -> list[RunInfo]:
    """Each run's info, once ``read`` on its experiment is checked (the API's rule)."""
    caller.require_somewhere("read")  # before a prefix is resolved: unknown ids stay unknown
    tracking = caller.client.tracking
    return [on_run(caller, "read", tracking.resolve_run_id(r)) for r in ids]


def _differing(values: list[Any]) -> list[bool]:
    """Which cells of a row that differs stand out: those away from the common value.

    A value most runs share (more than one) is the row's norm and the others are
    marked; when no value is shared, every cell is marked.
    """
    shown = ["" if v is None else str(v) for v in values]
    common, count = Counter(shown).most_common(1)[0]
    return [count < 2 or v != common for v in shown]


@router.get("/compare")
def compare_page(caller: PageCaller, runs: _RUNS = None) -> HTMLResponse:
    """Runs side by side: differing params, metric min/max/last, an overlaid chart per metric."""
    try:
        infos = _readable_runs(caller, _run_ids(runs))
        compared = compare_runs(caller.client.tracking, [i.id for i in infos])
        experiments = {
            i.experiment_id: caller.client.tracking.get_experiment(i.experiment_id) for i in infos
        }
        metric_keys = [row["key"] for row in compared["rows"] if row["kind"] == "metrics"]
        found = caller.client.tracking.metric_summaries([i.id for i in infos], metric_keys)
        stats = {k: [found.get((i.id, k)) for i in infos] for k in metric_keys}
    except KeelError as exc:
        return failed(exc)
    params = [
        {"key": row["key"], "values": row["values"], "marks": _differing(row["values"])}
        for row in compared["rows"]
        if row["kind"] == "params" and row["differs"]
    ]
    same = sum(1 for row in compared["rows"] if row["kind"] == "params" and not row["differs"])
    return render(
        "compare.html",
        title=f"Compare {len(infos)} runs",
        user=caller.user,
        runs=infos,
        experiments=experiments,
        run_ids=",".join(i.id for i in infos),
        params=params,
        same_params=same,
        metric_keys=metric_keys,
        stats=stats,
    )


#: Runs whose series one comparison reads at the same time.
_SERIES_THREADS = 4


@router.get("/ui/api/compare/metrics/{key:path}")
def compare_series(
    key: str,
    caller: SessionCallerDep,
    runs: _RUNS = None,
    width: Annotated[int, Query(ge=1, le=MAX_WIDTH)] = 1_000,
    start: Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)] = None,
    end: Annotated[int | None, Query(ge=-(2**63), le=2**63 - 1)] = None,
    x: Axis = "step",
) -> dict[str, Any]:
    """One metric of every run in ``runs``, each downsampled to ``width``, in one answer.

    ``runs`` holds one entry per run: ``run`` (its id), ``name`` and the fields of
    :func:`keel.server.ui.api.run_series`; ``range`` spans every run's range (or
    ``start``..``end`` when given), so the chart's x axis holds them all.
    """
    infos = _readable_runs(caller, _run_ids(runs))

    def one(info: RunInfo) -> dict[str, Any]:
        series = run_series(caller, info.id, key, width=width, start=start, end=end, x=x)
        return {"run": info.id, "name": info.name, **series}

    # Each run's downsampling is mostly the database's work, which releases the GIL:
    # a few runs at a time, each on its own pooled connection, keep both cores busy.
    with ThreadPoolExecutor(max_workers=_SERIES_THREADS) as pool:
        answers = list(pool.map(one, infos))
    drawn = [a["range"] for a in answers if a["points"]]
    low = start if start is not None else min((r[0] for r in drawn), default=0)
    high = end if end is not None else max((r[1] for r in drawn), default=0)
    return {"key": key, "x": x, "runs": answers, "range": [low, high]}


# -- lineage -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineageRow:
    """A node next to a run in the lineage graph, as the run's page lists it."""

    kind: str
    label: str
    uri: str
    relation: str
    hops: int
    href: str | None


def _node_link(uri: str) -> tuple[str, str | None]:
    """The label and the UI page of a lineage node (None for a node with no page)."""
    try:
        parsed = parse_uri(uri)
    except KeelError:
        return uri, None  # code:/ and artifacts:/ are the lineage graph's own schemes
    if isinstance(parsed, ModelURI) and parsed.version is not None:
        return (
            f"{parsed.name} v{parsed.version}",
            f"/models/{quote(parsed.name)}/versions/{parsed.version}",
        )
    if isinstance(parsed, DatasetURI) and parsed.name and parsed.version is not None:
        return (
            f"{parsed.name}@{parsed.version}",
            f"/data/{quote(parsed.name)}/versions/{parsed.version}",
        )
    if isinstance(parsed, RunURI):
        return parsed.run_id, f"/runs/{quote(parsed.run_id)}"
    return uri, None


def _rows(graph: LineageGraph) -> list[LineageRow]:
    up = graph.direction == "upstream"
    relations = {(e.src if up else e.dst): e.relation for e in graph.edges}
    rows = []
    for node in sorted(graph.nodes.values(), key=lambda n: (n.depth, n.kind, n.uri)):
        if node.uri == graph.root:
            continue
        label, href = _node_link(node.uri)
        name = node.attributes.get("name")
        if node.kind == "run" and name:
            label = f"{name} ({node.attributes.get('role', 'run')})"
        rows.append(
            LineageRow(node.kind, label, node.uri, relations.get(node.uri, ""), node.depth, href)
        )
    return rows


def run_lineage(caller: Caller, run_id: str) -> tuple[list[LineageRow], list[LineageRow]]:
    """What the run was made from and what was made from it (``read`` somewhere, as the API)."""
    caller.require_somewhere("read", "reading lineage")
    uri = str(RunURI(run_id))
    lineage = caller.client.lineage
    return _rows(lineage.upstream(uri)), _rows(lineage.downstream(uri))


# -- artifacts -----------------------------------------------------------------------------


def _checked(path: str | None) -> str:
    """The artifact path asked for ("" for the run's root), refused if it could escape."""
    prefix = (path or "").strip("/")
    return check_relative_path(prefix, "artifact path") if prefix else ""


def _entry(caller: Caller, run_id: str, path: str | None) -> ArtifactEntry | None:
    """The artifact file at ``path``, or None when ``path`` is a folder of the run's artifacts.

    Raises:
        NotFound: the run has no artifact at ``path``.
    """
    prefix = _checked(path)
    entries = caller.client.tracking.list_artifacts(run_id, prefix or None)
    for entry in entries:
        if entry.path == prefix:
            return entry
    if not entries or not prefix:
        raise NotFound(
            f"run {run_id} has no artifact at {prefix!r}; its artifacts are listed at "
            f"/runs/{run_id}/artifacts"
        )
    return None


def _crumbs(run_id: str, path: str) -> list[tuple[str, str]]:
    """The breadcrumb of ``path``: each folder above it, with its listing's link."""
    crumbs = [("artifacts", f"/runs/{run_id}/artifacts")]
    parts = path.split("/") if path else []
    for depth, part in enumerate(parts):
        folder = "/".join(parts[: depth + 1])
        crumbs.append((part, f"/runs/{run_id}/artifacts?{urlencode({'path': folder})}"))
    return crumbs


def _listing(prefix: str, entries: list[ArtifactEntry]) -> list[dict[str, Any]]:
    """The folder's children: sub-folders (with their size and file count), then files."""
    children: dict[str, dict[str, Any]] = {}
    start = len(prefix) + 1 if prefix else 0
    for entry in entries:
        name, _, rest = entry.path[start:].partition("/")
        path = f"{prefix}/{name}" if prefix else name
        child = children.setdefault(
            name, {"name": name, "path": path, "folder": bool(rest), "size": 0, "files": 0}
        )
        child["size"] += entry.size
        child["files"] += 1
    return sorted(children.values(), key=lambda c: (not c["folder"], c["name"]))


def _run_context(caller: Caller, info: RunInfo) -> dict[str, Any]:
    experiment = caller.client.tracking.get_experiment(info.experiment_id)
    return {"user": caller.user, "info": info, "experiment": experiment}


@router.get("/runs/{run_id}/artifacts", response_model=None)
def artifacts_page(
    run_id: str, caller: PageCaller, path: _PATH = None
) -> HTMLResponse | RedirectResponse:
    """A folder of the run's artifacts: sub-folders and files with their sizes."""
    try:
        info = on_run(caller, "read", run_id)
        prefix = _checked(path)
        entries = caller.client.tracking.list_artifacts(info.id, prefix or None)
        if prefix and any(e.path == prefix for e in entries):  # a file: show its preview
            target = f"/runs/{info.id}/artifacts/view?{urlencode({'path': prefix})}"
            return RedirectResponse(target, status_code=303)
        if prefix and not entries:
            raise NotFound(
                f"run {info.name!r} has no artifact folder {prefix!r}; pick one from the "
                "run's artifacts"
            )
        context = _run_context(caller, info)
    except KeelError as exc:
        return failed(exc)
    return render(
        "artifacts.html",
        title=f"{info.name}: artifacts",
        path=prefix,
        crumbs=_crumbs(info.id, prefix),
        children=_listing(prefix, entries),
        **context,
    )


def _raw_link(run_id: str, path: str, **extra: str) -> str:
    return f"/ui/api/runs/{run_id}/artifacts/raw?{urlencode({'path': path, **extra})}"


def _preview(caller: Caller, entry: ArtifactEntry, page: int) -> dict[str, Any]:
    """What the preview page shows of ``entry`` beyond its link: a table, a text or JSON."""
    kind = preview_kind(entry.path)
    found: dict[str, Any] = {"kind": kind, "table": None, "text": None, "cut": False,
                             "problem": None}  # fmt: skip
    if kind in ("image", "html"):
        return found  # the browser loads these from the raw route
    store = caller.client.tracking.artifacts
    if kind == "json" and entry.size <= JSON_LIMIT:
        data = store.get_bytes(entry.digest)  # small enough to read whole, and verified
        try:
            found["text"] = pretty_json(data)
            return found
        except ValueError as exc:
            found["problem"] = f"not valid JSON ({exc}); shown as text"
    with store.backend.open(ArtifactStore.key(entry.digest)) as handle:
        if kind == "table":
            import pyarrow as pa

            try:
                found["table"] = table_page(handle, entry.path, (page - 1) * PAGE_ROWS)
            except (pa.ArrowException, OSError) as exc:
                found["problem"] = f"could not read {entry.path!r} as a table: {exc}"
            return found
        found["text"], found["cut"] = head_text(handle)
    found["kind"] = "text"
    return found


@router.get("/runs/{run_id}/artifacts/view", response_model=None)
def artifact_page(
    run_id: str,
    caller: PageCaller,
    path: _PATH = None,
    page: Annotated[int, Query(ge=1, le=10**9)] = 1,
) -> HTMLResponse | RedirectResponse:
    """A preview of one artifact: an image, a page of a table, JSON, text or a sandboxed report."""
    try:
        info = on_run(caller, "read", run_id)
        entry = _entry(caller, info.id, path)
        if entry is None:  # a folder: list it
            target = f"/runs/{info.id}/artifacts?{urlencode({'path': _checked(path)})}"
            return RedirectResponse(target, status_code=303)
        shown = _preview(caller, entry, page)
        context = _run_context(caller, info)
    except KeelError as exc:
        return failed(exc)
    table = shown["table"]
    pages: dict[str, str | None] = {"prev": None, "next": None}
    if table is not None:
        here = f"/runs/{info.id}/artifacts/view?"
        if page > 1:
            pages["prev"] = here + urlencode({"path": entry.path, "page": page - 1})
        if table.offset + PAGE_ROWS < table.total:
            pages["next"] = here + urlencode({"path": entry.path, "page": page + 1})
    return render(
        "artifact.html",
        title=f"{info.name}: {entry.path}",
        entry=entry,
        crumbs=_crumbs(info.id, entry.path),
        raw=_raw_link(info.id, entry.path),
        download=_raw_link(info.id, entry.path, download="1"),
        page=page,
        page_rows=PAGE_ROWS,
        pages=pages,
        **shown,
        **context,
    )


@router.get("/ui/api/runs/{run_id}/artifacts/raw")
def artifact_raw(
    run_id: str, caller: SessionCallerDep, path: _PATH = None, download: bool = False
) -> StreamingResponse:
    """The artifact's bytes, streamed, under a type and a CSP that run no script of the file.

    Images keep their type, HTML runs only as an opaque origin (CSP ``sandbox``),
    text is ``text/plain``; anything else, or ``download=1``, is an attachment.
    """
    check_run(caller, "read", run_id)
    entry = _entry(caller, run_id, path)
    if entry is None:
        raise InvalidInput(
            f"artifact path {_checked(path)!r} is a folder; give the path of a file in it"
        )
    media, policy, attach = served_as(entry.path)
    handle = caller.client.tracking.artifacts.backend.open(ArtifactStore.key(entry.digest))

    def chunks() -> Any:
        with handle:
            while block := handle.read(_CHUNK):
                yield block

    headers = {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": policy,
        "Cache-Control": "private, no-cache",
    }
    if attach or download:
        name = entry.path.rsplit("/", 1)[-1]
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
    return StreamingResponse(chunks(), media_type=media, headers=headers)
