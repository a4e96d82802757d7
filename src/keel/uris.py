"""Keel's URIs, parsed in one place.

Every handle a user writes as a string is parsed here and nowhere else:

- ``runs:/<run_id>`` or ``runs:/<run_id>/<path>`` — a run, or an artifact of it
  (:class:`RunURI`);
- ``models:/<name>/<version>``, ``models:/<name>/latest`` or
  ``models:/<name>@<alias>`` — a registered model version (:class:`ModelURI`);
- ``datasets:/<name>@<version>``, ``datasets:/<name>[@latest]`` (whichever
  version is newest when it is resolved) or ``datasets:/<digest>`` (the version
  whose manifest has that 64-hex digest) — a dataset version (:class:`DatasetURI`);
- ``prompts:/<name>/<version>`` or ``prompts:/<name>@<alias>`` — a prompt
  version (:class:`PromptURI`);
- ``features:/<view>`` or ``features:/<view>@<version>`` — a feature view
  (:class:`FeatureURI`);
- ``rag:/<name>/<version>`` or ``rag:/<name>@<alias>`` — a RAG index version
  (:class:`RagURI`).

:func:`parse_uri` dispatches on the scheme; the ``parse_*`` functions below it
accept one scheme each (and the short forms people type: ``churn@champion``,
``churn/3``, ``churn@3``). Names and aliases follow :mod:`keel.validation`.
Parsing only splits a URI into its parts and checks its shape; whether the
object exists is asked when the URI is resolved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from keel.errors import InvalidInput
from keel.validation import check_alias, check_name

__all__ = [
    "DATASETS",
    "FEATURES",
    "MODELS",
    "PROMPTS",
    "RAG",
    "RUNS",
    "SCHEMES",
    "URI",
    "DatasetURI",
    "FeatureURI",
    "ModelURI",
    "PromptURI",
    "RagURI",
    "RunURI",
    "is_dataset_uri",
    "parse_dataset_ref",
    "parse_dataset_uri",
    "parse_feature_uri",
    "parse_model_ref",
    "parse_model_uri",
    "parse_prompt_uri",
    "parse_rag_uri",
    "parse_run_uri",
    "parse_uri",
    "scheme_of",
]

#: The scheme of a run URI.
RUNS = "runs:/"
#: The scheme of a registered model URI.
MODELS = "models:/"
#: The scheme of a dataset URI.
DATASETS = "datasets:/"
#: The scheme of a prompt URI.
PROMPTS = "prompts:/"
#: The scheme of a feature view URI.
FEATURES = "features:/"
#: The scheme of a RAG index URI.
RAG = "rag:/"
#: Every scheme :func:`parse_uri` accepts.
SCHEMES = (RUNS, MODELS, DATASETS, PROMPTS, FEATURES, RAG)

_DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
_MODEL_SHAPES = "models:/<name>/<version>, models:/<name>/latest or models:/<name>@<alias>"
_DATASET_SHAPES = "datasets:/<name>@<version>, datasets:/<name>[@latest] or datasets:/<digest>"


@dataclass(frozen=True)
class RunURI:
    """A parsed ``runs:/`` URI: a run id (or a unique prefix of one) and a path under it."""

    run_id: str
    path: str = ""

    def __str__(self) -> str:
        return f"{RUNS}{self.run_id}" + (f"/{self.path}" if self.path else "")


@dataclass(frozen=True)
class ModelURI:
    """A parsed ``models:/`` URI: a name with a version, an alias, or neither (the latest)."""

    name: str
    version: int | None = None
    alias: str | None = None

    @property
    def latest(self) -> bool:
        """True for ``models:/<name>/latest``: whichever version is newest when resolved."""
        return self.version is None and self.alias is None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"{MODELS}{self.name}@{self.alias}"
        return f"{MODELS}{self.name}/{'latest' if self.version is None else self.version}"


@dataclass(frozen=True)
class DatasetURI:
    """A parsed ``datasets:/`` URI: a name with a version (``None``: the latest), or a digest."""

    name: str | None
    version: int | None = None
    digest: str | None = None

    @property
    def pinned(self) -> bool:
        """True when the URI names one version for good (a number or a digest)."""
        return self.digest is not None or self.version is not None

    def __str__(self) -> str:
        if self.digest is not None:
            return f"{DATASETS}{self.digest}"
        return f"{DATASETS}{self.name}" + ("" if self.version is None else f"@{self.version}")


@dataclass(frozen=True)
class PromptURI:
    """A parsed ``prompts:/`` URI: a prompt name with a version or an alias."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"{PROMPTS}{self.name}@{self.alias}"
        return f"{PROMPTS}{self.name}/{self.version}"


