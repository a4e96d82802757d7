"""Resolving every name a policy uses against the store, before the policy is stored.

Parsing (:mod:`keel.automation.policy`) checks a policy's shape; this checks
that what it names exists now: the registered model (or prompt, or RAG index
and its alias), the deployment (of the same kind, and for a prompt one that
routes it), each dataset a trigger watches, the retraining pipeline (its module
is imported, as a run would, to find the attribute; no step runs), the
pipeline's parameters and the datasets they name, the retrain's job queue (and
that its resources could ever fit there), the evaluation data of the
gates with its target and slice columns (for a prompt, its eval set; for an
index, its question set), and — for ``approval: required`` — the alias's
protection. Every problem is reported in one error, each with the field it came
from and, where names exist, the closest ones, so a single ``keel policy apply
--dry-run`` shows all there is to fix.

What only exists once the pipeline has run (its outputs, and
``gates.data: pipeline:<output>``) is checked when the cycle reaches it.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from keel.automation.policy import Policy, Retrain
from keel.errors import InvalidInput, NotFound
from keel.suggest import closest
from keel.uris import is_dataset_uri, parse_dataset_ref

if TYPE_CHECKING:
    from keel.client import Client


__all__ = ["Resolved", "resolve_references"]


@dataclass(frozen=True)
class Resolved:
    """What a policy's references resolved to when they were checked.

    Attributes:
        datasets: the newest version of each dataset a trigger watches; only versions
            after these are news for the trigger.
    """

    datasets: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Problem:
    field: str
    text: str
    #: A name that does not exist (NotFound); otherwise a name that exists but is wrong.
    missing: bool = True


def resolve_references(policy: Policy, client: Client) -> Resolved:
    """Check that everything ``policy`` names exists; raise one error listing what does not.

    Args:
        policy: a parsed policy.
        client: the ``keel.Client`` whose store the names must exist in.

    Raises:
        NotFound: names that do not exist (each with its field and the closest names).
        InvalidInput: the same, when any reference exists but is of the wrong kind
            (an attribute that is not a pipeline, a required parameter without a value,
            an unprotected alias under ``approval: required``).
    """
    problems: list[_Problem] = []
    if policy.is_index:
        _index(policy, client, problems)
    elif policy.is_prompt:
        _prompt(policy, client, problems)
    else:
        _model(policy, client, problems)
    if not policy.is_index:  # an index is loaded through its alias: no deployment routes it
        _deployment(policy, client, problems)
    datasets: dict[str, int] = {}
    for n, trigger in enumerate(policy.triggers):
        if trigger.kind == "dataset" and trigger.dataset is not None:
            found = _dataset(
                trigger.dataset, f"policy.triggers[{n}].dataset.name", client, problems
            )
            if found is not None:
                datasets[trigger.dataset] = int(found.version)
    if policy.retrain is not None:
        _pipeline(policy.retrain, problems)
        _param_datasets(policy.retrain.params, "policy.retrain.params", client, problems)
        _queue(policy.retrain, client, problems)
    if policy.gates.evals is not None:
        _dataset(policy.gates.evals.dataset, "policy.gates.evals.dataset", client, problems)
    if policy.gates.retrieval is not None:
        _dataset(
            policy.gates.retrieval.questions, "policy.gates.retrieval.questions", client, problems
        )
    _evaluation_data(policy, client, problems)
    _approval(policy, client, problems)
    if problems:
        count = len(problems)
        text = (
            f"policy {policy.name!r}: {count} "
            + ("reference does not resolve: " if count == 1 else "references do not resolve: ")
            + "; ".join(f"{p.field}: {' '.join(p.text.split())}" for p in problems)
        )
        if all(p.missing for p in problems):
            raise NotFound(text)
        raise InvalidInput(text)
    return Resolved(datasets)


def _closest(name: str, names: Iterable[str]) -> str:
    """`` (closest: a, b)``, or a few existing names when none is close, or nothing."""
    existing = sorted(set(names))
    if not existing:
        return ""
    close = closest(name, existing)  # one rule for "closest" across Keel's messages
    if close:
        return f" (closest: {', '.join(close)})"
    more = ", …" if len(existing) > 5 else ""
    return f" (there are: {', '.join(existing[:5])}{more})"


def _model(policy: Policy, client: Client, problems: list[_Problem]) -> None:
    try:
        client.get_registered_model(policy.model)
    except NotFound:
        names = [m.name for m in client.list_registered_models()]
        problems.append(
            _Problem(
                "policy.model",
                f"no registered model {policy.model!r}{_closest(policy.model, names)}",
            )
        )


def _prompt(policy: Policy, client: Client, problems: list[_Problem]) -> None:
    try:
        client.prompts.get_prompt(policy.model)
    except NotFound:
        names = [p.name for p in client.prompts.list()]
        problems.append(
            _Problem(
                "policy.prompt",
                f"no prompt {policy.model!r}{_closest(policy.model, names)}",
            )
        )


def _index(policy: Policy, client: Client, problems: list[_Problem]) -> None:
    try:
        client.rag.get_index(policy.model)
    except NotFound:
        names = [i.name for i in client.rag.list()]
        problems.append(
            _Problem(
                "policy.index", f"no RAG index {policy.model!r}{_closest(policy.model, names)}"
            )
        )
        return
    if client.rag.get_alias(policy.model, policy.alias) is None:
        problems.append(
            _Problem(
                "policy.alias",
                f"index {policy.model!r} has no alias {policy.alias!r}, so there is nothing to "
                f"keep fresh; set it first: keel rag alias set {policy.model} {policy.alias} "
                "VERSION",
            )
        )


def _deployment(policy: Policy, client: Client, problems: list[_Problem]) -> None:
    from keel.serving.deployments import Deployments

    deployments = Deployments(client)
    try:
        deployment = deployments.get(policy.deployment)
    except NotFound:
        names = [d.name for d in deployments.all() if d.spec.kind == policy.kind]
        problems.append(
            _Problem(
                "policy.deployment",
                f"no {'prompt ' if policy.is_prompt else ''}deployment {policy.deployment!r}"
                f"{_closest(policy.deployment, names)}",
            )
        )
        return
    spec = deployment.spec
    if spec.kind != policy.kind:
        create = (
            f"keel deploy create NAME --prompt {policy.model}@{policy.alias}"
            if policy.is_prompt
            else f"keel deploy create NAME --model {policy.model}@{policy.alias}"
        )
        problems.append(
            _Problem(
                "policy.deployment",
                f"deployment {policy.deployment!r} routes {spec.kind}s, and a {policy.kind} "
                f"policy needs a {policy.kind} deployment; create one with `{create}`",
                missing=False,
            )
        )
    elif policy.is_prompt and spec.primary.model != policy.model:
        # its canary would be another prompt's version, and its traces another prompt's
        problems.append(
            _Problem(
                "policy.deployment",
                f"deployment {policy.deployment!r} routes prompt {spec.primary.model!r}, not "
                f"{policy.model!r}",
                missing=False,
            )
        )


def _approval(policy: Policy, client: Client, problems: list[_Problem]) -> None:
    if policy.approval.mode != "required":
        return
    if any(p.alias == policy.alias for p in client.list_alias_policies()):
        return
    problems.append(
        _Problem(
            "policy.approval.mode",
            f"approval is required to move {policy.alias!r}, but that alias is not protected; "
            f"run `keel policy protect {policy.alias} --approvals 1 --role approver` first "
            "(it says who may approve)",
            missing=False,
        )
    )


def _dataset(ref: str, where: str, client: Client, problems: list[_Problem]) -> Any:
    """The dataset version ``ref`` names, or None with the problem recorded."""
    from keel import data

    try:
        parsed = parse_dataset_ref(ref)
    except InvalidInput as exc:
        problems.append(_Problem(where, str(exc), missing=False))
        return None
    try:
        return data.get(ref, settings=client.settings)
    except NotFound as exc:
        names = [d.name for d in data.list_datasets(settings=client.settings)]
        if parsed.name is not None and parsed.name not in names:
            problems.append(
                _Problem(where, f"no dataset {parsed.name!r}{_closest(parsed.name, names)}")
            )
        else:  # the dataset exists, the version or digest does not: its message says which
            problems.append(_Problem(where, str(exc)))
        return None


def _queue(retrain: Retrain, client: Client, problems: list[_Problem]) -> None:
    """The retrain's job queue must exist, and its resources must be able to fit there."""
    from keel.automation.resources import queue_problem

    found = queue_problem(retrain.queue, retrain.resources, client)
    if found is not None:
        text, missing = found
        problems.append(_Problem("policy.retrain.queue", text, missing))


