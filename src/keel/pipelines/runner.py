"""Running a pipeline: validate, pin, hash, schedule, cache, record.

:func:`run_pipeline` does, in order:

1. loads the target and builds the graph with the parameters — every
   argument and use of a step output is checked here, before anything runs,
   and errors name the user's file and line;
2. pins dataset references (``datasets:/churn`` → ``datasets:/churn@3``),
   computes each step's code digest and hashes declared external inputs;
3. starts the executor and checks declared resources against it;
4. starts the pipeline's tracked run and schedules steps as their inputs
   become ready: a step whose cache key is stored (and whose outputs still
   exist) is recorded as a cached step run and not executed; the others are
   submitted, retried on failure up to their ``retries``, and recorded with
   their outputs, cache row and lineage edges;
5. loads what the pipeline function returned, logs its numeric values as
   metrics of the pipeline run, and ends the run.

The first step that fails for good stops new steps from starting; the run
ends FAILED and :class:`StepFailed` names the step, its call site and its
error.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from keel.errors import InvalidInput, UserError
from keel.pipelines import cache as step_cache
from keel.pipelines.code import CodeDigest, code_digest, combine, project_modules
from keel.pipelines.definition import Pipeline, load_target
from keel.pipelines.executors import Executor, Handle, get_executor
from keel.pipelines.graph import Graph, Node, StepOutput, map_leaves
from keel.pipelines.lineage import Edge
from keel.pipelines.materialize import Materialized, load
from keel.pipelines.part import PipelineRecords, pipeline_records_for
from keel.pipelines.records import PipelineRun, StepRun
from keel.pipelines.task import SETTINGS_FIELDS, InputRef, StepResult, StepTask
from keel.uris import is_dataset_uri

if TYPE_CHECKING:
    from keel.data.client import DataClient
    from keel.tracking.client import TrackingClient

__all__ = ["StepEvent", "StepFailed", "run_pipeline"]

log = logging.getLogger("keel.pipelines")


class StepFailed(UserError):
    """A step failed on its last attempt; the pipeline run ended FAILED.

    A ``UserError``: the step's own code raised (its traceback is in the
    message), so the fix is in the step, not in Keel's storage or backends.

    Attributes:
        run: the pipeline run, with the failed step among ``run.steps``.
    """

    status_code = 500

    def __init__(self, message: str, run: PipelineRun) -> None:
        super().__init__(message)
        self.run = run


@dataclass(frozen=True)
class StepEvent:
    """Progress of one step: ``cached``, ``running``, ``retrying``, ``finished`` or ``failed``."""

    node: str
    status: str
    run_id: str
    detail: str = ""


class _Pins:
    """Dataset references resolved once per run: ``datasets:/x`` → ``datasets:/x@3``."""

    def __init__(self, data: DataClient) -> None:
        self.data = data
        self.digests: dict[str, str] = {}

    def pin(self, leaf: Any) -> Any:
        if not is_dataset_uri(leaf):
            return leaf
        version = self.data.get_version(leaf)
        self.digests[version.uri] = version.digest
        return version.uri

    def key(self, leaf: Any) -> Any:
        if isinstance(leaf, InputRef):
            return leaf.key()
        if isinstance(leaf, str) and leaf in self.digests:
            return {"$keel": "dataset", "digest": self.digests[leaf]}
        return leaf


def _input_edges(node_id: str, run_id: str, arguments: dict[str, Any], pins: _Pins) -> list[Edge]:
    edges: list[Edge] = []
    for name, value in arguments.items():

        def visit(leaf: Any, name: str = name) -> Any:
            if isinstance(leaf, InputRef):
                edges.append(Edge(leaf.output.uri, f"runs:/{run_id}", "input", name))
            elif isinstance(leaf, str) and leaf in pins.digests:
                edges.append(Edge(leaf, f"runs:/{run_id}", "input", name))
            return leaf

        map_leaves(value, visit)
    return edges


def _scalar_metrics(value: Any, prefix: str = "") -> dict[str, float]:
    """Numbers in what the pipeline returned, by dotted key (``{"eval": {"auc": 0.9}}`` → ``eval.auc``)."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, int | float):
        return {prefix or "return": float(value)}
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for key, item in value.items():
            out.update(_scalar_metrics(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {}


class _Run:
    """The state of one pipeline run while it is scheduled."""

    def __init__(
        self,
        pipe: Pipeline,
        graph: Graph,
        executor: Executor,
        *,
        use_cache: bool,
        seed: int | None,
        pins: _Pins,
        codes: dict[str, CodeDigest],
        externals: dict[str, dict[str, str]],
        on_event: Callable[[StepEvent], None] | None,
        tracking: TrackingClient,
        records: PipelineRecords,
    ) -> None:
        self.pipe = pipe
        self.graph = graph
        self.executor = executor
        self.use_cache = use_cache
        self.seed = seed
        self.pins = pins
        self.codes = codes
        self.externals = externals
        self.on_event = on_event
        self.settings = tracking.settings
        self.client = tracking
        self.records = records
        # Outputs go where the client's transport points: the server's blob routes over http.
        self.artifacts = tracking.artifacts
        self.steps: dict[str, StepRun] = {}
        self.outputs: dict[str, list[Materialized]] = {}
        self.tasks: dict[str, tuple[StepTask, str, Any]] = {}
        self.run_id = ""
        self.experiment_id = 0

    def emit(self, node: str, status: str, run_id: str, detail: str = "") -> None:
        log.info("step %s: %s%s", node, status, f" ({detail})" if detail else "")
        if self.on_event is not None:
            self.on_event(StepEvent(node, status, run_id, detail))

    def arguments(self, node: Node) -> dict[str, Any]:
        def resolve(leaf: Any) -> Any:
            if isinstance(leaf, StepOutput):
                produced = self.outputs[leaf.node.id]
                return InputRef(produced[leaf.index or 0], leaf.path)
            return leaf

        return {k: map_leaves(v, resolve) for k, v in node.args.items()}

    def code_edges(self, node_id: str, run_id: str) -> list[Edge]:
        node = self.graph.nodes[node_id]
        edges = [
            Edge(
                f"code:/{self.codes[node_id].digest}", f"runs:/{run_id}", "code", node.step.qualname
            )
        ]
        edges += [
            Edge(f"artifacts:/{digest}", f"runs:/{run_id}", "input", f"external:{path}")
            for path, digest in self.externals[node_id].items()
        ]
        return edges

    def start_node(self, node: Node) -> Handle | None:
        """Record a cache hit, or create the step run and submit its first attempt."""
        arguments = self.arguments(node)
        keyed = {k: map_leaves(v, self.pins.key) for k, v in arguments.items()}
        code = self.codes[node.id].digest
        key = step_cache.cache_key(
            step=node.step.qualname,
            code=code,
            arguments=keyed,
            external=self.externals[node.id],
            seed=self.seed,
        )
        cacheable = self.use_cache and node.step.cache
        hit = self.records.lookup_cache(key) if cacheable else None
        common: dict[str, Any] = {
            "experiment_id": self.experiment_id,
            "pipeline_run_id": self.run_id,
            "node": node.id,
            "step": node.step.qualname,
            "code_digest": code,
            "cache_key": key,
            "inputs": keyed,
        }
        if hit is not None:
            run_id = self.records.create_step_run(cached=True, source_run_id=hit.run_id, **common)
            edges = _input_edges(node.id, run_id, arguments, self.pins) + self.code_edges(
                node.id, run_id
            )
            # The outputs stay attributed to the run that made them; this one reused them.
            edges.append(Edge(f"runs:/{hit.run_id}", f"runs:/{run_id}", "reused"))
            self.records.finish_step(
                run_id=run_id,
                step=node.step.qualname,
                outputs=hit.outputs,
                attempts=0,
                seconds=0.0,
                cache_key=key,
                remember=False,
                edges=edges,
                list_artifacts=True,
            )
            self.client.set_terminated(run_id, "FINISHED")
            self.outputs[node.id] = hit.outputs
            self.steps[node.id] = self._step_run(
                node, run_id, "FINISHED", hit.outputs, True, hit.run_id, 0, 0.0, None, key
            )
            self.emit(node.id, "cached", run_id, f"outputs of run {hit.run_id[:12]}")
            return None
        run_id = self.records.create_step_run(cached=False, **common)
        task = StepTask(
            node=node.id,
            where=str(node.site),
            fn=node.step.fn,
            arguments=arguments,
            outputs=node.step.outputs,
            run_id=run_id,
            attempt=1,
            settings={k: _setting(self.settings, k) for k in SETTINGS_FIELDS},
            seed=self.seed,
            timeout=node.step.timeout,
            resources=node.step.resources,
            cwd=os.getcwd(),
            paths=tuple(p for p in sys.path if p and os.path.isdir(p)),
        )
        self.tasks[node.id] = (task, key, arguments)
        self.emit(node.id, "running", run_id)
        return self.executor.submit(task)

    def _step_run(
        self,
        node: Node,
        run_id: str,
        status: str,
        outputs: list[Materialized],
        cached: bool,
        source: str | None,
        attempts: int,
        seconds: float | None,
        error: str | None,
        key: str | None,
    ) -> StepRun:
        return StepRun(
            node.id,
            node.step.qualname,
            run_id,
            status,
            cached,
            {o.name: o.digest for o in outputs},
            source,
            attempts,
            seconds,
            error,
            self.codes[node.id].digest,
            key,
            outputs,
        )

    def finish(self, result: StepResult) -> Handle | StepRun | None:
        """Record an attempt's end; return a retry's handle, or the failed step run."""
        node = self.graph.nodes[result.node]
        task, key, arguments = self.tasks[result.node]
        if result.ok:
            edges = _input_edges(node.id, task.run_id, arguments, self.pins)
            edges += self.code_edges(node.id, task.run_id)
            edges += [Edge(f"runs:/{task.run_id}", o.uri, "output", o.name) for o in result.outputs]
            self.records.finish_step(
                run_id=task.run_id,
                step=node.step.qualname,
                outputs=result.outputs,
                attempts=result.attempt,
                seconds=result.seconds,
                cache_key=key,
                remember=node.step.cache,
                edges=edges,
            )
            self.outputs[node.id] = result.outputs
            self.steps[node.id] = self._step_run(
                node,
                task.run_id,
                "FINISHED",
                result.outputs,
                False,
                None,
                result.attempt,
                result.seconds,
                None,
                key,
            )
            self.emit(node.id, "finished", task.run_id, f"{result.seconds:.2f}s")
            return None
        if result.timed_out or self.client.get_run_info(task.run_id).status == "RUNNING":
            self.client.set_terminated(task.run_id, "FAILED")  # the attempt was killed mid-run
        if result.attempt <= node.step.retries:
            self.emit(
                node.id, "retrying", task.run_id, f"attempt {result.attempt} failed: {result.error}"
            )
            time.sleep(node.step.retry_delay)
            retry = replace(task, attempt=result.attempt + 1)
            self.tasks[node.id] = (retry, key, arguments)
            return self.executor.submit(retry)
        error = result.error or "failed"
        details = error + (f"\n{result.traceback}" if result.traceback else "")
        self.records.finish_step(
            run_id=task.run_id,
            step=node.step.qualname,
            outputs=[],
            attempts=result.attempt,
            seconds=result.seconds,
            cache_key=key,
            remember=False,
            edges=[],
            error=details,
        )
        failed = self._step_run(
            node,
            task.run_id,
            "FAILED",
            [],
            False,
            None,
            result.attempt,
            result.seconds,
            details,
            key,
        )
        self.steps[node.id] = failed
        self.emit(node.id, "failed", task.run_id, error)
        return failed

    def schedule(self) -> StepRun | None:
        """Run every step, in dependency order; return the step that failed, if one did."""
        pending = list(self.graph.nodes)
        running: list[Handle] = []
        failed: StepRun | None = None
        parallel = self.executor.name != "local"
        while (pending and failed is None) or running:
            if failed is None:
                for node_id in list(pending):
                    node = self.graph.nodes[node_id]
                    if not all(u in self.outputs for u in node.upstream):
                        continue
                    if running and not parallel:
                        break
                    pending.remove(node_id)
                    handle = self.start_node(node)
                    if handle is not None:
                        running.append(handle)
                        if not parallel:
                            break
            if not running:
                if (
                    pending
                    and failed is None
                    and not any(
                        all(u in self.outputs for u in self.graph.nodes[n].upstream)
                        for n in pending
                    )
                ):  # pragma: no cover - the graph is built in dependency order
                    raise InvalidInput(f"steps {', '.join(pending)} can never run: a cycle")
                continue
            for handle, result in self.executor.wait(running):
                running.remove(handle)
                outcome = self.finish(result)
                if isinstance(outcome, Handle):
                    running.append(outcome)
                elif isinstance(outcome, StepRun) and failed is None:
                    failed = outcome
        return failed


def _setting(settings: Any, name: str) -> Any:
    value = getattr(settings, name)
    return str(value) if name == "home" else value


def run_pipeline(
    target: Pipeline | str,
    *,
    params: Mapping[str, Any] | None = None,
    executor: str | Executor = "local",
    cache: bool = True,
    seed: int | None = None,
    experiment: str | None = None,
    on_event: Callable[[StepEvent], None] | None = None,
    reproduces: str | None = None,
) -> PipelineRun:
    """Run a pipeline as a tracked run with a nested run per step.

    Args:
        target: a :class:`Pipeline`, ``"package.module:attr"`` or ``"path/file.py:attr"``.
        params: the pipeline's parameters (JSON-able). A string such as
            ``"datasets:/churn"`` is pinned to the version it names now.
        executor: ``"local"`` (default) or ``"ray"`` (``ray_address`` from settings).
        cache: ``False`` runs every step (``--no-cache``); their outputs are still cached.
        seed: seed ``random``, NumPy and PyTorch with this before every step attempt.
        experiment: the experiment of the pipeline run (default: the current one).
        on_event: called as steps are cached, start, retry, finish or fail.
        reproduces: the run this one re-executes (set by ``keel runs reproduce``).

    Returns:
        The finished run: ``.run_id``, ``.status``, ``.outputs`` (the pipeline
        function's return value with step outputs loaded back) and ``.steps``.

    Raises:
        InvalidInput: a bad target, parameter, argument or resource request, found
            before anything runs (messages name the file and line).
        NotFound: a dataset reference or an external input that does not exist.
        StepFailed: a step failed on its last attempt; the run ended FAILED.
    """
    pipe = load_target(target)
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32
    ):
        raise InvalidInput(f"seed must be an integer in [0, 2**32), got {seed!r}")
    from keel.config import get_settings
    from keel.data.client import data_part
    from keel.tracking import fluent
    from keel.tracking.remote import tracking_for
    from keel.transport import local_or

    settings = get_settings()
    # The one transport of this run: SQL and local files, or keel server when settings name
    # one; its tracking, records and data parts are what the run writes through.
    transport = local_or(None, settings)
    tracking = tracking_for(transport)
    records = pipeline_records_for(tracking)
    pins = _Pins(data_part(transport))
    pinned = {k: map_leaves(v, pins.pin) for k, v in pipe.resolve_params(params).items()}
    graph = pipe.build(pinned)
    for node in graph.nodes.values():
        node.args = {k: map_leaves(v, pins.pin) for k, v in node.args.items()}
    chosen = get_executor(executor, ray_address=settings.ray_address)
    by_step: dict[int, CodeDigest] = {}
    codes = {}
    for node in graph.nodes.values():
        if id(node.step) not in by_step:
            by_step[id(node.step)] = code_digest(node.step.fn)
        codes[node.id] = by_step[id(node.step)]
    pipeline_code = code_digest(pipe.fn)
    total = combine(
        {"pipeline": pipeline_code.digest, **{f"step:{n}": c.digest for n, c in codes.items()}}
    )
    externals = {
        node.id: step_cache.external_digests(node.step.external, f"{node.site}: step {node.id!r}")
        for node in graph.nodes.values()
    }
    chosen.start(project_modules([pipeline_code, *by_step.values()]))
    for node in graph.nodes.values():
        chosen.check_resources(node.id, str(node.site), node.step.resources)
    state = _Run(
        pipe,
        graph,
        chosen,
        use_cache=cache,
        seed=seed,
        pins=pins,
        codes=codes,
        externals=externals,
        on_event=on_event,
        tracking=tracking,
        records=records,
    )
    sources = {k: v for c in (pipeline_code, *by_step.values()) for k, v in c.sources.items()}
    snapshot = state.artifacts.put_json({"format": "keel.code-snapshot/v1", "sources": sources})
    try:
        with fluent.start_run(
            pipe.name,
            nested=True,
            experiment=experiment,
            tags={"keel.kind": "pipeline", "keel.pipeline": pipe.name},
        ) as active:
            state.run_id = active.id
            state.experiment_id = active.info.experiment_id
            fluent.log_params({k: _param_text(v) for k, v in graph.params.items()})
            records.insert_pipeline_run(
                run_id=active.id,
                pipeline=pipe.name,
                target=pipe.target or f"<in-memory>:{pipe.name}",
                code_digest=total,
                code_snapshot=snapshot.digest,
                params=graph.params,
                executor=chosen.name,
                seed=seed,
                use_cache=cache,
                reproduces=reproduces,
                edges=[Edge(f"code:/{total}", f"runs:/{active.id}", "code", pipe.qualname)],
            )
            failed = state.schedule()
            run = PipelineRun(
                active.id,
                pipe.name,
                "FAILED" if failed else "FINISHED",
                None,
                [state.steps[n] for n in graph.nodes if n in state.steps],
                graph.params,
                total,
                pipe.target or "",
                chosen.name,
                seed,
                reproduces,
            )
            if failed is not None:
                node = graph.nodes[failed.node]
                first_line = (failed.error or "").splitlines()[0] if failed.error else "failed"
                raise StepFailed(
                    f"step {failed.node!r} ({node.site}) failed after {failed.attempts} "
                    f"attempt(s): {first_line}; see `keel runs show {failed.run_id}`",
                    run,
                )
            run.outputs = _finish_outputs(state, graph, active.id)
    finally:
        chosen.close()
        transport.close()
    return run


def _param_text(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _finish_outputs(state: _Run, graph: Graph, run_id: str) -> Any:
    """Store references to what the pipeline returned, log its numbers, load its values."""
    from keel.tracking import fluent

    if graph.returned is None:
        state.records.set_pipeline_outputs(run_id, None)
        return None

    def reference(leaf: Any) -> Any:
        if isinstance(leaf, StepOutput):
            output = state.outputs[leaf.node.id][leaf.index or 0]
            return {
                "$keel": "output",
                "node": leaf.node.id,
                "path": list(leaf.path),
                **output.to_dict(),
            }
        return leaf

    cache_dir = state.settings.home / "cache" / "outputs"
    cache_dir.mkdir(parents=True, exist_ok=True)

    def value(leaf: Any) -> Any:
        if isinstance(leaf, StepOutput):
            loaded = load(state.outputs[leaf.node.id][leaf.index or 0], state.artifacts, cache_dir)
            for key in leaf.path:
                loaded = loaded[key]
            return loaded
        return leaf

    state.records.set_pipeline_outputs(run_id, map_leaves(graph.returned, reference))
    loaded = map_leaves(graph.returned, value)
    metrics = _scalar_metrics(loaded)
    if metrics:
        fluent.log_metrics(metrics)
    return loaded