@dataclass(frozen=True)
class FeatureURI:
    """A parsed ``features:/`` URI: a feature view, at one version or (``None``) the latest."""

    view: str
    version: int | None = None

    def __str__(self) -> str:
        return f"{FEATURES}{self.view}" + ("" if self.version is None else f"@{self.version}")


@dataclass(frozen=True)
class RagURI:
    """A parsed ``rag:/`` URI: a RAG index name with a version or an alias."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.alias is not None:
            return f"{RAG}{self.name}@{self.alias}"
        return f"{RAG}{self.name}/{self.version}"


#: Any parsed Keel URI.
URI = RunURI | ModelURI | DatasetURI | PromptURI | FeatureURI | RagURI


def scheme_of(value: object) -> str | None:
    """The scheme (``"runs:/"``, ``"models:/"`` …) ``value`` starts with, or ``None``.

    Only the prefix is looked at, so a malformed URI still has its scheme; parse it to
    check the rest.
    """
    if isinstance(value, str):
        for scheme in SCHEMES:
            if value.startswith(scheme):
                return scheme
    return None


def is_dataset_uri(value: object) -> bool:
    """True when ``value`` is a string in the ``datasets:/`` scheme (well formed or not)."""
    return scheme_of(value) == DATASETS


def parse_uri(text: str) -> URI:
    """``text`` parsed by its scheme: runs, models, datasets, prompts, features or rag.

    Raises:
        InvalidInput: ``text`` is not a string in one of those schemes, or its rest is
            malformed; the message shows the accepted shapes.
    """
    scheme = scheme_of(text)
    if scheme == RUNS:
        return parse_run_uri(text)
    if scheme == MODELS:
        return parse_model_ref(text)
    if scheme == DATASETS:
        return parse_dataset_uri(text)
    if scheme == PROMPTS:
        return parse_prompt_uri(text)
    if scheme == FEATURES:
        return parse_feature_uri(text)
    if scheme == RAG:
        return parse_rag_uri(text)
    raise InvalidInput(
        f"expected a URI starting with {', '.join(SCHEMES)} (e.g. models:/churn@champion), "
        f"got {text!r}"
    )


def parse_run_uri(text: str, *, path: bool = False) -> RunURI:
    """Split ``runs:/<run_id>[/<path>]``; with ``path=True`` the path is required.

    Raises:
        InvalidInput: not a ``runs:/`` URI, no run id, or no path when one is required.
    """
    if scheme_of(text) != RUNS:
        raise InvalidInput(f"expected a run URI such as runs:/<run_id>/model, got {text!r}")
    run_id, _, rest = text[len(RUNS) :].strip("/").partition("/")
    if not run_id or (path and not rest):
        shape = "runs:/<run_id>/<path>" if path else "runs:/<run_id>[/<path>]"
        raise InvalidInput(f"expected {shape}, got {text!r}")
    return RunURI(run_id, rest)


def parse_model_uri(text: str) -> ModelURI | RunURI:
    """Where a model package is: ``models:/…`` or ``runs:/<run_id>/<path>`` (path required).

    Raises:
        InvalidInput: any other string, or a malformed URI of either scheme.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"model URI must be a string, got {type(text).__name__}")
    scheme = scheme_of(text)
    if scheme == RUNS:
        return parse_run_uri(text, path=True)
    if scheme == MODELS:
        return parse_model_ref(text)
    raise InvalidInput(
        f"model URI must start with runs:/ or models:/ (e.g. models:/churn@champion), got {text!r}"
    )


