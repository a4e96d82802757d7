"""Automation: policies that retrain, gate, roll out, promote or roll back by themselves.

A policy targets a registered model (retrained by a pipeline) or a registered
prompt (its new versions, gated by evaluations and canaried on the gateway).
Apply a policy (``keel policy apply policy.yaml`` or :meth:`PolicyStore.apply`), then
run the controller (``keel automation run``, or ``keel automation tick`` from cron or
CI). Every decision is an event with its reason (``keel automation history``).
"""

from __future__ import annotations

from keel.automation.controller import Controller, TickResult
from keel.automation.events import EVENT_KINDS, Event, list_events
from keel.automation.gates import GateResult, run_gates
from keel.automation.live import LiveMetrics, measure_canary
from keel.automation.policy import (
    Approval,
    Canary,
    EvalGates,
    Gates,
    LiveCriteria,
    Policy,
    Retrain,
    Rollout,
    Trigger,
    load_policy,
)
from keel.automation.state import STATES, CycleState, PolicyStore

__all__ = [
    "EVENT_KINDS",
    "STATES",
    "Approval",
    "Canary",
    "Controller",
    "CycleState",
    "EvalGates",
    "Event",
    "GateResult",
    "Gates",
    "LiveCriteria",
    "LiveMetrics",
    "Policy",
    "PolicyStore",
    "Retrain",
    "Rollout",
    "TickResult",
    "Trigger",
    "history",
    "list_events",
    "load_policy",
    "measure_canary",
    "run_gates",
]


def history(
    policy: str | None = None, *, kinds: tuple[str, ...] | None = None, limit: int | None = None
) -> list[Event]:
    """Decision events, oldest first (all policies, or one)."""
    return PolicyStore().history(policy, kinds=kinds, limit=limit)
