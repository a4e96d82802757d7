"""The gateway's configuration file (``gateway.yaml``), read and checked in one place.

::

    name: gateway
    providers:
      - {name: local, base_url: "http://127.0.0.1:8001/v1", api_key_env: LOCAL_API_KEY,
         timeout_s: 30, retries: 2}
    models:
      - name: small
        targets: [{provider: local, model: stand-in-small}, {provider: backup, model: big}]
        store_bodies: true
      - {name: embed, kind: embedding, targets: [{provider: local, model: stand-in-embed}]}
      - name: open
        targets: [{provider: local, model: stand-in-small}]
        guardrails: {}                    # an empty section: no guardrails on this model
    prompts:
      - name: support
        store_bodies: false
        guardrails:
          input: [{scanner: injection, action: block}, {scanner: pii, action: redact}]
          output: [{scanner: json_schema, action: block}]
    guardrails:                           # the default of every route that sets none
      input: [{scanner: pii, action: redact}, {scanner: token_limit, max_tokens: 4000}]
      output: [{scanner: pii, action: redact}]
      roles: [user, tool]
    auth: tokens
    cache: {ttl_s: 300, max_entries: 10000}
    teams: {support: [alice, bob]}
    budgets:
      - {name: support-daily, team: support, period: day, max_usd: 5.0, alert_at: 0.8}
    store_bodies: true

:func:`load_config` refuses a file that does not follow this shape with one
message naming the file, the key (``models[0].targets[1].provider``), what
was expected and what came; unknown keys are refused too, so a misspelt one is
never silently ignored. API keys never appear in the file: a provider names the
environment variable that holds its key, read when the gateway starts.

**Guardrails** (:mod:`keel.llm.guardrails`) are configured per route: a
``guardrails:`` section on a ``models:`` entry, on a ``prompts:`` entry, and at
the top as the default. Its ``input`` and ``output`` are lists of scanner
specs, each a scanner's name (``pii``) or a mapping (``{scanner: pii, action:
redact, ...options}``); ``roles`` names the chat roles whose messages the input
scanners read (default ``user`` and ``tool``). Which section a request meets,
first match wins:

1. a prompt request (``prompts:/support@production``): the ``prompts:`` entry of
   that prompt, if it has a ``guardrails`` section;
2. the ``models:`` entry of the gateway model the request goes to, if it has one
   (a raw request that declares its prompt with ``x-keel-prompt`` is a model
   request here: a caller's word does not choose its own guardrails);
3. the top-level ``guardrails``.

A section replaces the one below it whole (lists are not merged), and an empty
one (``guardrails: {}``) turns guardrails off for its route. The scanners are
built when the file is read, so an unknown scanner, an unknown option, a bad
action or a scanner on a stage it cannot read stops the start with one line
naming the key (``prompts[0].guardrails.input[1]``). An embedding model's
answers are vectors: its own section may have no ``output``, and the default's
``output`` does not apply to it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from keel.errors import InvalidInput, KeelError, NotFound
from keel.validation import check_name

if TYPE_CHECKING:
    from keel.llm.budgets import BudgetRule
    from keel.llm.guardrails.base import Scanner

__all__ = [
    "AUTH_MODES",
    "CHAT_ROLES",
    "GUARDED_ROLES",
    "MODEL_KINDS",
    "CacheConfig",
    "GatewayConfig",
    "GuardrailsConfig",
    "ModelConfig",
    "PromptConfig",
    "ProviderConfig",
    "Target",
    "load_config",
    "parse_config",
]

#: How callers prove who they are: Keel tokens with scope ``llm``, or not at all.
AUTH_MODES = ("tokens", "none")
#: What a gateway model serves: chat (and text) completions, or embeddings.
MODEL_KINDS = ("chat", "embedding")
#: The chat roles whose messages input guardrails read unless a section's ``roles`` says
#: otherwise: what the end user wrote and what tools brought in. System and developer
#: messages are the application's own words; assistant messages were answers, scanned
#: as output when they were given.
GUARDED_ROLES = ("user", "tool")
#: The roles a guardrails section's ``roles`` may name.
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")

_TOP_KEYS = (
    "name", "providers", "models", "prompts", "auth", "cache", "teams", "budgets", "store_bodies",
    "guardrails",
)  # fmt: skip
_PROVIDER_KEYS = ("name", "base_url", "api_key_env", "timeout_s", "retries")
_MODEL_KEYS = ("name", "kind", "targets", "store_bodies", "guardrails")
_TARGET_KEYS = ("provider", "model")
_PROMPT_KEYS = ("name", "store_bodies", "guardrails")
_GUARDRAILS_KEYS = ("input", "output", "roles")
_CACHE_KEYS = ("ttl_s", "max_entries")


@dataclass(frozen=True)
class GuardrailsConfig:
    """The scanners a route's requests meet, built when the file was read.

    Attributes:
        input: the scanners of the request's text, in order (redactions apply in turn;
            the first block stops the request).
        output: the scanners of the answer's text, in order.
        roles: the chat roles whose messages ``input`` reads.
        specs: the ``input`` and ``output`` specs as the file gave them (for display).
    """

    input: tuple[Scanner, ...] = ()
    output: tuple[Scanner, ...] = ()
    roles: tuple[str, ...] = GUARDED_ROLES
    specs: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        """Whether the section runs no scanner at all (it turns guardrails off)."""
        return not self.input and not self.output

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": [_shown(spec) for spec in self.specs.get("input", ())],
            "output": [_shown(spec) for spec in self.specs.get("output", ())],
            "roles": list(self.roles),
        }


def _shown(spec: Any) -> Any:
    return dict(spec) if isinstance(spec, Mapping) else spec


@dataclass(frozen=True)
class ProviderConfig:
    """An OpenAI-compatible upstream.

    Attributes:
        name: how targets name it.
        base_url: its API root, e.g. ``http://127.0.0.1:8001/v1``.
        api_key_env: the environment variable holding its key (None: no key is sent).
        timeout_s: seconds one attempt may take (to connect, and between bytes).
        retries: extra attempts after a connect error, a timeout, a 429 or a 5xx.
    """

    name: str
    base_url: str
    api_key_env: str | None = None
    timeout_s: float = 30.0
    retries: int = 2

    def api_key(self) -> str | None:
        """The key from the environment, or None when the provider takes none.

        Raises:
            InvalidInput: ``api_key_env`` names a variable that is not set.
        """
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise InvalidInput(
                f"provider {self.name!r} reads its API key from ${self.api_key_env}, which is "
                f"not set; export {self.api_key_env}=... before starting the gateway"
            )
        return value

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "api_key_set": None
            if self.api_key_env is None
            else bool(os.environ.get(self.api_key_env)),
            "timeout_s": self.timeout_s,
            "retries": self.retries,
        }


@dataclass(frozen=True)
class Target:
    """One place a gateway model's requests can go: a provider and its model name."""

    provider: str
    model: str

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.model}


