"""A policy's retrain as a job of a queue: what it asks for, and how the controller follows it.

A model policy whose ``retrain`` names a job ``queue`` does not run its pipeline
in the controller. When its cycle enters ``retraining``, the controller submits
the pipeline, with the parameters it pinned when the trigger fired, as one
pipeline job of that queue (``keel jobs``), asking for the policy's
``resources``; the job's id goes into the cycle's state with a
``retrain_started`` event. Later ticks read the job::

    queued, admitted, running, preempted   wait (nothing is written; the tick says why)
    succeeded                              → gating     (retrain_finished: its run, its version)
    failed, cancelled                      → idle       (retrain_failed: the job's reason)

A preempted job is requeued by its worker and resumes from its pipeline's step
cache: the controller goes on waiting for the same job and never submits a
second one. A controller that stopped between submitting the job and recording
it is followed by one that finds the job by its name (the policy and the
trigger's key) instead of submitting another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.automation.policy import Policy
from keel.automation.resources import RetrainResources
from keel.automation.state import (
    GATING,
    IDLE,
    RETRAINING,
    CycleState,
    StateHandlers,
    Transition,
)
from keel.errors import InvalidInput, KeelError, NotFound, PermissionDenied
from keel.jobs.entities import ACTIVE, CANCELLED, FAILED, SUCCEEDED, Job
from keel.uris import ModelURI, parse_model_uri

if TYPE_CHECKING:
    from keel.client import Client

__all__ = [
    "Progress",
    "QueuedRetrain",
    "describe_params",
    "finished",
    "job_name",
    "jsonable_outputs",
    "registered_version",
    "stored_outputs",
]

#: The output a pipeline job records its registered model from (``keel.jobs.entry``).
_JOB_MODEL_OUTPUT = "model"


# -- what a finished retrain made ------------------------------------------------------------


def describe_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "no parameters"


def registered_version(policy: Policy, outputs: Any) -> int:
    """The version of ``policy.model`` the pipeline registered, from its ``output`` key.

    Raises:
        InvalidInput: the outputs hold no ``models:/<model>/<version>`` under that key.
    """
    assert policy.retrain is not None
    key = policy.retrain.output
    if not isinstance(outputs, dict) or key not in outputs:
        raise InvalidInput(
            f"the pipeline must return a dict with {key!r}: the registered model "
            f"(models:/{policy.model}/N); it returned {type(outputs).__name__}"
        )
    uri = str(outputs[key])
    try:
        parsed = parse_model_uri(uri)
    except InvalidInput:
        parsed = None
    if not isinstance(parsed, ModelURI) or parsed.version is None or parsed.name != policy.model:
        raise InvalidInput(
            f"the pipeline's {key!r} output must be models:/{policy.model}/<version>, got {uri!r}"
        )
    return parsed.version


def jsonable_outputs(outputs: Any) -> dict[str, Any]:
    """The scalar values among a pipeline's outputs (what ``gates.data: pipeline:…`` reads)."""
    if not isinstance(outputs, dict):
        return {}
    out = {}
    for key, value in outputs.items():
        if isinstance(value, str | int | float | bool) or value is None:
            out[str(key)] = value
    return out


def stored_outputs(client: Client, run_id: str) -> Any:
    """What a stored pipeline run returned, with its JSON step outputs read back.

    The store keeps a step's output as a reference to its content; a value such as
    ``models:/churn/4`` is read back, while a frame or a model stays a reference
    (neither is a version nor a ``pipeline:`` path the gates could read).
    """
    from keel.pipelines.materialize import Materialized, load
    from keel.pipelines.part import pipeline_records_for

    outputs = pipeline_records_for(client.tracking).get_pipeline_run(run_id).outputs
    if not isinstance(outputs, dict):
        return outputs
    cache = client.settings.home / "cache" / "outputs"
    out: dict[str, Any] = {}
    for key, value in outputs.items():
        if isinstance(value, dict) and value.get("$keel") == "output":
            if value.get("type") != "json":
                out[key] = value
                continue
            loaded = load(Materialized.from_dict(value), client.artifacts, cache)
            for part in value.get("path") or []:
                loaded = loaded[part]
            value = loaded
        out[key] = value
    return out


def finished(
    policy: Policy,
    state: CycleState,
    *,
    run_id: str,
    version: int,
    outputs: dict[str, Any],
    now: int,
    job: Job | None = None,
) -> Transition:
    """``retraining → gating``: the pipeline run registered ``version`` (through ``job``)."""
    via = "" if job is None else f" (job {job.id})"
    details: dict[str, Any] = {"run_id": run_id, "outputs": outputs}
    if job is not None:
        details["job"] = job.id
    return Transition(
        GATING,
        "retrain_finished",
        f"pipeline run {run_id}{via} registered {policy.model}/{version}",
        version=version,
        details=details,
        changes={
            "candidate_version": version,
            "pipeline_run_id": run_id,
            "phase_started_at": now,
            "detail": {**state.detail, "outputs": outputs},
        },
    )


# -- following the job -------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """What one look at a queued retrain did: moved the cycle, or why it waits."""

    moved: bool
    waiting: str | None = None


