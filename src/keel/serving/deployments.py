"""Deployments: named endpoints whose routes, shadow and batching are revisioned.

A deployment's *spec* says which model versions answer (routes with
weights: a primary plus optional canaries), which version sees a copy of
the traffic without answering (shadow), and whether requests are batched.
A route names a version (``churn/5``) or follows an alias
(``churn@champion``): a running server re-resolves aliases, so moving the
alias moves the traffic without a restart.

A deployment's routes name registered *models* (served by ``keel serve``) or,
with ``kind="prompt"``, registered *prompts* (split by ``keel gateway``: a
request for ``prompts:/support@production`` goes to the versions of the prompt
deployment whose primary route follows that alias, by weight). Both kinds use
the same revisions, canaries, promotion and rollback; a prompt deployment has
no shadow and no batching.

A model deployment may declare the features its model needs (``features``:
``"view:feature"`` references of applied feature views and on-demand views).
Its requests then carry only the entities' join keys and request data; the
server reads the rest from the online store (see :mod:`keel.serving.features`).

Every change writes a new, immutable revision; the deployment's current
revision moves by compare-and-set. Rollback is one call: it writes a new
revision whose spec is the one before the current one (or any revision).

:class:`Deployments` is the part of a client that holds this: over a client
whose transport is the http one (``keel server``), ``Deployments(client)`` is a
:class:`keel.serving.remote.RemoteDeployments`, whose methods are REST calls to
routes that run this same code on the server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select, update

from keel.errors import Conflict, InvalidInput, NotFound
from keel.governance import audit
from keel.serving.features import check_features, parse_features
from keel.store import schema as s
from keel.store.sql import now_ms
from keel.uris import PROMPTS, parse_model_ref, parse_prompt_uri, scheme_of
from keel.validation import check_name

if TYPE_CHECKING:
    from keel.client import Client

__all__ = [
    "Batching",
    "Deployment",
    "DeploymentSpec",
    "Deployments",
    "Route",
    "parse_batching",
    "parse_route",
]


@dataclass(frozen=True)
class Route:
    """A model version (``ref`` a number) or an alias to follow (``ref`` a name), with a weight."""

    model: str
    ref: str
    weight: int = 100

    @property
    def follows_alias(self) -> bool:
        return not self.ref.isdigit()

    @property
    def label(self) -> str:
        return f"{self.model}@{self.ref}" if self.follows_alias else f"{self.model}/{self.ref}"

    @property
    def uri(self) -> str:
        return f"models:/{self.label}"

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "ref": self.ref, "weight": self.weight}


@dataclass(frozen=True)
class Batching:
    """Collect up to ``max_size`` rows or wait at most ``max_latency_ms`` before predicting."""

    max_size: int = 32
    max_latency_ms: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        return {"max_size": self.max_size, "max_latency_ms": self.max_latency_ms}


#: What a deployment's routes can name: registered models, or registered prompts.
KINDS = ("model", "prompt")


@dataclass(frozen=True)
class DeploymentSpec:
    """What a deployment serves.

    Attributes:
        routes: the primary route first, then canaries; weights add up to 100.
        shadow: a version that gets a copy of each request, or None.
        batching: micro-batching, or None.
        kind: ``model`` or ``prompt``.
        features: ``"view:feature"`` references the model's inputs are completed with
            from the feature store, or None (requests carry every input).
    """

    routes: tuple[Route, ...]
    shadow: Route | None = None
    batching: Batching | None = None
    kind: str = "model"
    features: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.features is not None:
            object.__setattr__(self, "features", check_features(self.features))
            if self.kind != "model":
                raise InvalidInput(
                    "a prompt deployment takes no --features; features complete a model's inputs"
                )
        if self.kind not in KINDS:
            raise InvalidInput(
                f"a deployment's kind must be one of {', '.join(KINDS)}, got {self.kind!r}"
            )
        if self.kind == "prompt" and (self.shadow is not None or self.batching is not None):
            raise InvalidInput(
                "a prompt deployment has no shadow and no batching; remove --shadow and --batching"
            )
        if not self.routes:
            raise InvalidInput("a deployment needs at least one route (--model NAME@ALIAS)")
        if sum(r.weight for r in self.routes) != 100:
            raise InvalidInput(
                f"route weights must add up to 100, got {[r.weight for r in self.routes]}"
            )
        if any(r.weight <= 0 for r in self.routes):
            raise InvalidInput("every route needs a weight above 0; remove a route instead")

    @property
    def primary(self) -> Route:
        return self.routes[0]

    def uri(self, route: Route) -> str:
        """``models:/…`` or ``prompts:/…``: what ``route`` names, by the spec's kind."""
        return f"{self.kind}s:/{route.label}"

    @property
    def models(self) -> list[str]:
        """Every registered model the spec sends traffic (or a shadow copy of it) to, sorted."""
        return sorted({r.model for r in (*self.routes, *([self.shadow] if self.shadow else []))})

    def routes_to(self, model: str, version: int | None) -> bool:
        """True when a canary route (not the primary) sends traffic to ``model/version``."""
        return any(r.model == model and r.ref == str(version) for r in self.routes[1:])

    def with_canary(self, model: str, version: int, weight: int) -> DeploymentSpec:
        """This spec with a ``weight``% canary route to ``model/version``.

        It replaces any canary of the same model (one candidate at a time); canaries of
        other models stay, and the primary keeps the rest of the traffic.

        Raises:
            InvalidInput: the canaries would leave the primary no traffic.
        """
        others = [r for r in self.routes[1:] if r.model != model]
        taken = sum(r.weight for r in others)
        primary = replace(self.primary, weight=100 - weight - taken)
        if primary.weight <= 0:
            raise InvalidInput(
                f"a {weight}% canary of {model}/{version} leaves no traffic for the primary "
                f"route {self.primary.label}"
                + (f" (other canaries take {taken}%)" if taken else "")
                + "; lower the canary's weight"
            )
        return replace(self, routes=(primary, *others, Route(model, str(version), weight)))

    def without_canary(self, model: str, version: int | None) -> DeploymentSpec:
        """This spec without the canary route to ``model/version``; its traffic goes to the primary."""
        others = [r for r in self.routes[1:] if not (r.model == model and r.ref == str(version))]
        primary = replace(self.primary, weight=100 - sum(r.weight for r in others))
        return replace(self, routes=(primary, *others))

    def promoted(self, model: str, version: int, alias: str) -> DeploymentSpec:
        """The spec once ``model/version`` is promoted to ``alias``.

        The canary route goes (its traffic to the primary), and a primary serving ``model``
        follows ``alias`` from then on, so the promotion is the alias move itself.
        """
        base = self.without_canary(model, version)
        primary = base.primary
        if primary.model == model and not (primary.follows_alias and primary.ref == alias):
            primary = Route(model, alias, primary.weight)
        return replace(base, routes=(primary, *base.routes[1:]))

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "routes": [r.to_dict() for r in self.routes],
            "shadow": None if self.shadow is None else self.shadow.to_dict(),
            "batching": None if self.batching is None else self.batching.to_dict(),
        }
        # specs stored before prompts (and features) existed have neither key: keep theirs
        # unchanged, so their digests and audit entries read as before
        if self.kind != "model":
            doc["kind"] = self.kind
        if self.features is not None:
            doc["features"] = list(self.features)
        return doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> DeploymentSpec:
        features = doc.get("features")
        return cls(
            routes=tuple(Route(**r) for r in doc["routes"]),
            shadow=None if doc.get("shadow") is None else Route(**doc["shadow"]),
            batching=None if doc.get("batching") is None else Batching(**doc["batching"]),
            kind=doc.get("kind") or "model",
            features=None if features is None else tuple(features),
        )


