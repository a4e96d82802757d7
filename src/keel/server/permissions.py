"""Who may touch which experiment and run: the checks every route about runs shares.

The native tracking and pipeline routes and MLflow's API check permissions on
experiments and runs by one rule, kept here. A run is checked on its
experiment, and the resource is the kind ``experiment`` named by the
experiment's name, so a grant scoped to an experiment covers its runs.

A caller who holds the permission nowhere (or whose token lacks scope ``api``)
is refused before anything is looked up: an unknown id is a 404 only to
someone who holds the permission somewhere, and a 403 to everyone else, so
ids do not leak to a token without a tracking role.

Two shapes of each check:

- :func:`on_experiment` and :func:`on_run` always look the object up and
  answer it (a 404 for an unknown id), for routes that need it;
- :func:`check_experiment` and :func:`check_run` look it up only when the
  caller's grants are scoped: a global grant settles the question without a
  query, which keeps the hot write paths (metric flushes, new runs) at one
  statement; the library call that follows answers 404 for an unknown id.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keel.server.context import Caller
    from keel.tracking.entities import Experiment, RunInfo

__all__ = [
    "EXPERIMENT",
    "check_experiment",
    "check_run",
    "on_experiment",
    "on_run",
    "readable_experiments",
]

#: The resource kind experiments (and their runs) are granted and checked as.
EXPERIMENT = "experiment"


def on_experiment(caller: Caller, permission: str, experiment_id: int) -> Experiment:
    """The experiment, once ``permission`` on it is checked.

    Raises:
        PermissionDenied: the caller lacks ``permission`` on it (or anywhere).
        NotFound: there is no such experiment (only for a caller holding it somewhere).
    """
    caller.require_somewhere(permission)
    experiment = caller.client.tracking.get_experiment(experiment_id)
    caller.require(permission, EXPERIMENT, experiment.name)
    return experiment


def on_run(caller: Caller, permission: str, run_id: str) -> RunInfo:
    """The run's info, once ``permission`` on its experiment is checked.

    Raises:
        PermissionDenied: the caller lacks ``permission`` on the run's experiment.
        NotFound: there is no such run (only for a caller holding it somewhere).
    """
    caller.require_somewhere(permission)
    tracking = caller.client.tracking
    info = tracking.get_run_info(run_id)
    if not caller.can(permission):  # a global grant needs no second lookup
        caller.require(permission, EXPERIMENT, tracking.get_experiment(info.experiment_id).name)
    return info


def check_experiment(caller: Caller, permission: str, experiment_id: int) -> None:
    """Check ``permission`` on the experiment, looking it up only for a scoped caller."""
    if caller.can(permission):
        caller.require(permission)  # the token's scope still counts
    else:
        on_experiment(caller, permission, experiment_id)


def check_run(caller: Caller, permission: str, run_id: str) -> None:
    """Check ``permission`` on the run's experiment, looking it up only for a scoped caller."""
    if caller.can(permission):
        caller.require(permission)  # the token's scope still counts
    else:
        on_run(caller, permission, run_id)


def readable_experiments(caller: Caller, *, refuse_none: bool = False) -> list[Experiment] | None:
    """The experiments the caller may read, or None when they may read every one.

    Args:
        caller: who is asking.
        refuse_none: refuse (403, naming ``read``) a caller who may read no
            experiment, where a listing would otherwise be empty. Keel's own API
            does, so ``keel experiments list`` tells a user with a grant elsewhere
            what they lack; MLflow's API answers an empty listing, as MLflow's own
            server does for a user who may read nothing.

    Raises:
        PermissionDenied: the caller holds ``read`` nowhere, or (``refuse_none``)
            on no experiment.
    """
    if caller.can("read"):
        caller.require("read")  # the token's scope still counts
        return None
    caller.require_somewhere("read")
    experiments = caller.client.tracking.list_experiments()
    readable = [e for e in experiments if caller.can("read", EXPERIMENT, e.name)]
    if refuse_none and not readable:
        caller.require("read")  # the 403 that names the missing permission
    return readable