def job_name(policy: Policy, state: CycleState) -> str:
    """The retrain job's name: the policy and the occasion (a trigger key is claimed once)."""
    occasion = state.trigger_key or f"epoch {state.epoch}"
    return f"{policy.name} retrain: {occasion}"[:256]


class QueuedRetrain(StateHandlers):
    """The ``retraining`` state of a policy whose retrain has a queue (see the module docstring)."""

    def advance(self, policy: Policy, state: CycleState) -> Progress:
        """Submit the cycle's job if none is recorded; else act on where the job stands."""
        recorded = state.detail.get("job")
        if recorded is None:
            return self._submit(policy, state)
        try:
            job = self.client.jobs.get(int(recorded))
        except NotFound:
            return self._fail(
                policy, state, f"retrain job {recorded} no longer exists; the cycle ends"
            )
        if job.state == SUCCEEDED:
            return self._finish(policy, state, job)
        if job.state in (FAILED, CANCELLED):
            return self._fail(
                policy,
                state,
                f"retrain job {job.id} {job.state} in queue {job.queue}: {job.reason or 'no reason'}",
                {
                    "job": job.id,
                    "state": job.state,
                    "attempt": job.attempt,
                    "exit_code": job.exit_code,
                },
            )
        # queued, admitted, running, or preempted (its worker requeues it; it resumes from
        # its pipeline's step cache): the same job goes on, so nothing is written.
        where = f" on pool {job.pool}" if job.pool and job.state in ACTIVE else ""
        because = f": {job.reason}" if job.reason else ""
        return Progress(
            False, f"retrain job {job.id} is {job.state} in queue {job.queue}{where}{because}"
        )

    def _submit(self, policy: Policy, state: CycleState) -> Progress:
        retrain = policy.retrain
        assert retrain is not None and retrain.queue is not None
        resources = retrain.resources or RetrainResources()
        params = dict(state.detail.get("params") or {})
        name = job_name(policy, state)
        job = self._submitted_before(policy, name)
        if job is not None:
            reason = (
                f"following job {job.id} ({retrain.pipeline}) in queue {job.queue}: a controller "
                "that stopped submitted it for this cycle before it could record it"
            )
        else:
            try:
                job = self.client.jobs.submit(
                    retrain.pipeline,
                    queue=retrain.queue,
                    params=params,
                    name=name,
                    policy=policy.name,
                    **resources.submit_arguments(),
                )
            except (InvalidInput, NotFound, PermissionDenied) as exc:
                return self._fail(
                    policy, state, f"the retrain could not be queued in {retrain.queue}: {exc}"
                )
            reason = (
                f"submitted {retrain.pipeline} with {describe_params(params)} as job {job.id} "
                f"to queue {job.queue}, asking for {resources.describe()}"
            )
        moved = self.store.transition(
            state,
            policy,
            Transition(
                RETRAINING,
                "retrain_started",
                reason[:1000],
                details={
                    "job": job.id,
                    "queue": job.queue,
                    "params": params,
                    "resources": resources.to_dict(),
                },
                changes={"detail": {**state.detail, "job": job.id}},
            ),
        )
        self.moved(policy, moved)
        return Progress(True)

    def _submitted_before(self, policy: Policy, name: str) -> Job | None:
        """This cycle's job, if a controller submitted it and stopped before recording it."""
        for job in self.client.jobs.list(policy=policy.name, limit=50):
            if job.name == name:
                return job
        return None

    def _finish(self, policy: Policy, state: CycleState, job: Job) -> Progress:
        if job.run_id is None:
            return self._fail(
                policy,
                state,
                f"retrain job {job.id} succeeded without recording its pipeline run, so its "
                "model version is unknown; the cycle ends",
                {"job": job.id},
            )
        assert policy.retrain is not None
        try:
            outputs = stored_outputs(self.client, job.run_id)
            recorded = job.model_version if job.model_name == policy.model else None
            if recorded is not None and policy.retrain.output == _JOB_MODEL_OUTPUT:
                version = int(recorded)
            else:  # the job read another output than the policy names: read the policy's
                version = registered_version(policy, outputs)
        except KeelError as exc:
            return self._fail(
                policy,
                state,
                f"retrain job {job.id} succeeded, but {type(exc).__name__}: {exc}",
                {"job": job.id, "run_id": job.run_id},
            )
        change = finished(
            policy,
            state,
            run_id=job.run_id,
            version=version,
            outputs=jsonable_outputs(outputs),
            now=self.clock(),
            job=job,
        )
        self.moved(policy, self.store.transition(state, policy, change))
        return Progress(True)

    def _fail(
        self,
        policy: Policy,
        state: CycleState,
        reason: str,
        details: dict[str, Any] | None = None,
    ) -> Progress:
        """End the cycle (back to idle, the cooldown starts) with ``retrain_failed``."""
        self.store.transition(
            state,
            policy,
            Transition(
                IDLE,
                "retrain_failed",
                reason[:1000],
                details=details,
                changes={"cycle_ended_at": self.clock()},
            ),
        )
        return Progress(False)