@dataclass(frozen=True)
class ModelConfig:
    """A model name clients send, and the targets that answer it, in fallback order."""

    name: str
    targets: tuple[Target, ...]
    kind: str = "chat"
    store_bodies: bool = True
    guardrails: GuardrailsConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "targets": [t.to_dict() for t in self.targets],
            "store_bodies": self.store_bodies,
            "guardrails": None if self.guardrails is None else self.guardrails.to_dict(),
        }


@dataclass(frozen=True)
class PromptConfig:
    """Per-prompt overrides (by prompt name)."""

    name: str
    store_bodies: bool | None = None
    guardrails: GuardrailsConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "store_bodies": self.store_bodies,
            "guardrails": None if self.guardrails is None else self.guardrails.to_dict(),
        }


@dataclass(frozen=True)
class CacheConfig:
    """The exact-match response cache: how long an answer is reused, and how many are kept."""

    ttl_s: float
    max_entries: int = 10_000

    def to_dict(self) -> dict[str, Any]:
        return {"ttl_s": self.ttl_s, "max_entries": self.max_entries}


@dataclass(frozen=True)
class GatewayConfig:
    """A whole, checked gateway configuration (see the module docstring for the file)."""

    name: str
    providers: tuple[ProviderConfig, ...]
    models: tuple[ModelConfig, ...]
    prompts: tuple[PromptConfig, ...] = ()
    auth: str = "tokens"
    cache: CacheConfig | None = None
    teams: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    budgets: tuple[BudgetRule, ...] = ()
    store_bodies: bool = True
    guardrails: GuardrailsConfig | None = None
    source: str = "gateway config"
    _index: dict[str, ModelConfig] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {m.name: m for m in self.models})

    def provider(self, name: str) -> ProviderConfig:
        for provider in self.providers:
            if provider.name == name:
                return provider
        raise NotFound(f"{self.source} declares no provider {name!r}")

    def model(self, name: str) -> ModelConfig | None:
        """The gateway model clients call ``name``, or None."""
        return self._index.get(name)

    def team_of(self, user: str) -> str | None:
        """The first team (in file order) that lists ``user``, or None."""
        for team, members in self.teams.items():
            if user in members:
                return team
        return None

    def stores_bodies(self, model: ModelConfig, prompt: str | None) -> bool:
        """Whether a request's bodies go into its trace.

        They do unless the model or the prompt (if the request named one) turns them
        off: privacy wins. A model without its own setting takes the gateway-wide one.
        """
        if prompt is not None:
            for override in self.prompts:
                if override.name == prompt and override.store_bodies is not None:
                    return override.store_bodies and model.store_bodies
        return model.store_bodies

    def guardrails_for(self, model: ModelConfig, prompt: str | None) -> GuardrailsConfig | None:
        """The guardrails a request to ``model`` (rendered from ``prompt``, if any) meets.

        The prompt's section, else the model's, else the gateway's default (see the
        module docstring); None when that section runs no scanner.
        """
        chosen = self.guardrails
        if model.guardrails is not None:
            chosen = model.guardrails
        if prompt is not None:
            for override in self.prompts:
                if override.name == prompt and override.guardrails is not None:
                    chosen = override.guardrails
        return None if chosen is None or chosen.empty else chosen

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "providers": [p.to_dict() for p in self.providers],
            "models": [m.to_dict() for m in self.models],
            "prompts": [p.to_dict() for p in self.prompts],
            "auth": self.auth,
            "cache": None if self.cache is None else self.cache.to_dict(),
            "teams": {team: list(users) for team, users in self.teams.items()},
            "budgets": [b.to_dict() for b in self.budgets],
            "store_bodies": self.store_bodies,
            "guardrails": None if self.guardrails is None else self.guardrails.to_dict(),
        }


