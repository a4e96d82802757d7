"""Edge export: sizes and one-row latency of ``keel models export --edge``.

What is measured
----------------
A ``HistGradientBoostingClassifier`` (scikit-learn defaults, 100 trees) is
fitted on breast_cancer's 569 rows x 30 features, registered in a fresh Keel
home and exported with ``keel.models.edge.export_edge`` (which compiles it to
ONNX and checks parity first). Then:

* **sizes**: ``model.onnx``, the onnxruntime-web files in ``web/`` (and the npm
  tarball they were taken from), and the whole folder.
* **predict.py**: the exported file, imported in this process (onnxruntime and
  numpy), one record per call, ``--calls`` calls (default 1,000) after 20
  warm-up calls: p50 and p99. The baseline is the native model in the same
  process (``predict_proba`` on a one-row DataFrame, what a naive edge script
  would do with scikit-learn installed), and Keel's own onnx runtime
  (``keel.load_model(..., runtime="onnx")``, the same one-row DataFrame, checked
  against the signature as the server checks it).
* **browser**: the exported ``web/`` served by ``http.server`` on loopback,
  opened in headless Chromium (Debian's, driven by Playwright): the time until
  the model is ready (fetch, SHA-256 check, WebAssembly start, session), then
  ``window.keelPredict([record])`` ``--calls`` times after 20 warm-up calls,
  timed with ``performance.now()`` around the whole loop (a page that is not
  cross-origin isolated gets a coarsened clock, too coarse to time one call),
  and one call with 100 rows.

Every answer is checked: predict.py's and the browser's classes must equal the
native model's on the rows timed, or the benchmark exits 1. Figures depend on
the machine and what else runs on it; the CPU count is printed.

Usage::

    .venv/bin/python bench/edge.py
    .venv/bin/python bench/edge.py --calls 5000 --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WARMUP = 20


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def timings_ms(call: Callable[[], Any], calls: int) -> list[float]:
    for _ in range(WARMUP):
        call()
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        out.append((time.perf_counter() - started) * 1000.0)
    return sorted(out)


def summary(timings: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(timings),
        "p99_ms": timings[min(len(timings) - 1, int(len(timings) * 0.99))],
    }


def browser_figures(web: Path, records: list[dict[str, Any]], calls: int) -> dict[str, Any]:
    """Load the page in headless Chromium and time ``keelPredict`` there."""
    import functools
    import http.server
    import shutil
    import threading

    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        return {"skipped": "Chromium is not installed (apt-get install chromium)"}

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(web))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url)
            ready_ms = page.evaluate(
                "async () => { const t = performance.now(); await window.keelModel();"
                " return performance.now() - t; }"
            )
            loop = page.evaluate(
                """async ([record, calls, warmup]) => {
                  const batch = [record];
                  for (let i = 0; i < warmup; i++) await window.keelPredict(batch);
                  const started = performance.now();
                  for (let i = 0; i < calls; i++) await window.keelPredict(batch);
                  return { mean_ms: (performance.now() - started) / calls };
                }""",
                [records[0], calls, WARMUP],
            )
            batch = page.evaluate(
                "async records => { const t = performance.now();"
                " const answer = await window.keelPredict(records);"
                " return { ms: performance.now() - t, predictions: answer.predictions }; }",
                records,
            )
            version = page.evaluate("() => ort.env.versions.web")
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return {
        "onnxruntime_web": version,
        "ready_ms": ready_ms,
        "one_row_mean_ms": loop["mean_ms"],
        "rows_100_ms": batch["ms"],
        "predictions": batch["predictions"],
    }


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import numpy as np
    import sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import HistGradientBoostingClassifier

    import keel
    from keel.models.edge import export_edge
    from keel.models.edge.web import RUNTIME_DIR, RUNTIME_RECORD

    keel.init(home=folder / ".keel")
    x, y = load_breast_cancer(return_X_y=True, as_frame=True)
    model = HistGradientBoostingClassifier(random_state=0).fit(x, y)
    with keel.start_run():
        info = keel.log_model(model, "model", input_example=x.head(5))
    keel.register_model(info.uri, "cancer")
    keel.Client().set_alias("cancer", "champion", 1)

    progress("exporting (compiling to ONNX and checking parity first)")
    started = time.perf_counter()
    bundle = export_edge("models:/cancer@champion", folder / "edge")
    export_s = time.perf_counter() - started
    record_doc = json.loads((RUNTIME_DIR / RUNTIME_RECORD).read_text())

    sample = x.sample(100, random_state=3)
    records = json.loads(json.dumps(sample.to_dict(orient="records")))
    expected = model.predict(sample).tolist()

    spec = importlib.util.spec_from_file_location("edge_predict", bundle.path / "predict.py")
    assert spec is not None and spec.loader is not None
    predict = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(predict)
    ok = predict.predict(records) == expected

    progress(f"timing predict.py, {args.calls} one-row calls")
    one = [records[0]]
    edge = summary(timings_ms(lambda: predict.predict(one), args.calls))
    frame = sample.head(1)
    native = summary(timings_ms(lambda: model.predict_proba(frame), args.calls))
    compiled = keel.load_model("models:/cancer@champion", runtime="onnx")
    keel_onnx = summary(timings_ms(lambda: compiled.predict_proba(frame), args.calls))

    browser: dict[str, Any] = {"skipped": "--no-browser"}
    if not args.no_browser:
        progress(f"timing the browser bundle in headless Chromium, {args.calls} one-row calls")
        browser = browser_figures(bundle.path / "web", records, args.calls)
        if "predictions" in browser:
            ok = ok and browser.pop("predictions") == expected

    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "scikit_learn": sklearn.__version__,
            "onnxruntime": importlib.import_module("onnxruntime").__version__,
        },
        "export_s": export_s,
        "sizes_bytes": {
            "model_onnx": bundle.model_bytes,
            "web_runtime": bundle.web_runtime_bytes,
            "npm_tarball": record_doc.get("tarball_bytes"),
            "total": bundle.total_bytes,
        },
        "predict_py": edge,
        "native_sklearn": native,
        "keel_onnx_runtime": keel_onnx,
        "speedup_vs_native_p50": native["p50_ms"] / edge["p50_ms"],
        "browser": browser,
        "same_classes": ok,
        "rows_checked": int(np.asarray(expected).size),
    }


def report(result: dict[str, Any]) -> None:
    sizes = result["sizes_bytes"]
    machine = result["machine"]
    print(
        "Edge export of HistGradientBoostingClassifier on breast_cancer "
        f"({machine['cpus']} CPUs, Python {machine['python']}, scikit-learn "
        f"{machine['scikit_learn']}, onnxruntime {machine['onnxruntime']})"
    )
    print(f"  export (compile + parity + write): {result['export_s']:.1f} s")
    print(f"  model.onnx            {sizes['model_onnx'] / 1e3:9.1f} kB")
    print(
        f"  web runtime           {sizes['web_runtime'] / 1e6:9.2f} MB "
        f"(from a {(sizes['npm_tarball'] or 0) / 1e6:.1f} MB npm tarball)"
    )
    print(f"  whole folder          {sizes['total'] / 1e6:9.2f} MB")
    print("  one-row latency             p50        p99")
    for label, key in (
        ("predict.py (onnxruntime)", "predict_py"),
        ("keel load_model onnx", "keel_onnx_runtime"),
        ("native scikit-learn", "native_sklearn"),
    ):
        figures = result[key]
        print(f"  {label:<26} {figures['p50_ms']:7.3f} ms {figures['p99_ms']:7.3f} ms")
    print(f"  predict.py vs native scikit-learn: {result['speedup_vs_native_p50']:.1f}x faster")
    browser = result["browser"]
    if "skipped" in browser:
        print(f"  browser: skipped ({browser['skipped']})")
    else:
        print(
            f"  browser (onnxruntime-web {browser['onnxruntime_web']}, wasm, 1 thread): "
            f"ready in {browser['ready_ms']:.0f} ms; one row {browser['one_row_mean_ms']:.3f} ms "
            f"mean; "
            f"100 rows {browser['rows_100_ms']:.1f} ms"
        )
    verdict = "same classes as the native model" if result["same_classes"] else "CLASSES DIFFER"
    print(f"  {verdict} on {result['rows_checked']} rows")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="one-row calls timed")
    parser.add_argument("--no-browser", action="store_true", help="skip the browser figures")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory(prefix="keel-bench-edge-") as tmp:
        result = run(args, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    return 0 if result["same_classes"] else 1


if __name__ == "__main__":
    sys.exit(main())
