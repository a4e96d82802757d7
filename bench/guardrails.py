"""Prompt-injection guardrail: accuracy on the held-out split, and latency per message on one core.

What is measured
----------------
The labelled set Keel ships (``src/keel/llm/guardrails/data/injection.jsonl``),
its ``test`` split (whole template groups held out of training; see the
README beside it). Each layer reads every held-out text at the default
threshold 0.5:

* **heuristics**: the compiled rules alone (``injection_heuristics``);
* **classifier**: logistic regression on all-MiniLM-L6-v2 embeddings alone
  (``injection_classifier``), with the ``static`` encoder (the model's input
  token embeddings, averaged) and the ``contextual`` one (the full six-layer
  sentence embedding of the first and last 128 word pieces);
* **combined**: both, stacked (``injection``): the scanner the gateway runs.

Latency is per message, one message at a time (no batching), after a
warm-up, over every text of the set (``--rounds`` times, each round's
percentiles kept and the best round reported, since other work on the
machine only ever adds time). The process is pinned to one CPU core and
PyTorch runs one thread, so the figure is one core's. The load
average is printed: on a busy machine every figure is higher.

Also measured, not used by the scanners: the same contextual embedding
through onnxruntime (the model exported from the same weights to a temporary
folder), to show what a faster runtime buys for the transformer path; and the
combined scanner on long texts (1k to 16k characters), to show how the rules
scale with length.

Reference figures, cited and not run here (no model download is allowed):
ProtectAI's DeBERTa-v3 prompt-injection detector reports recall 99.6 % and
precision 90.9 % on its own set at about 100-200 ms per message on a CPU;
LLM Guard's prompt-injection scanner measured 213 ms on an m5.xlarge.

Usage::

    .venv/bin/python bench/guardrails.py
    .venv/bin/python bench/guardrails.py --rounds 5 --no-onnx --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_verdicts

#: Cited, not measured: (recall, precision, CPU latency in ms as reported).
REFERENCES = {
    "ProtectAI DeBERTa-v3 (reported)": {"recall": 0.996, "precision": 0.909, "ms": "100-200"},
    "LLM Guard prompt injection (reported, m5.xlarge)": {"ms": "213"},
}
LAYERS: dict[str, dict[str, Any]] = {
    "heuristics": {"scanner": "injection_heuristics"},
    "classifier (static)": {"scanner": "injection_classifier", "encoder": "static"},
    "combined (static)": {"scanner": "injection", "encoder": "static"},
    "classifier (contextual)": {"scanner": "injection_classifier", "encoder": "contextual"},
    "combined (contextual)": {"scanner": "injection", "encoder": "contextual"},
}


def pin_one_core(core: int | None) -> int | None:
    """Pin this process to one CPU (the first it may use, or ``core``); which one, or None."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    chosen = core if core is not None else allowed[0]
    os.sched_setaffinity(0, {chosen})
    return chosen


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(ms)
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
        "max_ms": float(values.max()),
    }


def latency(fn: Callable[[str], Any], texts: Sequence[str], rounds: int) -> dict[str, float]:
    """Per-message latency of ``fn`` over ``texts``: the round with the lowest p99."""
    fn(texts[0])
    best: dict[str, float] | None = None
    for _ in range(rounds):
        times = []
        for text in texts:
            started = time.perf_counter()
            fn(text)
            times.append((time.perf_counter() - started) * 1000.0)
        figures = percentiles(times)
        if best is None or figures["p99_ms"] < best["p99_ms"]:
            best = figures
    assert best is not None
    return best


