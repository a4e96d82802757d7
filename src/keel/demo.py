"""``keel demo``: a narrated, real example on data scikit-learn ships.

Until the whole loop exists, the demo shows tracking and the registry end
to end: seeded training runs on the Wisconsin breast-cancer data set
(shipped inside scikit-learn, no download) with per-epoch metrics and
params, a search that MLflow cannot express (it has no OR), then two
models registered, a challenger checked against the champion on the same
holdout and promoted by compare-and-set, and its model card.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from keel.errors import InvalidInput

__all__ = ["run_demo"]


def _require_sklearn() -> Any:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise InvalidInput(
            "the demo trains scikit-learn models: pip install 'keel[demo]'"
        ) from None


def run_demo(home: str | os.PathLike[str] | None = None, console: Console | None = None) -> Path:
    """Run the demo in ``home`` (default ``KEEL_HOME``, else a new temporary folder).

    Returns the home folder it used.
    """
    _require_sklearn()
    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import SGDClassifier
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    import keel

    out = console or Console(highlight=False)
    started = time.perf_counter()
    chosen = home or os.environ.get("KEEL_HOME") or tempfile.mkdtemp(prefix="keel-demo-")
    settings = keel.init(home=Path(chosen))
    out.rule("[bold]Keel demo: experiment tracking")
    out.print(
        f"Keel home: [bold]{settings.home}[/bold] (SQLite metadata + a local artifact folder)"
    )

    data = load_breast_cancer(as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.25, random_state=7, stratify=data.target
    )
    scaler = StandardScaler().fit(x_train)
    x_train_s, x_test_s = scaler.transform(x_train), scaler.transform(x_test)
    out.print(
        f"\n[bold]1. Data[/bold]  breast-cancer (scikit-learn): {len(x_train)} train / "
        f"{len(x_test)} test rows, {x_train.shape[1]} features"
    )

    keel.set_experiment("breast-cancer")
    out.print(
        "\n[bold]2. Train[/bold]  each run logs params, per-epoch metrics and its environment"
    )
    configs: list[dict[str, Any]] = [
        {"model": "sgd-logreg", "alpha": 1e-4, "epochs": 20},
        {"model": "sgd-logreg", "alpha": 1e-2, "epochs": 20},
        {"model": "sgd-hinge", "alpha": 1e-3, "epochs": 20},
        {"model": "random-forest", "n_estimators": 50, "max_depth": 3},
        {"model": "random-forest", "n_estimators": 100, "max_depth": 8},
    ]
    run_ids: list[str] = []
    forests: list[str] = []
    for n, config in enumerate(configs):
        keel.seed_everything(n)
        with keel.start_run(name=f"{config['model']}-{n}") as run:
            keel.log_params(config)
            keel.set_tag("dataset", "breast-cancer")
            if config["model"].startswith("sgd"):
                loss = "log_loss" if config["model"] == "sgd-logreg" else "hinge"
                model = SGDClassifier(loss=loss, alpha=config["alpha"], random_state=n)
                for epoch in range(config["epochs"]):
                    model.partial_fit(x_train_s, y_train, classes=np.array([0, 1]))
                    keel.log_metric(
                        "train_accuracy",
                        accuracy_score(y_train, model.predict(x_train_s)),
                        step=epoch,
                    )
                    keel.log_metric(
                        "val_accuracy", accuracy_score(y_test, model.predict(x_test_s)), step=epoch
                    )
                scores = model.decision_function(x_test_s)
            else:
                model = RandomForestClassifier(
                    n_estimators=config["n_estimators"],
                    max_depth=config["max_depth"],
                    random_state=n,
                ).fit(x_train, y_train)
                keel.log_metric("val_accuracy", accuracy_score(y_test, model.predict(x_test)))
                scores = model.predict_proba(x_test)[:, 1]
                keel.log_metric("val_log_loss", log_loss(y_test, model.predict_proba(x_test)))
                forests.append(keel.log_model(model, "model", input_example=x_train.head(5)).uri)
            auc = roc_auc_score(y_test, scores)
            keel.log_metric("val_roc_auc", auc)
            keel.log_dict(
                {"features": list(data.feature_names), "config": config, "val_roc_auc": auc},
                "summary.json",
            )
            run_ids.append(run.id)
        out.print(f"   run {run.id[:12]}  {run.name:<18} val_roc_auc={auc:.4f}")

    out.print(
        "\n[bold]3. Search[/bold]  runs with AUC ≥ 0.99 that are either forests or "
        "low-regularization SGD (OR and parentheses: MLflow's search has no OR)"
    )
    query = (
        "metrics.val_roc_auc >= 0.99 AND (params.model = 'random-forest' OR params.alpha < 0.001)"
    )
    out.print(f"   [cyan]{query}[/cyan]", soft_wrap=True)
    frame = keel.search_runs(query, order_by=["metrics.val_roc_auc DESC"])
    table = Table("run", "model", "val_accuracy", "val_roc_auc")
    for _, row in frame.iterrows():
        table.add_row(
            row["name"],
            row["params.model"],
            f"{row['metrics.val_accuracy']:.4f}",
            f"{row['metrics.val_roc_auc']:.4f}",
        )
    out.print(table)

    out.print(
        "\n[bold]4. Register[/bold]  both forests as versions of 'breast-cancer' "
        "(skops files, digests pinned); the shallow one becomes champion"
    )
    client = keel.Client()
    for uri in forests:
        version = keel.register_model(uri, "breast-cancer")
        out.print(f"   version {version} ← {uri}")
    client.set_alias("breast-cancer", "champion", 1, comment="first model")
    client.update_model_version(
        "breast-cancer",
        2,
        description="Random forest on the Wisconsin breast-cancer features.\n"
        "## Intended use\nA demo of Keel's registry; not for clinical use.\n"
        "## Limitations\nTrained on 426 rows from one hospital.",
    )

    from keel.checks import Rules, check_model_version

    holdout = settings.home / "holdout.parquet"
    x_test.assign(y=y_test).to_parquet(holdout)
    rules = Rules.from_dict(
        {
            "metrics": {"accuracy": {"min": 0.9}, "roc_auc": {"min": 0.95}},
            "against": {"log_loss": {"min_delta": 0.0}},
        }
    )
    out.print("\n[bold]5. Check[/bold]  version 2 against the champion on the same holdout rows")
    report = check_model_version("breast-cancer", 2, holdout, "y", rules, against="champion")
    gates = Table("gate", "verdict", "detail")
    for gate in report.gates:
        gates.add_row(gate.name, "pass" if gate.passed else "FAIL", gate.detail)
    out.print(gates)
    if report.passed:
        client.set_alias("breast-cancer", "champion", 2, expected=1, comment="passed its gates")
        out.print("   gates passed: champion 1 → 2 (compare-and-set, audited)")
    else:
        out.print("   a gate failed: the champion stays at version 1")
    from keel.registry.card import build_card, render_html

    card_path = settings.home / "card-breast-cancer-v2.html"
    card_path.write_text(render_html(build_card(client, "breast-cancer", 2)))
    out.print(f"   model card: {card_path}", soft_wrap=True)

    elapsed = time.perf_counter() - started
    prefix = f"keel --home {settings.home}"
    out.rule(f"[bold]Done in {elapsed:.1f}s")
    out.print("Explore what it left behind:")
    for command in (
        f"{prefix} runs list",
        f"{prefix} runs show {run_ids[-1][:12]}",
        f"{prefix} runs compare {run_ids[0][:12]} {run_ids[1][:12]} --diff",
        f'{prefix} runs search "{query}" --order-by "metrics.val_roc_auc DESC"',
        f"{prefix} models versions breast-cancer",
        f"{prefix} models check breast-cancer 1 --data {holdout} --target y --against champion",
        f"{prefix} models card breast-cancer 2",
        f"{prefix} audit list",
        f"{prefix} audit verify",
    ):
        out.print(f"  [green]{command}[/green]", soft_wrap=True)
    return settings.home