def _param_datasets(value: Any, where: str, client: Client, problems: list[_Problem]) -> None:
    """Every ``datasets:/…`` string among the parameters (at any depth) must resolve."""
    if isinstance(value, str):
        if is_dataset_uri(value):
            _dataset(value, where, client, problems)
    elif isinstance(value, dict):
        for key, item in value.items():
            _param_datasets(item, f"{where}.{key}", client, problems)
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _param_datasets(item, f"{where}[{n}]", client, problems)


def _is_file_target(where: str) -> bool:
    # As keel.pipelines.definition.load_target tells a file from a module.
    return where.endswith(".py") or os.sep in where or "/" in where


def _imported(where: str) -> ModuleType | None:
    """The module a target's ``where`` part was imported as, if it was."""
    if not _is_file_target(where):
        return sys.modules.get(where)
    path = Path(where).expanduser().resolve()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if file and Path(file).resolve() == path:
            return module
    return None


def _pipeline(retrain: Retrain, problems: list[_Problem]) -> None:
    from keel.pipelines import Pipeline
    from keel.pipelines.definition import load_target

    target = retrain.pipeline
    where, _, attr = target.rpartition(":")
    at = "policy.retrain.pipeline"
    try:
        pipe = load_target(target)
    except NotFound as exc:
        module = _imported(where)
        if module is not None:
            names = [k for k, v in vars(module).items() if isinstance(v, Pipeline)]
            problems.append(
                _Problem(at, f"{where} has no pipeline {attr!r}{_closest(attr, names)}")
            )
        elif _is_file_target(where):
            folder = Path(where).expanduser().parent
            files = [p.name for p in folder.glob("*.py")] if folder.is_dir() else []
            problems.append(_Problem(at, f"{exc}{_closest(Path(where).name, files)}"))
        else:
            problems.append(_Problem(at, str(exc)))
        return
    except InvalidInput as exc:
        problems.append(_Problem(at, str(exc), missing=False))
        return
    except Exception as exc:  # the module itself fails to import: the run would fail the same
        first = (str(exc).strip().splitlines() or [""])[0]
        problems.append(
            _Problem(at, f"{where} could not be imported: {type(exc).__name__}: {first}", False)
        )
        return
    params = dict(retrain.params)
    accepted = [
        name
        for name, p in inspect.signature(pipe.fn).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    unknown = [key for key in params if key not in accepted]
    for key in unknown:
        problems.append(
            _Problem(
                f"policy.retrain.params.{key}",
                f"pipeline {pipe.name!r} has no parameter {key!r}{_closest(key, accepted)}",
            )
        )
    if not unknown:
        try:  # a required parameter without a value, or a value that is not JSON
            pipe.resolve_params(params)
        except InvalidInput as exc:
            problems.append(_Problem("policy.retrain.params", str(exc), missing=False))


def _evaluation_data(policy: Policy, client: Client, problems: list[_Problem]) -> None:
    from keel.checks import Rules
    from keel.checks.runner import read_columns

    gates = policy.gates
    if gates.data is None or gates.data.startswith("pipeline:"):
        return  # a pipeline output is only known once the pipeline ran
    at = "policy.gates.data"
    columns: list[str] | None = None
    if is_dataset_uri(gates.data):
        version = _dataset(gates.data, at, client, problems)
        if version is None:
            return
        source = version.uri
        if version.schema:  # a table; a dataset of files is read when the gates run
            columns = [str(c["name"]) for c in version.schema]
    else:
        path = Path(gates.data).expanduser()
        source = gates.data
        if not path.is_file():
            folder = path.parent
            files = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
            problems.append(_Problem(at, f"no file {gates.data}{_closest(path.name, files)}"))
            return
        try:
            columns = read_columns(path)
        except InvalidInput as exc:
            problems.append(_Problem(at, str(exc), missing=False))
            return
        except Exception as exc:  # not a table at all: the gates would fail the same way
            problems.append(
                _Problem(at, f"{gates.data} is not readable: {type(exc).__name__}", False)
            )
            return
    if columns is None:
        return
    wanted = [("policy.gates.target", gates.target)]
    if gates.rules:
        slices = Rules.from_dict(dict(gates.rules)).slice_columns
        wanted += [(f"policy.gates.rules.slices.columns[{n}]", c) for n, c in enumerate(slices)]
    for where, column in wanted:
        if column is not None and column not in columns:
            problems.append(
                _Problem(where, f"no column {column!r} in {source}{_closest(column, columns)}")
            )