def accuracy(scores: Sequence[float], labels: Sequence[int], threshold: float) -> dict[str, Any]:
    s, y = np.asarray(scores), np.asarray(labels)
    flagged = s >= threshold
    tp, fp = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum())
    fn, tn = int((~flagged & (y == 1)).sum()), int((~flagged & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and precision + recall
        else None
    )
    return {
        "precision": precision,
        "recall": recall,
        "fpr": fp / (fp + tn) if fp + tn else None,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def onnx_contextual(texts: Sequence[str], rounds: int) -> dict[str, Any]:
    """The contextual embedding through onnxruntime, exported from the same weights (measured only)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return {"skipped": "onnxruntime is not installed"}
    import torch

    from keel.llm.embedding import load_embedder

    model = load_embedder()
    bert = model[0].auto_model.eval()
    tokenizer = model.tokenizer

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: Any, mask: Any) -> Any:
            hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            pooled = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            return torch.nn.functional.normalize(pooled, dim=1)

    with tempfile.TemporaryDirectory(prefix="keel-bench-onnx-") as tmp:
        path = Path(tmp) / "minilm.onnx"
        sample = tokenizer(["export"], return_tensors="pt")
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    Encoder(),
                    (sample["input_ids"], sample["attention_mask"]),
                    str(path),
                    input_names=["ids", "mask"],
                    output_names=["embedding"],
                    dynamic_axes={"ids": {0: "b", 1: "s"}, "mask": {0: "b", 1: "s"}},
                    opset_version=17,
                    dynamo=False,
                )
        except Exception as exc:  # the exporter's failures are many and version-bound
            return {"skipped": f"export failed: {type(exc).__name__}: {exc}"[:200]}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def encode(text: str) -> Any:
            batch = tokenizer([text], truncation=True, max_length=256, return_tensors="np")
            return session.run(
                None,
                {
                    "ids": batch["input_ids"].astype(np.int64),
                    "mask": batch["attention_mask"].astype(np.int64),
                },
            )[0]

        reference = model.encode(list(texts[:20]), normalize_embeddings=True)
        exported = np.vstack([encode(t) for t in texts[:20]])
        return {
            "max_abs_diff_vs_torch": float(np.abs(reference - exported).max()),
            **latency(encode, texts, rounds),
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="latency rounds; the best counts")
    parser.add_argument("--core", type=int, default=None, help="the CPU to pin to")
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime probe")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    core = pin_one_core(args.core)

    import torch

    torch.set_num_threads(1)
    from keel.llm.embedding import load_embedder
    from keel.llm.guardrails.api import make_scanner
    from keel.llm.guardrails.base import ScanContext
    from keel.llm.guardrails.injection_model import load_labelled

    rows = load_labelled()
    held = [row for row in rows if row.split == "test"]
    texts, labels = [row.text for row in held], [row.label for row in held]
    every = [row.text for row in rows]
    tokenizer = load_embedder().tokenizer
    pieces = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in every]

    results: dict[str, Any] = {}
    for layer, spec in LAYERS.items():
        scanner = make_scanner(spec)
        context = ScanContext()

        def run(text: str, scanner: Any = scanner, context: Any = context) -> Any:
            return scanner.scan(text, context)

        scores = [run(t).score for t in texts]
        results[layer] = {
            **accuracy(scores, labels, scanner.threshold),
            "threshold": scanner.threshold,
            "latency": latency(run, every, args.rounds),
        }
    onnx = {"skipped": "--no-onnx"} if args.no_onnx else onnx_contextual(every, args.rounds)
    combined = make_scanner({"scanner": "injection", "encoder": "static"})
    filler = " ".join(row.text for row in rows if row.label == 0)
    long = {
        f"{n:,} chars": latency(lambda t: combined.scan(t, ScanContext()), [filler[:n]] * 20, 1)
        for n in (1_000, 4_000, 16_000)
    }
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    target = results["combined (static)"]
    met_accuracy = (target["recall"] or 0) >= 0.90 and (target["fpr"] or 1) <= 0.05
    met_latency = target["latency"]["p99_ms"] <= 5.0
    summary: dict[str, Any] = {
        "held_out": {"examples": len(held), "positives": sum(labels)},
        "word_pieces": {
            "p50": float(np.percentile(pieces, 50)),
            "p99": float(np.percentile(pieces, 99)),
            "max": int(max(pieces)),
        },
        "core": core,
        "load_average": load,
        "torch_threads": torch.get_num_threads(),
        "layers": results,
        "onnxruntime_contextual_embedding": onnx,
        "combined_static_long_texts": long,
        "references_cited": REFERENCES,
        "targets": {
            "recall >= 0.90 at FPR <= 0.05 (held-out, combined static)": met_accuracy,
            "p99 <= 5 ms per message, one core (heuristics + embedding)": met_latency,
        },
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"Held-out split: {len(held)} examples ({sum(labels)} injections); word pieces per "
        f"message over the whole set p50 {summary['word_pieces']['p50']:.0f}, p99 "
        f"{summary['word_pieces']['p99']:.0f}; pinned to core {core}; load average "
        + (", ".join(f"{x:.1f}" for x in load) if load else "unknown")
    )
    print()
    header = (
        f"{'layer':<26}{'precision':>10}{'recall':>8}{'FPR':>8}{'F1':>8}{'p50 ms':>9}{'p99 ms':>9}"
    )
    print(header)
    print("-" * len(header))

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for layer, r in results.items():
        print(
            f"{layer:<26}{fmt(r['precision']):>10}{fmt(r['recall']):>8}{fmt(r['fpr']):>8}"
            f"{fmt(r['f1']):>8}{r['latency']['p50_ms']:>9.3f}{r['latency']['p99_ms']:>9.3f}"
        )
    if "skipped" in onnx:
        print(f"{'contextual embedding, ORT':<26}  skipped: {onnx['skipped']}")
    else:
        print(
            f"{'contextual embedding, ORT':<26}{'':>34}{onnx['p50_ms']:>9.3f}{onnx['p99_ms']:>9.3f}"
            f"   (max |diff| vs torch {onnx['max_abs_diff_vs_torch']:.1e})"
        )
    print()
    print(
        "combined (static) on long texts: "
        + "; ".join(f"{n}: p50 {f['p50_ms']:.2f} ms" for n, f in long.items())
    )
    p50, p99 = target["latency"]["p50_ms"], target["latency"]["p99_ms"]
    print(
        "Cited, not measured here (other models, sets and machines): ProtectAI DeBERTa-v3 "
        "reports recall 0.996 and precision 0.909 at ~100-200 ms per message on a CPU; LLM "
        f"Guard's scanner 213 ms on an m5.xlarge. Against 100 ms, combined (static) is "
        f"{100 / p50:,.0f}x faster at p50 and {100 / p99:,.0f}x at p99."
    )
    print_verdicts(
        summary["targets"],
        "the cited detectors",
        None,
        notes=["Threshold 0.5 for every layer."],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
