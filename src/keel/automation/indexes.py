"""Index policies: keep a RAG index alias fresh — rebuild, evaluate, move the alias.

An index policy (``index: kb`` instead of ``model:``; see :mod:`keel.automation.policy`)
runs the controller's cycle with three differences: its trigger is the alias's
``index_stale`` alert (:mod:`keel.monitoring.indexes`), its "retraining" is a
rebuild, and it has no canary::

    idle       the controller checks the alias's freshness (raising or clearing
               index_stale); while it fires, one occasion per newest source
               version starts a cycle                          → retraining (triggered)
    retraining the index is built again with the alias's version's own chunker
               and embedder on the newest source version (unchanged chunks reuse
               their vectors)                                  → gating (retrain_started,
                                                                  retrain_finished)
    gating     the retrieval eval of the new version against the alias's
               (:func:`keel.llm.rag.evaluation.evaluate_retrieval`) on the
               policy's questions, pinned when the cycle started:
               the gates fail                                  → idle (gate_failed)
               they pass: the alias moves                      → idle (gate_passed, promoted)
               the alias is protected                          → awaiting_approval
                                                                  (gate_passed,
                                                                   approval_requested)
    awaiting_… approvals arrived: the alias moves              → idle (promoted)

Each arrow is one transaction of :class:`~keel.automation.state.PolicyStore`, as for
models and prompts; the alias moves by compare-and-set with the state change and its
event (:meth:`PolicyStore.promote`), through the registry's approvals. Once the alias
holds the rebuilt version the next check finds it fresh and the alert resolves.

:func:`refresh_index` is the same rebuild, evaluation and gated move as one call,
for a script or a scheduler other than the controller.

The controller checks an index's freshness with the metadata store, so an index
policy runs on a controller that has the store (not through ``keel server``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from keel.automation.gates import GateResult
from keel.automation.state import (
    AWAITING_APPROVAL,
    GATING,
    IDLE,
    RETRAINING,
    StateHandlers,
    Transition,
)
from keel.errors import ApprovalRequired, InvalidInput, KeelError
from keel.uris import DatasetURI, parse_dataset_uri

if TYPE_CHECKING:
    from keel.automation.policy import Policy
    from keel.automation.state import CycleState
    from keel.client import Client
    from keel.llm.rag.build import BuildResult
    from keel.llm.rag.evaluation import RetrievalEval
    from keel.llm.rag.freshness import Freshness

__all__ = [
    "IndexCycle",
    "Refresh",
    "rebuild_index",
    "refresh_index",
    "run_retrieval_gates",
]


# -- the gates of an index policy -----------------------------------------------------------------


def _compared(gate: str) -> bool:
    from keel.llm.rag.evaluation import parse_retrieval_gates

    [bound] = parse_retrieval_gates([gate])
    return bound.metric.startswith(("diff.", "against."))


def run_retrieval_gates(
    policy: Policy, version: int, *, client: Client, questions: str | None = None
) -> GateResult:
    """The retrieval eval of ``rag:/<index>/<version>`` against the alias, as gates.

    Gates on ``diff.``/``against.`` metrics are left out while the alias holds no other
    version (nothing to compare with), as a model's ``against`` rules are.

    Args:
        questions: the question set pinned when the cycle started (default: the policy's).
    """
    gates = policy.gates.retrieval
    if gates is None:
        return GateResult(True)
    baseline = client.rag.get_alias(policy.model, policy.alias)
    against = None if baseline is None or baseline == version else baseline
    texts = [g for g in gates.gates if against is not None or not _compared(g)]
    result = evaluate_candidate(
        client,
        policy.uri(version),
        questions or gates.questions,
        k=gates.k,
        against=None if against is None else policy.uri(against),
        gates=texts,
    )
    return GateResult(
        result.passed,
        [g.to_dict() for g in result.gates],
        {"retrieval": result.to_dict(questions=False)},
    )


def evaluate_candidate(
    client: Client,
    candidate: str,
    questions: str,
    *,
    k: int,
    against: str | None,
    gates: list[str],
) -> RetrievalEval:
    """The one place automation calls the retrieval eval."""
    from keel.llm.rag.evaluation import evaluate_retrieval

    return evaluate_retrieval(client, candidate, questions, k=k, against=against, gates=gates)


# -- the rebuild ----------------------------------------------------------------------------------


def rebuild_index(
    client: Client,
    ref: str,
    *,
    source: str | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> BuildResult:
    """Build ``ref``'s index again, with its version's chunker and embedder, on a newer source.

    Chunks whose text did not change reuse their vectors (the build's cache), so only
    the changed documents are embedded.

    Args:
        ref: the version to follow, ``kb@production`` or ``rag:/kb/3``.
        source: the dataset version to build from (default: the newest version of the
            dataset ``ref``'s version was built from).
    """
    version = client.rag.resolve(ref)
    dataset = version.document["source"]["dataset"]
    return client.rag.build(
        version.name,
        source=source or f"datasets:/{dataset}",
        chunker=version.chunker,
        embedder=version.embedder,
        progress=progress,
        description=f"rebuilt from {version.uri} on the newest {dataset}",
    )


def _pin(ref: str, client: Client) -> str:
    """``datasets:/name@latest`` (or without a version) as the version newest now."""
    parsed = parse_dataset_uri(ref)
    if parsed.pinned or parsed.name is None:
        return ref
    return str(DatasetURI(parsed.name, int(client.data.get_version(parsed.name).version)))


# -- one call: refresh ----------------------------------------------------------------------------


@dataclass
class Refresh:
    """What :func:`refresh_index` found and did.

    Attributes:
        outcome: ``fresh`` (nothing to do), ``unchanged`` (the rebuild is the version the
            alias holds), ``gate_failed``, ``promoted`` or ``approval_required``.
        freshness: the alias's freshness before anything was done.
        build: the rebuild, if one ran.
        evaluation: the retrieval eval, if one ran.
        reason: one line saying why.
    """

    outcome: str
    freshness: Freshness
    reason: str
    build: BuildResult | None = None
    evaluation: RetrievalEval | None = None

    @property
    def moved(self) -> bool:
        return self.outcome == "promoted"

    def to_dict(self) -> dict[str, Any]:
        built = self.build
        return {
            "outcome": self.outcome,
            "moved": self.moved,
            "reason": self.reason,
            "freshness": self.freshness.to_dict(),
            "build": None if built is None else _build_stats(built),
            "evaluation": None if self.evaluation is None else self.evaluation.to_dict(),
        }


def _build_stats(built: BuildResult) -> dict[str, Any]:
    return {
        "version": built.version.version,
        "key": built.key,
        "chunks": built.chunks,
        "embedded": built.embedded,
        "reused": built.reused,
        "hit_rate": built.hit_rate,
        "documents": built.documents,
        "skipped": built.skipped,
    }


def refresh_index(
    client: Client,
    ref: str,
    *,
    questions: str,
    gates: list[str] | tuple[str, ...],
    k: int = 10,
    force: bool = False,
) -> Refresh:
    """Rebuild a stale index alias, evaluate the rebuild against it, and move it if the gates pass.

    Args:
        client: a ``keel.Client``.
        ref: the alias, ``kb@production``.
        questions: the question set (``datasets:/kb-questions@2``).
        gates: conditions on the eval's metrics (``"recall@10 >= 0.8"``,
            ``"diff.recall@10 >= -0.02"``); at least one.
        k: chunks retrieved per question.
        force: rebuild even when the alias is fresh.

    Raises:
        InvalidInput: a version instead of an alias, no gates, or a bad gate or ``k``.
        NotFound: no such index, alias or question set.
    """
    from keel.llm.rag.evaluation import check_retrieval_gates
    from keel.llm.rag.freshness import index_freshness
    from keel.llm.rag.index import check_k
    from keel.monitoring.indexes import index_subject

    uri = index_subject(ref)
    if not gates:
        raise InvalidInput(
            "refresh_index needs at least one gate (e.g. 'recall@10 >= 0.8'): without one the "
            "rebuild would move the alias unchecked"
        )
    check_retrieval_gates(list(gates), check_k(k), against=True)
    freshness = index_freshness(client, uri)
    if not freshness.stale and not force:
        return Refresh("fresh", freshness, freshness.summary())
    source = f"datasets:/{freshness.source}@{freshness.latest_version}"
    built = rebuild_index(client, str(uri), source=source)
    candidate = built.version.version
    if candidate == freshness.version:
        return Refresh(
            "unchanged", freshness, f"the rebuild is version {candidate}, which {uri} holds", built
        )
    evaluation = evaluate_candidate(
        client,
        built.version.uri,
        questions,
        k=k,
        against=f"rag:/{uri.name}/{freshness.version}",
        gates=list(gates),
    )
    if not evaluation.passed:
        return Refresh("gate_failed", freshness, evaluation.summary(), built, evaluation)
    assert uri.alias is not None
    try:
        client.rag.set_alias(
            uri.name,
            uri.alias,
            candidate,
            expected=freshness.version,
            comment=f"refresh: rebuilt on {source}; {evaluation.summary()}"[:500],
        )
    except ApprovalRequired as exc:
        return Refresh("approval_required", freshness, str(exc), built, evaluation)
    return Refresh(
        "promoted",
        freshness,
        f"{uri.alias} {freshness.version} → {candidate}: {evaluation.summary()}",
        built,
        evaluation,
    )


# -- the controller's cycle -----------------------------------------------------------------------


class IndexCycle(StateHandlers):
    """The handlers of an index policy's states (see the module docstring)."""

    def handler(self, state: str) -> Callable[[Policy, CycleState], bool]:
        """The method that acts on a policy in ``state``."""
        handlers: dict[str, Callable[[Policy, CycleState], bool]] = {
            IDLE: self.idle,
            RETRAINING: self.rebuild,
            GATING: self.gate,
            AWAITING_APPROVAL: self.awaiting_approval,
        }
        if state not in handlers:
            return self.stray
        return handlers[state]

    def _end(
        self,
        policy: Policy,
        state: CycleState,
        kind: str,
        reason: str,
        version: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> bool:
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

    def stray(self, policy: Policy, state: CycleState) -> bool:
        """A state an index cycle never enters (a canary): end the cycle, saying so."""
        return self._end(
            policy,
            state,
            "rolled_back",
            f"an index policy has no {state.state} state; the cycle ends",
            state.candidate_version,
        )

    # -- idle ------------------------------------------------------------------------------

    def idle(self, policy: Policy, state: CycleState) -> bool:
        from keel.monitoring.alerts import firing_rules
        from keel.monitoring.indexes import RULE, check_index

        now = self.clock()
        ended = state.cycle_ended_at
        if ended is not None and now - ended < policy.cooldown * 1000:
            return False
        if not any(t.kind == "index_stale" for t in policy.triggers):
            return False
        baseline = self.client.rag.get_alias(policy.model, policy.alias)
        if baseline is None:
            return False  # nothing to keep fresh until the alias is set
        # The controller runs the alias's monitor check, as it runs a deployment's for drift.
        check = check_index(f"{policy.model}@{policy.alias}", client=self.client, now=now)
        fresh = check.freshness
        assert fresh is not None
        with self.client.store.read() as conn:
            if RULE not in firing_rules(conn, fresh.index):
                return False
        source = f"datasets:/{fresh.source}@{fresh.latest_version}"
        key = f"index_stale:{fresh.index}:{source}"
        if self.store.trigger_claimed(policy.name, key):
            return False  # this source version was tried: the next one starts a cycle
        retrieval = policy.gates.retrieval
        questions = None if retrieval is None else _pin(retrieval.questions, self.client)
        plan = {
            "source": source,
            "chunker": fresh.chunker,
            "embedder": fresh.embedder,
            "questions": questions,
        }
        moved = self.store.trigger(
            state,
            policy,
            key,
            Transition(
                RETRAINING,
                "triggered",
                f"{RULE} is firing: {fresh.summary()}",
                version=baseline,
                details={"trigger": key, "freshness": fresh.to_dict(), **plan},
                changes={
                    "trigger_key": key,
                    "baseline_version": baseline,
                    "candidate_version": None,
                    "pipeline_run_id": None,
                    "phase_started_at": now,
                    "detail": plan,
                },
            ),
        )
        if moved is None:
            return False  # another controller already acted on this occasion
        self.moved(policy, moved)
        return True

    # -- retraining: the rebuild -------------------------------------------------------------

    def rebuild(self, policy: Policy, state: CycleState) -> bool:
        plan = dict(state.detail)
        source = str(plan.get("source"))
        self.store.note(
            policy,
            "retrain_started",
            f"rebuilding {policy.model} from {source} with chunker {plan.get('chunker')} and "
            f"embedder {plan.get('embedder')}",
            state.baseline_version,
            details=plan,
        )
        try:
            built = self.client.rag.build(
                policy.model,
                source=source,
                chunker=str(plan["chunker"]),
                embedder=str(plan["embedder"]),
                description=f"automation {policy.name}: rebuilt on {source}",
            )
        except Exception as exc:  # the build's failure ends the cycle, with its reason
            return self._end(policy, state, "retrain_failed", f"{type(exc).__name__}: {exc}")
        version = built.version.version
        stats = _build_stats(built)
        what = (
            f"rebuilt {policy.label(version)} on {source}: {built.chunks} chunks, "
            f"{built.embedded} embedded, {built.reused} reused (cache hit rate "
            f"{built.hit_rate:.0%})"
        )
        if version == state.baseline_version:
            return self._end(
                policy,
                state,
                "retrain_finished",
                f"{what}; {policy.alias} holds that version already, so nothing moves",
                version,
                stats,
            )
        moved = self.store.transition(
            state,
            policy,
            Transition(
                GATING,
                "retrain_finished",
                what,
                version=version,
                details=stats,
                changes={
                    "candidate_version": version,
                    "phase_started_at": self.clock(),
                    "detail": {**plan, "build": stats},
                },
            ),
        )
        self.moved(policy, moved)
        return True

    # -- gating, and the move --------------------------------------------------------------------

    def gate(self, policy: Policy, state: CycleState) -> bool:
        version = state.candidate_version
        assert version is not None
        try:
            result = run_retrieval_gates(
                policy, version, client=self.client, questions=state.detail.get("questions")
            )
        except KeelError as exc:
            return self._end(
                policy, state, "gate_failed", f"the gates could not run: {exc}", version
            )
        if not result.passed:
            return self._end(
                policy, state, "gate_failed", result.summary(), version, result.to_dict()
            )
        passed = ("gate_passed", result.summary()[:1000], result.to_dict())
        return self._move(policy, state, passed)

    def awaiting_approval(self, policy: Policy, state: CycleState) -> bool:
        return self._move(policy, state, None)

    def _approved(self, policy: Policy, version: int) -> bool:
        approvals = self.client.rag.list_approvals(policy.model, version)
        return any(a.alias == policy.alias for a in approvals)

    def _move(
        self, policy: Policy, state: CycleState, passed: tuple[str, str, dict[str, Any]] | None
    ) -> bool:
        """Move the alias to the candidate (with the gate's event first); or wait for approval."""
        version = state.candidate_version
        assert version is not None
        holds = self.client.rag.get_alias(policy.model, policy.alias)
        if holds != state.baseline_version:  # moved by hand meanwhile: never move it back
            return self._end(
                policy,
                state,
                "rolled_back",
                f"{policy.alias} moved from {state.baseline_version} to {holds} outside "
                f"automation while {policy.label(version)} was gated; the cycle ends without "
                "moving it",
                version,
            )
        move = f"{policy.alias} {holds} → {version}"
        first: tuple[tuple[str, str], ...] = ()
        kind, reason, details = "promoted", move, {"from": holds}
        if passed is not None:
            kind, reason, details = passed
            first = (("promoted", move),)
        if policy.approval.mode == "required" and not self._approved(policy, version):
            return self._wait(policy, state, version, passed)
        try:
            self.store.promote(
                state,
                policy,
                Transition(
                    IDLE,
                    kind,
                    reason,
                    version=version,
                    details=details,
                    changes={"cycle_ended_at": self.clock()},
                    followed_by=first,
                ),
                expected=holds,
                comment=f"automation {policy.name}: {reason}"[:500],
            )
        except ApprovalRequired:
            return self._wait(policy, state, version, passed)
        return False

    def _wait(
        self,
        policy: Policy,
        state: CycleState,
        version: int,
        passed: tuple[str, str, dict[str, Any]] | None,
    ) -> bool:
        if passed is None:
            return False  # asked already; still waiting
        kind, reason, details = passed
        self.store.transition(
            state,
            policy,
            Transition(
                AWAITING_APPROVAL,
                kind,
                reason,
                version=version,
                details=details,
                followed_by=(
                    (
                        "approval_requested",
                        f"{policy.label(version)} passed its gates; moving {policy.alias} needs "
                        f"approval: keel rag approve {policy.model} {version} --for "
                        f"{policy.alias}",
                    ),
                ),
            ),
        )
        return False