@dataclass(frozen=True)
class Deployment:
    name: str
    revision: int
    spec: DeploymentSpec
    created_at: int
    created_by: str
    comment: str | None = None
    previous: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "revision": self.revision,
            "spec": self.spec.to_dict(),
            "comment": self.comment,
            "previous": self.previous,
        }


def parse_route(text: str, weight: int = 100) -> Route:
    """``churn@champion``, ``churn/5``, ``models:/churn@champion`` or ``prompts:/…`` → :class:`Route`."""
    if isinstance(text, str) and scheme_of(text) == PROMPTS:
        prompt = parse_prompt_uri(text)
        return Route(prompt.name, prompt.alias or str(prompt.version), weight)
    try:
        parsed = parse_model_ref(text)
    except InvalidInput:
        parsed = None
    # a route follows one version or one alias; "latest" would move under the deployment
    if parsed is None or parsed.latest:
        raise InvalidInput(
            f"expected a model reference like churn@champion or churn/5, got {text!r}"
        )
    return Route(parsed.name, parsed.alias or str(parsed.version), weight)


def parse_canary(text: str) -> Route:
    """``churn/5:10`` → route to churn version 5 with weight 10 (``support/2:10`` for a prompt)."""
    ref, sep, weight = text.rpartition(":")
    if not sep or not weight.isdigit() or not 0 < int(weight) < 100:
        raise InvalidInput(
            f"expected a canary like churn/5:10 (reference, then a weight from 1 to 99), got {text!r}"
        )
    return parse_route(ref, int(weight))


