"""The UI's pages: login, experiments, an experiment's runs table and a run.

Each page checks the caller's permission and calls the tracking library through
``caller.client``, as the API's routes do; what it adds is only presentation
(which columns, which links). The runs table is filtered, sorted and paged by
the server with the search the CLI's ``keel runs search`` uses: a filter the
parser refuses is shown above the table with the parser's message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from keel.errors import InvalidInput, KeelError, Unauthenticated
from keel.server.context import SESSION_COOKIE, ServerState
from keel.server.permissions import on_experiment, on_run, readable_experiments
from keel.server.ui.render import HOME, PageCaller, failed, local_path, render
from keel.server.ui.runs import MAX_COMPARE, run_lineage
from keel.tracking.entities import Run

__all__ = ["PAGE_SIZE", "router"]

#: Runs per page of the runs table.
PAGE_SIZE = 50
#: The prefixes a chosen column may have: a param, a metric's latest value or a tag.
COLUMN_KINDS = ("params.", "metrics.", "tags.")
_MAX_COLUMNS = 50

router = APIRouter(include_in_schema=False)

# -- login -------------------------------------------------------------------------------


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=303)


@router.get("/login", response_model=None)
def login_form(request: Request, next: str | None = None) -> HTMLResponse | RedirectResponse:
    if not _state(request).auth:
        return RedirectResponse(local_path(next), status_code=303)
    return render("login.html", title="Log in", next=local_path(next), error=None)


@router.post("/login", response_model=None)
async def login(request: Request) -> HTMLResponse | RedirectResponse:
    """Check the token from the form; keep it in an HttpOnly session cookie if it is valid."""
    # the form is parsed here rather than by FastAPI, which would need python-multipart
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = form.get("token", [""])[0].strip()
    target = local_path(form.get("next", [None])[0])
    state = _state(request)
    if state.auth:
        try:
            await run_in_threadpool(state.principal, token or None)
        except Unauthenticated as exc:
            return render("login.html", 401, title="Log in", next=target, error=str(exc))
    answer = RedirectResponse(target, status_code=303)
    answer.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,  # no script can read the token
        samesite="strict",  # no other site's page can make the browser send it
        path="/",
        secure=request.url.scheme == "https",
    )
    return answer


@router.get("/logout")
def logout() -> RedirectResponse:
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(SESSION_COOKIE, path="/")
    return answer


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.keel
    return state


# -- experiments and runs ------------------------------------------------------------------


@router.get("/experiments")
def experiments_page(caller: PageCaller) -> HTMLResponse:
    try:
        readable = readable_experiments(caller)
        tracking = caller.client.tracking
        experiments = tracking.list_experiments() if readable is None else readable
        counts = tracking.experiment_run_counts()
    except KeelError as exc:
        return failed(exc)
    return render(
        "experiments.html", title="Experiments", user=caller.user, experiments=experiments,
        counts=counts,
    )  # fmt: skip


def _chosen_columns(columns: str | None) -> tuple[list[str], str | None]:
    """The chosen columns, and a message naming the ones that are not a param, metric or tag."""
    names = [c.strip() for c in (columns or "").split(",") if c.strip()]
    kept = [c for c in dict.fromkeys(names) if c.startswith(COLUMN_KINDS) and len(c) > 7]
    bad = [c for c in names if c not in kept]
    problem = None
    if bad:
        problem = f"columns must be params.KEY, metrics.KEY or tags.KEY; ignored {', '.join(bad)}"
    return kept[:_MAX_COLUMNS], problem


def _cell(run: Run, column: str) -> str:
    kind, _, key = column.partition(".")
    found: Mapping[str, object] = (
        run.params if kind == "params" else run.metrics if kind == "metrics" else run.tags
    )
    value = found.get(key)
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


@router.get("/experiments/{experiment_id}")
def runs_page(
    experiment_id: int,
    caller: PageCaller,
    filter: Annotated[str | None, Query(max_length=100_000)] = None,
    sort: Annotated[str | None, Query(max_length=300)] = None,
    desc: bool = False,
    page_token: Annotated[str | None, Query(max_length=1_000)] = None,
    trail: Annotated[str | None, Query(max_length=20_000)] = None,
    columns: Annotated[str | None, Query(max_length=10_000)] = None,
) -> HTMLResponse:
    """One page of an experiment's runs, filtered and sorted by the server."""
    try:
        experiment = on_experiment(caller, "read", experiment_id)
    except KeelError as exc:
        return failed(exc)
    chosen, column_problem = _chosen_columns(columns)
    order_by = f"{sort} {'DESC' if desc else 'ASC'}" if sort else None
    error = None
    runs: list[Run] = []
    next_token = None
    try:
        page = caller.client.tracking.search_runs(
            [experiment_id], filter or None, order_by, PAGE_SIZE, page_token or None
        )
        runs, next_token = page.runs, page.next_page_token
    except InvalidInput as exc:
        error = str(exc)
    # the tokens of the pages before this one, so "previous" is a link like "next"
    earlier = trail.split(",") if trail else []
    kept = {"filter": filter or "", "sort": sort or "", "desc": "1" if desc else "",
            "columns": ",".join(chosen)}  # fmt: skip
    base = f"/experiments/{experiment_id}"

    def link(**changes: str) -> str:
        params = {k: v for k, v in {**kept, **changes}.items() if v}
        return f"{base}?{urlencode(params)}"

    def sort_link(field: str) -> str:
        return link(
            sort=field, desc="" if sort == field and desc else ("1" if sort == field else "")
        )

    next_link = (
        link(page_token=next_token, trail=",".join([*earlier, page_token or ""]))
        if next_token
        else None
    )
    prev_link = None
    if page_token:
        prev_link = link(page_token=earlier[-1] if earlier else "", trail=",".join(earlier[:-1]))
    fixed = [("Run", "attributes.name"), ("Status", "attributes.status"),
             ("Started", "attributes.start_time"), ("User", "attributes.user")]  # fmt: skip
    return render(
        "runs.html",
        title=experiment.name,
        user=caller.user,
        experiment=experiment,
        runs=runs,
        rows=[[_cell(r, c) for c in chosen] for r in runs],
        fixed=[(label, field, sort_link(field)) for label, field in fixed],
        chosen=[(c, sort_link(c)) for c in chosen],
        sort=sort,
        desc=desc,
        filter=filter or "",
        columns=",".join(chosen),
        error=error,
        column_problem=column_problem,
        next_link=next_link,
        prev_link=prev_link,
        compare_limit=MAX_COMPARE,
    )


@router.get("/runs/{run_id}")
def run_page(run_id: str, caller: PageCaller) -> HTMLResponse:
    """A run: params, tags, metrics, environment, inputs, lineage and a chart per metric."""
    try:
        info = on_run(caller, "read", run_id)
        tracking = caller.client.tracking
        run = tracking.get_run(run_id)
        environment = tracking.get_environment(run_id)
        experiment = tracking.get_experiment(info.experiment_id)
        inputs = caller.client.data.run_inputs(run_id)  # read on the run, as the API checks
        upstream, downstream = run_lineage(caller, run_id)
    except KeelError as exc:
        return failed(exc)
    return render(
        "run.html",
        title=info.name,
        user=caller.user,
        run=run,
        info=info,
        experiment=experiment,
        environment=environment,
        metric_keys=sorted(run.metrics),
        inputs=inputs,
        upstream=upstream,
        downstream=downstream,
    )