# -- reading ---------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str]) -> GatewayConfig:
    """Read and check a gateway configuration file (YAML, or JSON, which YAML reads too).

    Raises:
        NotFound: no such file.
        InvalidInput: the file is not YAML, or does not follow the shape; the message
            names the file, the key, what was expected and what came.
    """
    import yaml

    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFound(f"no gateway config file {str(source)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read gateway config {str(source)!r}: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(f"gateway config {str(source)!r} is not valid YAML: {first}") from None
    return parse_config(doc, source=str(source))


def parse_config(doc: Any, *, source: str = "gateway config") -> GatewayConfig:
    """Check a configuration document (the file's parsed YAML) and build its config.

    Raises:
        InvalidInput: the document does not follow the shape.
    """
    return _Reader(source).config(doc)


class _Reader:
    """Checks one document; every message starts with the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, expected: str, got: Any) -> InvalidInput:
        if isinstance(got, Mapping | list):  # never echo a whole section back
            shown = f"an empty {type(got).__name__}" if not got else type(got).__name__
        else:
            shown = repr(got)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return InvalidInput(f"{self.source}: {where} must be {expected}; got {shown}")

    def mapping(self, value: Any, where: str, keys: Sequence[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, "a mapping", value)
        unknown = sorted(str(k) for k in value if k not in keys)
        if unknown:
            raise InvalidInput(
                f"{self.source}: {where} has unknown key(s) {', '.join(map(repr, unknown))}; "
                f"expected some of {', '.join(keys)}"
            )
        return value

    def items(self, value: Any, where: str, *, empty: bool = True) -> list[Any]:
        if value is None and empty:
            return []
        if not isinstance(value, list) or (not empty and not value):
            raise self.fail(where, "a list" if empty else "a non-empty list", value)
        return value

    def name(self, value: Any, where: str) -> str:
        try:
            return check_name(value, where)
        except InvalidInput:
            raise self.fail(
                where,
                "a name of 1-128 letters, digits, '_', '-' or '.', starting with a letter or digit",
                value,
            ) from None

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, "non-empty text", value)
        return value

    def boolean(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "true or false", value)
        return value

    def number(
        self, value: Any, where: str, *, low: float = 0.0, high: float | None = None
    ) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and math.isfinite(value) and value > low and (high is None or value <= high):
            return float(value)
        rule = f"a number above {low:g}" + ("" if high is None else f" and at most {high:g}")
        raise self.fail(where, rule, value)

    def whole(self, value: Any, where: str, *, low: int) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= low:
            return value
        raise self.fail(where, f"a whole number of at least {low}", value)

    def choice(self, value: Any, where: str, options: Sequence[str]) -> str:
        if value not in options:
            raise self.fail(where, f"one of {', '.join(options)}", value)
        return str(value)

    def unique(self, names: list[str], where: str) -> None:
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise InvalidInput(f"{self.source}: {where} names {name!r} twice; names are unique")
            seen.add(name)

    # -- sections --------------------------------------------------------------------------

    def config(self, doc: Any) -> GatewayConfig:
        top = self.mapping(doc, "the file", _TOP_KEYS)
        name = self.name(top.get("name", "gateway"), "name")
        default_bodies = self.boolean(top.get("store_bodies", True), "store_bodies")
        providers = tuple(
            self.provider(p, f"providers[{i}]")
            for i, p in enumerate(self.items(top.get("providers"), "providers", empty=False))
        )
        self.unique([p.name for p in providers], "providers")
        declared = [p.name for p in providers]
        models = tuple(
            self.model(m, f"models[{i}]", declared, default_bodies)
            for i, m in enumerate(self.items(top.get("models"), "models", empty=False))
        )
        self.unique([m.name for m in models], "models")
        prompts = tuple(
            self.prompt(p, f"prompts[{i}]")
            for i, p in enumerate(self.items(top.get("prompts"), "prompts"))
        )
        self.unique([p.name for p in prompts], "prompts")
        auth = self.choice(top.get("auth", "tokens"), "auth", AUTH_MODES)
        cache = None if top.get("cache") is None else self.cache(top["cache"])
        teams, budgets = self.budgets(top)
        guardrails = self.guardrails(top.get("guardrails"), "guardrails")
        return GatewayConfig(
            name=name,
            providers=providers,
            models=models,
            prompts=prompts,
            auth=auth,
            cache=cache,
            teams=teams,
            budgets=budgets,
            store_bodies=default_bodies,
            guardrails=guardrails,
            source=self.source,
        )

    def provider(self, value: Any, where: str) -> ProviderConfig:
        doc = self.mapping(value, where, _PROVIDER_KEYS)
        if "name" not in doc or "base_url" not in doc:
            raise InvalidInput(f"{self.source}: {where} needs 'name' and 'base_url'")
        base_url = self.text(doc["base_url"], f"{where}.base_url").rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self.fail(
                f"{where}.base_url", "an http(s) URL such as http://127.0.0.1:8001/v1", base_url
            )
        key_env = doc.get("api_key_env")
        if key_env is not None:
            key_env = self.text(key_env, f"{where}.api_key_env")
            if not key_env.replace("_", "").isalnum() or key_env[0].isdigit():
                raise self.fail(
                    f"{where}.api_key_env",
                    "the name of an environment variable (the key itself never goes in the file)",
                    "<hidden>",
                )
        return ProviderConfig(
            name=self.name(doc["name"], f"{where}.name"),
            base_url=base_url,
            api_key_env=key_env,
            timeout_s=self.number(doc.get("timeout_s", 30.0), f"{where}.timeout_s"),
            retries=self.whole(doc.get("retries", 2), f"{where}.retries", low=0),
        )

    def model(
        self, value: Any, where: str, providers: list[str], default_bodies: bool
    ) -> ModelConfig:
        doc = self.mapping(value, where, _MODEL_KEYS)
        if "name" not in doc:
            raise InvalidInput(f"{self.source}: {where} needs a 'name'")
        targets = []
        for j, item in enumerate(self.items(doc.get("targets"), f"{where}.targets", empty=False)):
            at = f"{where}.targets[{j}]"
            target = self.mapping(item, at, _TARGET_KEYS)
            provider = target.get("provider")
            if provider not in providers:
                raise self.fail(
                    f"{at}.provider", f"a declared provider ({', '.join(providers)})", provider
                )
            targets.append(Target(str(provider), self.text(target.get("model"), f"{at}.model")))
        kind = self.choice(doc.get("kind", "chat"), f"{where}.kind", MODEL_KINDS)
        guardrails = self.guardrails(doc.get("guardrails"), f"{where}.guardrails")
        if kind == "embedding" and guardrails is not None and guardrails.output:
            raise InvalidInput(
                f"{self.source}: {where}.guardrails.output must be empty: an embedding "
                "model's answers are vectors, so it takes input guardrails only"
            )
        return ModelConfig(
            name=self.text(doc["name"], f"{where}.name"),
            targets=tuple(targets),
            kind=kind,
            store_bodies=self.boolean(
                doc.get("store_bodies", default_bodies), f"{where}.store_bodies"
            ),
            guardrails=guardrails,
        )

    def prompt(self, value: Any, where: str) -> PromptConfig:
        doc = self.mapping(value, where, _PROMPT_KEYS)
        bodies = doc.get("store_bodies")
        return PromptConfig(
            name=self.name(doc.get("name"), f"{where}.name"),
            store_bodies=None if bodies is None else self.boolean(bodies, f"{where}.store_bodies"),
            guardrails=self.guardrails(doc.get("guardrails"), f"{where}.guardrails"),
        )

    def guardrails(self, value: Any, where: str) -> GuardrailsConfig | None:
        """A ``guardrails`` section with its scanners built (None: the key is absent)."""
        if value is None:
            return None
        doc = self.mapping(value, where, _GUARDRAILS_KEYS)
        roles: tuple[str, ...] = GUARDED_ROLES
        if doc.get("roles") is not None:
            given = self.items(doc["roles"], f"{where}.roles", empty=False)
            roles = tuple(
                self.choice(r, f"{where}.roles[{i}]", CHAT_ROLES) for i, r in enumerate(given)
            )
        built: dict[str, tuple[Scanner, ...]] = {}
        specs: dict[str, tuple[Any, ...]] = {}
        for stage in ("input", "output"):
            items = self.items(doc.get(stage), f"{where}.{stage}")
            built[stage] = tuple(
                self.scanner(item, f"{where}.{stage}[{i}]", stage) for i, item in enumerate(items)
            )
            specs[stage] = tuple(items)
        return GuardrailsConfig(built["input"], built["output"], roles, specs)

    def scanner(self, spec: Any, where: str, stage: str) -> Scanner:
        """One scanner from its spec, refused with the key when it cannot run at ``stage``."""
        from keel.llm.guardrails.api import make_scanner

        if not isinstance(spec, str) and not (isinstance(spec, Mapping) and "scanner" in spec):
            raise self.fail(where, "a scanner's name or a mapping with a 'scanner' key", spec)
        try:
            scanner = make_scanner(dict(spec) if isinstance(spec, Mapping) else spec)
        except KeelError as exc:
            raise InvalidInput(f"{self.source}: {where}: {exc}") from None
        if stage not in scanner.stages and "both" not in scanner.stages:
            raise InvalidInput(
                f"{self.source}: {where}: scanner {scanner.name!r} reads only "
                f"{' and '.join(scanner.stages)} text, not {stage}; move it under "
                f"'{scanner.stages[0]}'"
            )
        return scanner

    def cache(self, value: Any) -> CacheConfig:
        doc = self.mapping(value, "cache", _CACHE_KEYS)
        if "ttl_s" not in doc:
            raise InvalidInput(f"{self.source}: cache needs 'ttl_s' (seconds an answer is reused)")
        return CacheConfig(
            ttl_s=self.number(doc["ttl_s"], "cache.ttl_s"),
            max_entries=self.whole(doc.get("max_entries", 10_000), "cache.max_entries", low=1),
        )

    def budgets(
        self, top: Mapping[str, Any]
    ) -> tuple[dict[str, tuple[str, ...]], tuple[BudgetRule, ...]]:
        """``teams`` and ``budgets``, checked by the budgets' own rules (one place)."""
        from keel.llm.budgets import budgets_from_config

        try:
            rules, teams = budgets_from_config(
                {"teams": top.get("teams"), "budgets": top.get("budgets")}
            )
        except InvalidInput as exc:
            raise InvalidInput(f"{self.source}: {exc}") from None
        return teams, tuple(rules)