def parse_batching(text: str) -> Batching:
    """``max_size=32,max_latency_ms=5`` → :class:`Batching`."""
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in ("max_size", "max_latency_ms"):
            raise InvalidInput(
                f"batching takes max_size=N,max_latency_ms=M, got {part!r} in {text!r}"
            )
        try:
            values[key] = int(value) if key == "max_size" else float(value)
        except ValueError:
            raise InvalidInput(f"batching {key} must be a number, got {value!r}") from None
    batching = Batching(**values)
    if batching.max_size < 1 or batching.max_latency_ms < 0:
        raise InvalidInput(f"batching needs max_size ≥ 1 and max_latency_ms ≥ 0, got {text!r}")
    return batching


def build_spec(
    model: str,
    canary: list[str] | None = None,
    shadow: str | None = None,
    batching: str | None = None,
    kind: str = "model",
    features: str | list[str] | None = None,
) -> DeploymentSpec:
    """A spec from the command-line spelling of its parts (``kind="prompt"``: routes name prompts).

    ``features``: ``"view:feature"`` references, comma-separated or as a list.
    """
    canaries = [parse_canary(c) for c in canary or []]
    primary = parse_route(model, 100 - sum(c.weight for c in canaries))
    if primary.weight <= 0:
        raise InvalidInput(
            "canary weights leave no traffic for the primary model; keep their sum below 100"
        )
    return DeploymentSpec(
        routes=(primary, *canaries),
        shadow=None if shadow is None else parse_route(shadow),
        batching=None if batching is None else parse_batching(batching),
        kind=kind,
        features=parse_features(features),
    )