def parse_model_ref(text: str) -> ModelURI:
    """``models:/<name>/<version>|/latest|@<alias>``, the scheme optional (``churn@champion``).

    Raises:
        InvalidInput: the rest is not one of those shapes, or the name or alias breaks
            the naming rule.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"expected a model reference such as {_MODEL_SHAPES}, got {text!r}")
    rest = text.strip()
    rest = rest[len(MODELS) :] if rest.startswith(MODELS) else rest
    rest = rest.strip("/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        return ModelURI(check_name(name, "model name"), alias=check_alias(alias))
    name, _, version = rest.partition("/")
    if version == "latest":
        return ModelURI(check_name(name, "model name"))
    if not _positive(version):
        raise InvalidInput(f"expected {_MODEL_SHAPES}, got {text!r}")
    return ModelURI(check_name(name, "model name"), int(version))


def parse_dataset_uri(uri: str) -> DatasetURI:
    """Split ``datasets:/name[@version|@latest]`` or ``datasets:/<digest>`` into its parts.

    Raises:
        InvalidInput: ``uri`` is not a ``datasets:/`` URI of one of those shapes; the
            message shows each.
    """
    if not is_dataset_uri(uri):
        raise InvalidInput(
            f"expected a dataset URI such as datasets:/churn@3, datasets:/churn (the latest) "
            f"or datasets:/<digest>, got {uri!r}"
        )
    return parse_dataset_ref(uri)


def parse_dataset_ref(ref: str) -> DatasetURI:
    """:func:`parse_dataset_uri` with the scheme optional (``churn@3``, ``churn``, a digest).

    Raises:
        InvalidInput: not one of those shapes; a malformed name gets the naming rule.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput(f"expected a dataset reference like 'churn@3', got {ref!r}")
    text = ref.strip()
    text = text[len(DATASETS) :].strip("/") if text.startswith(DATASETS) else text
    if _DIGEST_RE.match(text):
        return DatasetURI(None, None, text)
    name, sep, version = text.partition("@")
    if not name or "/" in name or (sep and version != "latest" and not _positive(version)):
        raise InvalidInput(f"expected {_DATASET_SHAPES}, got {ref!r}")
    number = int(version) if sep and version != "latest" else None
    return DatasetURI(check_name(name, "dataset name"), number)


def parse_prompt_uri(text: str) -> PromptURI:
    """Split ``prompts:/<name>/<version>`` or ``prompts:/<name>@<alias>``.

    Raises:
        InvalidInput: not a ``prompts:/`` URI of one of those shapes.
    """
    if scheme_of(text) != PROMPTS:
        raise InvalidInput(f"expected a prompt URI such as prompts:/summarize@prod, got {text!r}")
    rest = text[len(PROMPTS) :].strip("/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        return PromptURI(check_name(name, "prompt name"), alias=check_alias(alias))
    name, _, version = rest.partition("/")
    if not _positive(version):
        raise InvalidInput(
            f"expected prompts:/<name>/<version> or prompts:/<name>@<alias>, got {text!r}"
        )
    return PromptURI(check_name(name, "prompt name"), int(version))


def parse_rag_uri(text: str) -> RagURI:
    """Split ``rag:/<name>/<version>`` or ``rag:/<name>@<alias>``; ``kb@production`` too.

    Raises:
        InvalidInput: not a RAG index reference of one of those shapes.
    """
    rest = text[len(RAG) :] if scheme_of(text) == RAG else text
    if not isinstance(rest, str) or scheme_of(rest) is not None:
        raise InvalidInput(f"expected a RAG index URI such as rag:/kb@production, got {text!r}")
    rest = rest.strip("/")
    if "@" in rest:
        name, _, alias = rest.partition("@")
        return RagURI(check_name(name, "index name"), alias=check_alias(alias))
    name, _, version = rest.partition("/")
    if not _positive(version):
        raise InvalidInput(
            f"expected rag:/<name>/<version> or rag:/<name>@<alias> (or <name>@<alias>), got {text!r}"
        )
    return RagURI(check_name(name, "index name"), int(version))


def parse_feature_uri(text: str) -> FeatureURI:
    """Split ``features:/<view>`` or ``features:/<view>@<version>``.

    Raises:
        InvalidInput: not a ``features:/`` URI of one of those shapes.
    """
    if scheme_of(text) != FEATURES:
        raise InvalidInput(f"expected a feature URI such as features:/churn@2, got {text!r}")
    view, sep, version = text[len(FEATURES) :].strip("/").partition("@")
    if not view or "/" in view or (sep and not _positive(version)):
        raise InvalidInput(f"expected features:/<view> or features:/<view>@<version>, got {text!r}")
    return FeatureURI(check_name(view, "feature view name"), int(version) if sep else None)


def _positive(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) >= 1
