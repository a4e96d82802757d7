"""The controller: runs each policy's cycle, one decision at a time, crash-safe.

``Controller.tick()`` looks at every enabled policy once; ``run()`` ticks
until stopped. For each policy it takes the lease, reads the stored state and
acts on it::

    idle          a trigger fires and its key is claimed  → retraining  (triggered)
                  (a prompt: a candidate exists too)      → gating      (triggered)
    retraining    the pipeline runs and registers a version → gating   (retrain_started,
                                                                       retrain_finished)
                  (with retrain.queue: submitted once as a job of that queue (retrain_started),
                  waited for across ticks → gating, or → idle (retrain_failed))
    gating        the gates pass: the canary route is added → canary   (gate_passed,
                                                                       canary_started)
    canary        live metrics breach the rollback bounds → idle        (rolled_back)
                  enough requests and the promotion bounds hold:
                  the alias moves and the canary route goes → idle      (promoted)
                  the alias needs approvals first → awaiting_approval   (approval_requested)
    awaiting_…    approvals arrived → idle (promoted); live metrics break → idle (rolled_back)

Each arrow is one transaction: the state's compare-and-set, the event, its
audit entry and — for canary_started, promoted and rolled_back — the
deployment revision and the alias move themselves. Each such arrow is one
method of :class:`~keel.automation.state.PolicyStore` (``trigger``,
``start_canary``, ``roll_back``, ``promote``) that opens the transaction, so
they commit or roll back together; through ``keel server`` the same method
runs on the server, as the token's user, behind one request. What to do with a canary is
:func:`~keel.automation.verdict.judge_canary`'s decision; how its routes change
is :class:`~keel.serving.deployments.DeploymentSpec`'s. A controller killed
anywhere leaves a state another controller resumes: a half-run retrain or
gate is run again (with the same pinned parameters), a canary goes on being
measured from where it started. The alias is a single pointer moved by
compare-and-set, so there is never a second champion.

A prompt policy runs the same cycle on a registered prompt and a prompt
deployment. Nothing is retrained: its candidate is the newest version of the
prompt, when it is newer than the alias's and the policy has not tried it (a
cycle for it ended: gate_failed, rolled_back or promoted), so a rolled-back
version is never canaried again, nor an older one it superseded. The gates
are an evaluation against the alias; the canary is judged on the gateway's
traces (error rate, latency, cost per request, and feedback where it
arrives) by the same :func:`~keel.automation.verdict.judge_canary`;
promotion moves the prompt's alias through the registry's approvals, like a
model's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from keel.automation.durations import human_duration
from keel.automation.events import Event
from keel.automation.gates import run_gates
from keel.automation.live import LiveMetrics, measure_canary
from keel.automation.policy import Policy
from keel.automation.retrain_jobs import (
    QueuedRetrain,
    describe_params,
    finished,
    jsonable_outputs,
    registered_version,
)
from keel.automation.state import (
    AWAITING_APPROVAL,
    CANARY,
    GATING,
    IDLE,
    RETRAINING,
    CycleState,
    PolicyStore,
    Transition,
    new_owner,
)
from keel.automation.triggers import Fired, check_triggers, latest_dataset_versions
from keel.automation.verdict import judge_canary
from keel.errors import ApprovalRequired, Conflict, InvalidInput, KeelError
from keel.store.sql import now_ms
from keel.uris import DatasetURI, is_dataset_uri, parse_dataset_uri

if TYPE_CHECKING:
    from keel.client import Client
    from keel.llm import Prompts
    from keel.llm.entities import PromptVersion
    from keel.registry.client import RegistryClient
    from keel.serving.deployments import Deployments

__all__ = ["Controller", "TickResult"]

log = logging.getLogger("keel.automation")

#: Events that end a cycle without a promotion: the pipeline, the gates or the canary failed.
FAILED_KINDS = ("retrain_failed", "gate_failed", "rolled_back")
#: Events that end a cycle about a candidate: a prompt version with one of them was tried.
TRIED_KINDS = ("gate_failed", "rolled_back", "promoted")


@dataclass
class TickResult:
    """What one tick did to one policy."""

    policy: str
    before: str
    after: str
    events: list[Event] = field(default_factory=list)
    skipped: str | None = None
    #: What the cycle waits for, when it waits on something outside this controller
    #: (a retrain job of a queue).
    waiting: str | None = None

    @property
    def failed(self) -> bool:
        """A cycle ended in failure during this tick (see :data:`FAILED_KINDS`)."""
        return any(e.kind in FAILED_KINDS for e in self.events)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "before": self.before,
            "after": self.after,
            "failed": self.failed,
            "events": [e.to_dict() for e in self.events],
            "skipped": self.skipped,
            "waiting": self.waiting,
        }


class Controller:
    """Runs policies' cycles (see the module docstring).

    Args:
        client: a ``keel.Client`` (default: one on the process settings).
        owner: this controller's lease id (default ``host:pid:random``).
        lease_seconds: how long a lease lasts without renewal; renewed while working.
        executor: the pipeline executor for retraining (``local`` or ``ray``).
        monitor: ``monitor(deployment, window_seconds) -> result`` for drift and quality
            triggers (default: :func:`keel.monitoring.run_monitor` through ``client``).
        clock: milliseconds since the epoch (tests move time forward).
    """

    def __init__(
        self,
        client: Client | None = None,
        *,
        owner: str | None = None,
        lease_seconds: float = 60.0,
        executor: str = "local",
        monitor: Callable[[str, float], Any] | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        from keel.client import Client

        self.client = client or Client()
        self.store = PolicyStore(self.client)
        self.owner = owner or new_owner()
        self.lease_seconds = lease_seconds
        self.executor = executor
        self.monitor = monitor or self._run_monitor
        self.clock = clock
        self._mine: set[tuple[str, int]] = set()  # (policy, epoch) this process moved into
        self._waiting: dict[str, str] = {}  # policy → what its cycle waits for, this step

    # -- the loop -------------------------------------------------------------------------

    def tick(self, names: list[str] | None = None) -> list[TickResult]:
        """One pass over the enabled policies (or the named ones)."""
        rows = self.store.list(enabled_only=names is None)
        wanted = [r["name"] for r in rows if names is None or r["name"] in names]
        missing = sorted(set(names or []) - {r["name"] for r in rows})
        if missing:
            raise InvalidInput(f"no automation policy {', '.join(map(repr, missing))}")
        return [self.step(name) for name in wanted]

    def run(
        self,
        interval: float = 30.0,
        stop: threading.Event | None = None,
        on_tick: Callable[[list[TickResult]], None] | None = None,
    ) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set (or Ctrl-C)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                results = self.tick()
            except KeelError as exc:  # the store is down, say: keep trying
                log.warning("keel: automation tick failed: %s", exc)
                results = []
            if on_tick is not None:
                on_tick(results)
            stop.wait(interval)

    def step(self, name: str) -> TickResult:
        """Advance one policy as far as it can go now, under its lease."""
        before = self.store.state(name)
        first_event = self.store.last_event_id(name)
        if not self.store.acquire(name, self.owner, self.lease_seconds):
            return TickResult(
                name, before.state, before.state, skipped="another controller holds it"
            )
        self._waiting.pop(name, None)
        try:
            with self._renewing(name):
                policy = self.store.get(name)
                for _ in range(8):  # idle → retraining → gating → canary can all happen now
                    state = self.store.state(name)
                    try:
                        moved = self._act(policy, state)
                    except Conflict as exc:  # another controller moved it: read it again
                        log.info("keel: %s: %s", name, exc)
                        moved = True
                    if not moved:
                        break
        finally:
            self.store.release(name, self.owner)
        after = self.store.state(name)
        return TickResult(
            name,
            before.state,
            after.state,
            self.store.events_after(name, first_event),
            waiting=self._waiting.pop(name, None),
        )

    @contextlib.contextmanager
    def _renewing(self, name: str) -> Iterator[None]:
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.lease_seconds / 3):
                try:
                    self.store.acquire(name, self.owner, self.lease_seconds)
                except KeelError as exc:
                    log.warning("keel: could not renew the lease on %s: %s", name, exc)

        thread = threading.Thread(target=renew, name=f"keel-lease-{name}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=5)

    def _act(self, policy: Policy, state: CycleState) -> bool:
        if policy.is_index:  # rebuild, retrieval eval, alias move: no canary
            from keel.automation.indexes import IndexCycle

            cycle = IndexCycle(self.client, self.store, self.clock, self._moved)
            handler = cycle.handler(state.state)
        else:
            handler = {
                IDLE: self._idle,
                RETRAINING: self._retraining,
                GATING: self._gating,
                CANARY: self._canary,
                AWAITING_APPROVAL: self._awaiting_approval,
            }[state.state]
        # A retrain job runs on by itself: following it is waiting, not resuming half-run work.
        following = state.state == RETRAINING and state.detail.get("job") is not None
        if (
            state.state in (RETRAINING, GATING)
            and (policy.name, state.epoch) not in self._mine
            and not following
        ):
            self.store.note(
                policy,
                "resumed",
                f"picked up a cycle left in {state.state} by a controller that stopped",
                state.candidate_version,
            )
            self._mine.add((policy.name, state.epoch))
        return handler(policy, state)

    def _moved(self, policy: Policy, state: CycleState) -> CycleState:
        self._mine.add((policy.name, state.epoch))
        return state

    def _run_monitor(self, deployment: str, window: float) -> Any:
        """The deployment's monitor over the last ``window`` seconds, through this client
        (through ``keel server``, the server runs it over the logs under its artifact root)."""
        from keel.monitoring import run_monitor

        return run_monitor(deployment, window=f"{int(window)}s", client=self.client)

    def _deployments(self) -> Deployments:
        from keel.serving.deployments import Deployments

        return Deployments(self.client)

    # -- idle: triggers -------------------------------------------------------------------------

    def _idle(self, policy: Policy, state: CycleState) -> bool:
        now = self.clock()
        ended = state.cycle_ended_at
        if ended is not None and now - ended < policy.cooldown * 1000:
            return False
        seen = dict(state.detail.get("datasets_seen") or {})
        watched = [t.dataset for t in policy.triggers if t.kind == "dataset" and t.dataset]
        if any(d not in seen for d in watched):
            # Apply records the baseline; a state stored before it did is baselined here.
            current = latest_dataset_versions(
                [d for d in watched if d not in seen], client=self.client
            )
            seen.update({d: current.get(d, 0) for d in watched if d not in seen})
            self.store.save_detail(state, {"datasets_seen": seen})
            return True
        since = ended if ended is not None else int(state.detail.get("applied_at") or 0)
        if policy.is_prompt:
            return self._idle_prompt(policy, state, now, since, seen)
        monitored: dict[float, Any] = {}

        def monitor(deployment: str, window: float) -> Any:
            if window not in monitored:
                monitored[window] = self.monitor(deployment, window)
            return monitored[window]

        champion = self.client.get_alias(policy.model, policy.alias)
        fired = check_triggers(
            policy,
            now_ms=now,
            since_ms=since,
            seen_datasets=seen,
            monitor=monitor,
            champion=champion,
            client=self.client,
            claimed=lambda key: self.store.trigger_claimed(policy.name, key),
        )
        if fired is None:
            return False
        assert policy.retrain is not None  # a model policy retrains (checked when parsed)
        params = _pin_params(policy.retrain.params, self.client)
        baseline = champion
        # A dataset version this retrain reads is not news for a later trigger.
        for ref in filter(None, map(_dataset_param, params.values())):
            if ref.name in seen and ref.version is not None:
                seen[ref.name] = max(seen[ref.name], ref.version)
        _consume_dataset_news(fired, seen)
        moved = self.store.trigger(
            state,
            policy,
            fired.key,
            Transition(
                RETRAINING,
                "triggered",
                fired.reason,
                version=baseline,
                details={"trigger": fired.key, **fired.details, "params": params},
                changes={
                    "trigger_key": fired.key,
                    "baseline_version": baseline,
                    "candidate_version": None,
                    "pipeline_run_id": None,
                    "phase_started_at": now,
                    "detail": {"params": params, "datasets_seen": seen},
                },
            ),
        )
        if moved is None:
            return False  # another controller already acted on this occasion
        self._moved(policy, moved)
        return True

    # -- idle, for a prompt: a trigger and a candidate --------------------------------------------

    def _registry(self, policy: Policy) -> RegistryClient | Prompts:
        """Where the policy's alias and approvals are read: the models' or the prompts'."""
        return self.client.prompts if policy.is_prompt else self.client.registry

    def _idle_prompt(
        self, policy: Policy, state: CycleState, now: int, since: int, seen: dict[str, int]
    ) -> bool:
        baseline = self.client.prompts.get_alias(policy.model, policy.alias)
        candidate = self._prompt_candidate(policy, baseline)
        watched = [t.dataset for t in policy.triggers if t.kind == "dataset" and t.dataset]
        if candidate is None:
            # A new eval-set version that found nothing to try is not news for a version
            # registered later (the prompt trigger is there for that).
            current = latest_dataset_versions(watched, client=self.client) if watched else {}
            newer = {d: v for d, v in current.items() if v > seen.get(d, 0)}
            if newer:
                self.store.save_detail(state, {"datasets_seen": {**seen, **newer}})
            return False
        fired = check_triggers(
            policy,
            now_ms=now,
            # a schedule tries a version at the first scheduled time after it was registered
            since_ms=max(since, int(candidate.created_at or 0)),
            seen_datasets=seen,
            champion=baseline,
            client=self.client,
            candidate=candidate.version,
            claimed=lambda key: self.store.trigger_claimed(policy.name, key),
        )
        if fired is None:
            return False
        eval_set = None
        if policy.gates.evals is not None:
            eval_set = _pin_dataset(policy.gates.evals.dataset, "gates.evals.dataset", self.client)
            ref = _dataset_param(eval_set)
            if ref is not None and ref.name in seen and ref.version is not None:
                # the eval set the gates read is not news for a later trigger
                seen[ref.name] = max(seen[ref.name], ref.version)
        _consume_dataset_news(fired, seen)
        label = policy.label(candidate.version)
        moved = self.store.trigger(
            state,
            policy,
            fired.key,
            Transition(
                GATING,
                "triggered",
                f"{fired.reason}; a prompt is not retrained, its candidate {label} goes to "
                "the gates",
                version=candidate.version,
                details={
                    "trigger": fired.key,
                    **fired.details,
                    "candidate": candidate.version,
                    "baseline": baseline,
                    "retrain": "skipped: the candidate is a registered prompt version",
                    "eval_set": eval_set,
                },
                changes={
                    "trigger_key": fired.key,
                    "baseline_version": baseline,
                    "candidate_version": candidate.version,
                    "pipeline_run_id": None,
                    "phase_started_at": now,
                    "detail": {"eval_set": eval_set, "datasets_seen": seen},
                },
            ),
        )
        if moved is None:
            return False  # another controller already acted on this occasion
        self._moved(policy, moved)
        return True

    def _prompt_candidate(self, policy: Policy, baseline: int | None) -> PromptVersion | None:
        """The prompt's newest version, if it is newer than ``baseline`` and untried; else None.

        Only the newest: a version that a newer one superseded is not worth a canary of its
        own, even once the newer one was rolled back; a further version starts the next cycle.
        """
        latest = self.client.prompts.get_prompt(policy.model).latest_version or 0
        if latest <= (baseline or 0):
            return None
        for event in self.store.history(policy.name, kinds=TRIED_KINDS):
            if event.version == latest:
                return None
        return self.client.prompts.get(policy.model, latest)

    def _end(
        self,
        policy: Policy,
        state: CycleState,
        kind: str,
        reason: str,
        version: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> bool:
        """End the cycle (back to idle, the cooldown starts) with an event saying why."""
        self.store.transition(
            state,
            policy,
            Transition(
                IDLE,
                kind,
                reason[:1000],
                version=version,
                details=details,
                changes={"cycle_ended_at": self.clock()},
            ),
        )
        return False

    # -- retraining -----------------------------------------------------------------------------

    def _retraining(self, policy: Policy, state: CycleState) -> bool:
        assert policy.retrain is not None  # only a model policy's cycle retrains
        if policy.retrain.queue is not None or state.detail.get("job") is not None:
            # A job of the queue runs it; a job recorded before the policy lost its queue
            # is still this cycle's retrain.
            queued = QueuedRetrain(self.client, self.store, self.clock, self._moved)
            progress = queued.advance(policy, state)
            if progress.waiting is not None:
                self._waiting[policy.name] = progress.waiting
            return progress.moved
        from keel.pipelines import run_pipeline

        params = dict(state.detail.get("params") or {})
        self.store.note(
            policy,
            "retrain_started",
            f"running {policy.retrain.pipeline} with {describe_params(params)}",
            details={"params": params},
        )
        try:
            run = run_pipeline(policy.retrain.pipeline, params=params, executor=self.executor)
            version = registered_version(policy, getattr(run, "outputs", None))
        except Exception as exc:  # the pipeline's failure ends the cycle, with its reason
            log.warning("keel: retraining for %s failed: %s", policy.name, exc)
            return self._end(policy, state, "retrain_failed", f"{type(exc).__name__}: {exc}")
        change = finished(
            policy,
            state,
            run_id=run.run_id,
            version=version,
            outputs=jsonable_outputs(getattr(run, "outputs", None)),
            now=self.clock(),
        )
        self._moved(policy, self.store.transition(state, policy, change))
        return True

    # -- gating ---------------------------------------------------------------------------------

    def _gating(self, policy: Policy, state: CycleState) -> bool:
        version = state.candidate_version
        assert version is not None
        try:
            result = run_gates(
                policy,
                version,
                client=self.client,
                outputs=state.detail.get("outputs"),
                eval_set=state.detail.get("eval_set"),
            )
        except KeelError as exc:
            return self._end(
                policy, state, "gate_failed", f"the gates could not run: {exc}", version
            )
        if not result.passed:
            return self._end(
                policy, state, "gate_failed", result.summary(), version, result.to_dict()
            )
        canary = policy.rollout.canary
        passed = Transition(
            CANARY,
            "gate_passed",
            result.summary()[:1000],
            version=version,
            details=result.to_dict(),
            changes={"phase_started_at": self.clock()},
            followed_by=(
                (
                    "canary_started",
                    f"{policy.label(version)} gets {canary.weight}% of {policy.deployment}'s "
                    f"traffic until {canary.min_requests} requests (at most "
                    f"{human_duration(canary.max_duration)})",
                ),
            ),
        )
        self.store.start_canary(state, policy, passed, version)
        self._mine.add((policy.name, state.epoch + 1))
        return True

    # -- canary ---------------------------------------------------------------------------------

    def _canary(self, policy: Policy, state: CycleState) -> bool:
        version = state.candidate_version
        assert version is not None and state.phase_started_at is not None
        if not self._deployments().get(policy.deployment).spec.routes_to(policy.model, version):
            return self._end(
                policy,
                state,
                "rolled_back",
                f"the canary route of {policy.label(version)} was removed from "
                f"{policy.deployment} outside automation; the cycle ends",
                version,
            )
        metrics = measure_canary(
            policy.deployment,
            version,
            state.phase_started_at,
            client=self.client,
            kind=policy.kind,
        )
        verdict = judge_canary(
            metrics,
            policy.rollout,
            elapsed_seconds=(self.clock() - state.phase_started_at) / 1000,
        )
        if verdict.action == "rollback":
            self._roll_back(policy, state, verdict.reason, metrics)
            return False
        if verdict.action == "promote":
            return self._promote(policy, state, verdict.reason, metrics)
        return False

    def _awaiting_approval(self, policy: Policy, state: CycleState) -> bool:
        version = state.candidate_version
        assert version is not None and state.phase_started_at is not None
        metrics = measure_canary(
            policy.deployment,
            version,
            state.phase_started_at,
            client=self.client,
            kind=policy.kind,
        )
        verdict = judge_canary(
            metrics,
            policy.rollout,
            elapsed_seconds=(self.clock() - state.phase_started_at) / 1000,
            awaiting_approval=True,
        )
        if verdict.action == "rollback":
            self._roll_back(policy, state, verdict.reason, metrics)
            return False
        return self._promote(policy, state, verdict.reason, metrics)

    def _roll_back(
        self, policy: Policy, state: CycleState, reason: str, metrics: LiveMetrics
    ) -> None:
        change = Transition(
            IDLE,
            "rolled_back",
            reason[:1000],
            version=state.candidate_version,
            details={"live": metrics.to_dict()},
            changes={"cycle_ended_at": self.clock()},
        )
        self.store.roll_back(state, policy, change)

    def _promote(
        self, policy: Policy, state: CycleState, reason: str, metrics: LiveMetrics
    ) -> bool:
        """Move the alias and drop the canary route in one transaction; or wait for approval."""
        version = state.candidate_version
        assert version is not None
        if policy.approval.mode == "required" and not self._approved(policy, version):
            return self._request_approval(policy, state, version, metrics)
        if not policy.is_prompt:
            from keel.monitoring.reference import ensure_reference

            # The new champion carries its own reference (from the data its pipeline trained
            # on), so drift monitoring goes on for it instead of silently stopping.
            ensure_reference(policy.model, version, client=self.client)
        champion = self._registry(policy).get_alias(policy.model, policy.alias)
        try:
            self.store.promote(
                state,
                policy,
                Transition(
                    IDLE,
                    "promoted",
                    f"{policy.alias} {state.baseline_version} → {version}: {reason}"[:1000],
                    version=version,
                    details={"live": metrics.to_dict(), "from": state.baseline_version},
                    changes={"cycle_ended_at": self.clock()},
                ),
                expected=champion,
                comment=f"automation {policy.name}: {reason}"[:500],
            )
        except ApprovalRequired:
            return self._request_approval(policy, state, version, metrics)
        return False

    def _approved(self, policy: Policy, version: int) -> bool:
        approvals = self._registry(policy).list_approvals(policy.model, version)
        return any(a.alias == policy.alias for a in approvals)

    def _request_approval(
        self, policy: Policy, state: CycleState, version: int, metrics: LiveMetrics
    ) -> bool:
        if state.state == AWAITING_APPROVAL:
            return False  # asked already; still waiting
        self.store.transition(
            state,
            policy,
            Transition(
                AWAITING_APPROVAL,
                "approval_requested",
                f"{policy.label(version)} passed its canary; moving {policy.alias} needs "
                f"approval: keel {policy.kind}s approve {policy.model} {version} "
                f"--for {policy.alias}",
                version=version,
                details={"live": metrics.to_dict()},
            ),
        )
        return False


# -- helpers --------------------------------------------------------------------------------------


def _dataset_param(value: Any) -> DatasetURI | None:
    """The dataset a retraining parameter names, if it is a well-formed ``datasets:/`` URI.

    A malformed one is left for the pipeline to refuse (applying the policy checked every
    reference already), as it always was.
    """
    if not is_dataset_uri(value):
        return None
    try:
        return parse_dataset_uri(value)
    except InvalidInput:
        return None


def _pin_params(params: Any, client: Client) -> dict[str, Any]:
    """``datasets:/name@latest`` (or without a version) → the version that is newest now."""
    return {
        key: _pin_dataset(value, f"retrain.params.{key}", client)
        for key, value in dict(params).items()
    }


def _pin_dataset(value: Any, where: str, client: Client) -> Any:
    """A ``datasets:/`` URI without a version as the version newest now; else ``value``."""
    ref = _dataset_param(value)
    if ref is None or ref.pinned or ref.name is None:
        return value
    latest = latest_dataset_versions([ref.name], client=client).get(ref.name)
    if latest is None:
        raise InvalidInput(f"{where}: dataset {ref.name!r} has no version")
    return str(DatasetURI(ref.name, latest))


def _consume_dataset_news(fired: Fired, seen: dict[str, int]) -> None:
    """A dataset trigger's version is the news it fired for: seen from now on."""
    if "dataset" in fired.details:
        name = str(fired.details["dataset"])
        seen[name] = max(seen.get(name, 0), int(fired.details["version"]))