class Deployments:
    """Create, change, roll back and read deployments (``client``: a ``keel.Client``).

    Over a client of ``keel server`` the instance is a
    :class:`~keel.serving.remote.RemoteDeployments` (see :func:`deployments_part`).
    """

    def __new__(cls, client: Client | None = None) -> Deployments:
        # Callers everywhere write ``Deployments(client)``; choosing the part here keeps
        # them transport-blind, as ``keel.Client`` keeps its own parts.
        if cls is Deployments:
            from keel.transport.http import HttpTransport

            transport = client.transport if client is not None else _process_transport()
            if isinstance(transport, HttpTransport):
                from keel.serving.remote import RemoteDeployments

                return super().__new__(RemoteDeployments)
        return super().__new__(cls)

    def __init__(self, client: Client | None = None) -> None:
        from keel.client import Client

        self.client = client or Client()

    @property
    def _actor(self) -> str:
        return str(self.client.user)

    def _check_refs(self, spec: DeploymentSpec, name: str) -> None:
        for route in (*spec.routes, *([spec.shadow] if spec.shadow else [])):
            if spec.kind == "prompt":
                self.client.prompts.load(spec.uri(route))  # NotFound names what is missing
            else:
                self.client.resolve_model(route.uri)  # NotFound names the missing model or alias
        if spec.features is not None:
            self._check_features(spec.features)
        if spec.kind == "prompt":
            # the gateway finds a prompt's split by the alias a request names: one owner each
            for other in self.all():
                if (
                    other.name != name
                    and other.spec.kind == "prompt"
                    and other.spec.primary
                    == replace(spec.primary, weight=other.spec.primary.weight)
                ):
                    raise Conflict(
                        f"deployment {other.name!r} already splits {spec.uri(spec.primary)}; "
                        f"change that one with `keel deploy update {other.name}`"
                    )

    def _check_features(self, features: tuple[str, ...]) -> None:
        """Every referenced view is applied and has the feature (the registry's errors, with
        what to do)."""
        from keel.features.definitions import parse_feature_refs

        try:
            self.client.features.views_for(parse_feature_refs(features))
        except NotFound as exc:
            raise NotFound(
                f"the deployment's features: {exc}; apply the definitions first "
                "(`keel features apply defs.py`, then `keel features list`)"
            ) from None
        except InvalidInput as exc:
            raise InvalidInput(f"the deployment's features: {exc}") from None

    def create(self, name: str, spec: DeploymentSpec, comment: str | None = None) -> Deployment:
        """A new deployment at revision 1; ``Conflict`` if the name is taken."""
        check_name(name, "deployment name")
        self._check_refs(spec, name)
        at = now_ms()
        with self.client.store.write() as conn:
            exists = conn.execute(
                select(s.deployments.c.name).where(s.deployments.c.name == name)
            ).first()
            if exists is not None:
                raise Conflict(
                    f"a deployment named {name!r} exists; change it with `keel deploy update`"
                )
            conn.execute(
                s.deployments.insert().values(
                    name=name, revision=1, created_at=at, created_by=self._actor
                )
            )
            self._write_revision(conn, name, 1, spec, comment, at, None)
            audit.record(
                conn,
                actor=self._actor,
                action="deployment.create",
                object_type="deployment",
                object_id=name,
                after={"revision": 1, "spec": spec.to_dict()},
            )
        return Deployment(name, 1, spec, at, self._actor, comment)

    def _write_revision(
        self,
        conn: Any,
        name: str,
        revision: int,
        spec: DeploymentSpec,
        comment: str | None,
        at: int,
        previous: int | None,
    ) -> None:
        conn.execute(
            s.deployment_revisions.insert().values(
                deployment=name,
                revision=revision,
                spec=json.dumps(spec.to_dict(), sort_keys=True),
                previous=previous,
                comment=comment,
                created_at=at,
                created_by=self._actor,
            )
        )

    def get(self, name: str, revision: int | None = None) -> Deployment:
        """The deployment at its current revision (or at ``revision``)."""
        with self.client.store.read() as conn:
            return self._get(conn, name, revision)

    def _get(self, conn: Connection, name: str, revision: int | None = None) -> Deployment:
        current = conn.execute(select(s.deployments).where(s.deployments.c.name == name)).first()
        if current is None:
            raise NotFound(f"no deployment named {name!r}; see `keel deploy list`")
        wanted = revision or current.revision
        row = conn.execute(
            select(s.deployment_revisions).where(
                s.deployment_revisions.c.deployment == name,
                s.deployment_revisions.c.revision == wanted,
            )
        ).first()
        if row is None:
            raise NotFound(f"deployment {name!r} has no revision {wanted}")
        return _deployment(name, row)

    def current_revision(self, name: str) -> int:
        with self.client.store.read() as conn:
            value = conn.execute(
                select(s.deployments.c.revision).where(s.deployments.c.name == name)
            ).scalar()
        if value is None:
            raise NotFound(f"no deployment named {name!r}; see `keel deploy list`")
        return int(value)

    def all(self) -> list[Deployment]:
        with self.client.store.read() as conn:
            names = (
                conn.execute(select(s.deployments.c.name).order_by(s.deployments.c.name))
                .scalars()
                .all()
            )
        return [self.get(n) for n in names]

    def history(self, name: str) -> list[Deployment]:
        """Every revision, oldest first."""
        self.current_revision(name)
        with self.client.store.read() as conn:
            rows = conn.execute(
                select(s.deployment_revisions)
                .where(s.deployment_revisions.c.deployment == name)
                .order_by(s.deployment_revisions.c.revision)
            ).all()
        return [_deployment(name, r) for r in rows]

    def _advance(
        self,
        name: str,
        spec: DeploymentSpec,
        comment: str | None,
        action: str,
        expected: int | None,
        previous: int | bool | None = True,
        conn: Connection | None = None,
    ) -> Deployment:
        """Write revision ``base + 1``; ``previous=True`` means "undo returns to ``base``".

        ``conn`` is a caller's open write transaction to use instead of a new one.
        """
        at = now_ms()
        with self.client.store.write(conn) as conn:
            current = self._get(conn, name)
            base = current.revision if expected is None else expected
            undo_to = base if previous is True else (None if previous is False else previous)
            done = conn.execute(
                update(s.deployments)
                .where(s.deployments.c.name == name, s.deployments.c.revision == base)
                .values(revision=base + 1)
            )
            if done.rowcount != 1:
                raise Conflict(
                    f"deployment {name!r} moved past revision {base} meanwhile; reload and retry"
                )
            self._write_revision(conn, name, base + 1, spec, comment, at, undo_to)
            audit.record(
                conn,
                actor=self._actor,
                action=action,
                object_type="deployment",
                object_id=name,
                before={"revision": base, "spec": current.spec.to_dict()},
                after={"revision": base + 1, "spec": spec.to_dict(), "comment": comment},
            )
        return Deployment(name, base + 1, spec, at, self._actor, comment, undo_to)

    def update(
        self,
        name: str,
        *,
        model: str | None = None,
        canary: list[str] | None = None,
        shadow: str | None = None,
        batching: str | None = None,
        clear_canary: bool = False,
        clear_shadow: bool = False,
        clear_batching: bool = False,
        comment: str | None = None,
        expected_revision: int | None = None,
        features: str | list[str] | None = None,
        clear_features: bool = False,
    ) -> Deployment:
        """A new revision changing only what is given.

        ``features`` replaces the declared features (``"view:feature"`` references,
        comma-separated or as a list); ``clear_features`` removes them, so requests
        carry every input again.
        """
        if features is not None and clear_features:
            raise InvalidInput("give --features or --no-features, not both")
        current = self.get(name)
        spec = current.spec
        primary = spec.primary if model is None else parse_route(model)
        canaries = list(spec.routes[1:])
        if clear_canary:
            canaries = []
        if canary is not None:
            canaries = [parse_canary(c) for c in canary]
        primary = replace(primary, weight=100 - sum(c.weight for c in canaries))
        if primary.weight <= 0:
            raise InvalidInput(
                "canary weights leave no traffic for the primary model; keep their sum below 100"
            )
        new = DeploymentSpec(
            routes=(primary, *canaries),
            shadow=None if clear_shadow else (parse_route(shadow) if shadow else spec.shadow),
            batching=None
            if clear_batching
            else (parse_batching(batching) if batching else spec.batching),
            kind=spec.kind,
            features=None
            if clear_features
            else (parse_features(features) if features is not None else spec.features),
        )
        if new == spec:
            raise InvalidInput(f"nothing to change: deployment {name!r} already has that spec")
        self._check_refs(new, name)
        return self._advance(name, new, comment, "deployment.update", expected_revision)

    def set_spec(
        self,
        name: str,
        spec: DeploymentSpec,
        comment: str | None = None,
        expected_revision: int | None = None,
        *,
        conn: Connection | None = None,
    ) -> Deployment:
        """A new revision with exactly ``spec`` (automation uses this).

        With ``conn`` (an open write transaction from ``store.write()``) the revision is
        written in it, so the caller's own records commit or roll back together with the
        change; by default it is a transaction of its own.
        """
        self._check_refs(spec, name)
        return self._advance(name, spec, comment, "deployment.update", expected_revision, conn=conn)

    def rollback(self, name: str, to: int | None = None, comment: str | None = None) -> Deployment:
        """Put back an earlier spec as a new revision.

        Without ``to``, undo: return to the spec in force before the current
        one. Rolling back twice goes back twice (an undo stack), it does not
        toggle between the last two specs.
        """
        current, target, undo_to = self._rollback_plan(name, to)
        return self._advance(
            name,
            target.spec,
            comment or f"rollback to revision {target.revision}",
            "deployment.rollback",
            current.revision,
            previous=undo_to if undo_to is not None else False,
        )

    def rollback_target(self, name: str, to: int | None = None) -> Deployment:
        """The revision whose spec :meth:`rollback` would put back (nothing is written)."""
        return self._rollback_plan(name, to)[1]

    def _rollback_plan(
        self, name: str, to: int | None
    ) -> tuple[Deployment, Deployment, int | None]:
        """(current, target, where undo goes after the rollback)."""
        current = self.get(name)
        if to is None:
            if current.previous is None:
                raise InvalidInput(
                    f"deployment {name!r} revision {current.revision} has no earlier spec to roll back to"
                )
            target = self.get(name, current.previous)
            return current, target, target.previous
        if not 1 <= to < current.revision:
            raise InvalidInput(
                f"deployment {name!r} can roll back to revisions 1 to {current.revision - 1}, got {to}"
            )
        return current, self.get(name, to), current.revision

    def status(self, name: str) -> dict[str, Any]:
        """The current spec with every route resolved to the version it serves now."""
        deployment = self.get(name)
        routes = []
        spec = deployment.spec
        for role, route in [("route", r) for r in spec.routes] + (
            [("shadow", spec.shadow)] if spec.shadow else []
        ):
            try:
                if spec.kind == "prompt":
                    version: int | None = self.client.prompts.load(spec.uri(route)).version
                else:
                    version = self.client.resolve_model(route.uri).version
                problem = None
            except NotFound as exc:
                version, problem = None, str(exc)
            routes.append(
                {
                    "role": role,
                    **route.to_dict(),
                    "label": route.label,
                    "version": version,
                    "problem": problem,
                }
            )
        return {**deployment.to_dict(), "routes": routes}


def deployments_part(client: Client) -> Deployments:
    """The deployments part of ``client``: SQL locally, REST calls through ``keel server``."""
    return Deployments(client)


def _process_transport() -> Any:
    """The transport a ``Client()`` on the process's settings would use (nothing opened yet)."""
    from keel.transport import local_or

    return local_or(None)


def _deployment(name: str, row: Any) -> Deployment:
    return Deployment(
        name,
        row.revision,
        DeploymentSpec.from_dict(json.loads(row.spec)),
        row.created_at,
        row.created_by,
        row.comment,
        row.previous,
    )
