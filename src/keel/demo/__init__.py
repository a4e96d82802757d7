"""``keel demo``: the whole loop, narrated, on a data set scikit-learn ships (no download).

Data versions → a training pipeline → a registered, checked champion →
a real HTTP server and traffic → a documented shift (a referral clinic's
larger tumours, see :mod:`keel.demo.scenario`) → the monitor sees drift →
the policy retrains on the new data version → the challenger passes its
gates → canary → promoted. Then a candidate that looks better offline (a
logistic regression) reaches canary, fails on live requests with a missing
value, and is rolled back by itself. Every decision comes from the
automation controller, recorded as events with reasons.

It runs in a fresh home (``KEEL_HOME`` when set, else a new temporary
folder whose path it prints), takes about a minute on two cores, and stops
the server it started.
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

DEPLOYMENT = "screening-api"
POLICY_FILE = "screening-policy.yaml"
POLICY = """\
# The screening model's loop: retrain on drift or on a new data version, gate the
# challenger against the champion on fresh evaluation data, canary it, then promote
# or roll back on live metrics. `keel policy apply {file}` stores it.
name: screening-loop
model: screening
deployment: screening-api
alias: champion
triggers:
  - drift: {{window: 10m, share: 0.3}}      # 30% of the features drifted on the champion's traffic
  - dataset: {{name: screening}}            # new labelled training data
cooldown: 1s                              # the demo's clock is fast; hours in real life
retrain:
  pipeline: keel.demo.pipeline:screening
  params: {{data: "datasets:/screening@latest", algorithm: {algorithm}, seed: 0}}
  output: model
gates:
  data: datasets:/screening-eval@latest    # fresh evaluation data, the same rows for both
  target: malignant
  rules:
    metrics: {{roc_auc: {{min: 0.95}}, accuracy: {{min: 0.9}}}}
    against: {{accuracy: {{min_delta: 0.0}}}}  # no worse than the champion
  latency: {{p99_ms: 250, requests: 100}}  # one-row predictions on the candidate
rollout:
  canary: {{weight: 30, min_requests: 80, max_duration: 5m}}
  promote_when: {{error_rate: 0.01, p99_ratio: 5.0}}
  rollback_when: {{error_rate: 0.05}}
approval: {{mode: auto}}
"""


def _require_sklearn() -> None:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise InvalidInput(
            "the demo trains scikit-learn models: pip install 'keel[demo]'"
        ) from None


class _Narrator:
    def __init__(self, out: Console) -> None:
        self.out = out
        self.step = 0
        self.seen_event = 0

    def section(self, title: str, detail: str) -> None:
        self.step += 1
        self.out.print(f"\n[bold]{self.step}. {title}[/bold]  {detail}", soft_wrap=True)

    def say(self, text: str) -> None:
        self.out.print(f"   {text}", soft_wrap=True)

    def events(self, results: list[Any]) -> list[Any]:
        shown = []
        for result in results:
            for event in result.events:
                if event.kind == "resumed":
                    continue
                colour = {"promoted": "green", "rolled_back": "red", "gate_failed": "red"}.get(
                    event.kind, "cyan"
                )
                target = f"{event.model}/{event.version}" if event.version else event.model
                self.say(f"[{colour}]{event.kind:<17}[/{colour}] {target:<13} {event.reason}")
                shown.append(event)
        if not shown:
            self.say("[dim]controller: nothing to do[/dim]")
        return shown


def run_demo(home: str | os.PathLike[str] | None = None, console: Console | None = None) -> Path:
    """Run the demo in ``home`` (default ``KEEL_HOME``, else a new temporary folder).

    Returns the home folder it used.
    """
    _require_sklearn()
    import pandas as pd

    import keel
    from keel.automation import Controller, PolicyStore, history
    from keel.checks import Rules, check_model_version
    from keel.demo.scenario import TARGET, load_scenario
    from keel.demo.traffic import Server, send_rows
    from keel.monitoring import run_monitor
    from keel.pipelines import run_pipeline
    from keel.serving import Deployments, build_spec

    out = console or Console(highlight=False)
    say = _Narrator(out)
    started = time.perf_counter()
    chosen = home or os.environ.get("KEEL_HOME") or tempfile.mkdtemp(prefix="keel-demo-")
    settings = keel.init(home=Path(chosen))
    out.rule("[bold]Keel demo: the whole loop")
    out.print(
        f"Keel home: [bold]{settings.home}[/bold] (SQLite metadata + a local artifact folder)"
    )
    story = load_scenario()
    client = keel.Client()

    say.section("Version the data", "breast-cancer cases a screening programme has seen")
    train_v = keel.log_dataset(story.screening, name="screening")
    eval_v = keel.log_dataset(story.screening_eval, name="screening-eval")
    say.say(f"{train_v.uri}: {train_v.num_rows} labelled cases (the smaller tumours)")
    say.say(f"{eval_v.uri}: {eval_v.num_rows} held-out cases for evaluation")

    say.section("Train through a pipeline", "load → split → train → register (each step a run)")
    keel.set_experiment("screening")
    first = run_pipeline("keel.demo.pipeline:screening", params={"data": train_v.uri})
    for step in first.steps:
        say.say(f"step {step.node:<6} run {step.run_id[:12]}")
    say.say(
        f"registered {first.outputs['model']}  (validation ROC AUC {first.outputs['val_roc_auc']:.3f})"
    )

    say.section("Check and promote", "gates on the held-out cases, then the champion alias")
    rules = Rules.from_dict({"metrics": {"roc_auc": {"min": 0.95}, "accuracy": {"min": 0.9}}})
    check = check_model_version("screening", 1, story.screening_eval, TARGET, rules)
    for gate in check.gates:
        say.say(f"{'pass' if gate.passed else 'FAIL'}  {gate.name}: {gate.detail}")
    client.set_alias("screening", "champion", 1, comment="first model, gates passed")
    say.say("champion → screening/1")

    say.section("Serve", f"deployment {DEPLOYMENT} follows screening@champion; a real HTTP server")
    Deployments().create(DEPLOYMENT, build_spec("screening@champion"))
    server = Server(DEPLOYMENT, settings.home, settings.home / "server.log")
    drift_report = None
    try:
        server.wait_ready()
        say.say(f"keel serve {DEPLOYMENT} on http://{server.url} (Open Inference Protocol v2)")
        statuses = send_rows(server, story.routine_traffic(120, seed=1), "routine")
        say.say(f"sent 120 routine screening requests: {dict(statuses)}")

        say.section(
            "Automate", f"the policy in {POLICY_FILE}: drift or new data → retrain → gate → canary"
        )
        policy_path = settings.home / POLICY_FILE
        policy_path.write_text(POLICY.format(file=POLICY_FILE, algorithm="hgb"))
        PolicyStore().apply(policy_path)
        controller = Controller(lease_seconds=30)
        say.events(controller.tick())

        say.section(
            "A shift arrives",
            "a referral clinic joins: larger, more advanced tumours (a new sub-population)",
        )
        new_train = keel.log_dataset(
            pd.concat([story.screening, story.clinic_train], ignore_index=True), name="screening"
        )
        new_eval = keel.log_dataset(
            pd.concat([story.screening_eval, story.clinic_eval], ignore_index=True),
            name="screening-eval",
        )
        say.say(
            f"{new_train.uri}: +{len(story.clinic_train)} labelled clinic cases; {new_eval.uri}"
        )
        statuses = send_rows(server, story.shifted_traffic(400, seed=2), "shift")
        say.say(f"sent 400 requests, a third of them from the clinic: {dict(statuses)}")
        server_flush(server)
        watched = run_monitor(DEPLOYMENT, window="10m")
        drift_report = watched.report()
        mine = (watched.versions or {}).get("screening/1") or {}
        say.say(
            f"monitor: {mine.get('share_drifted', 0):.0%} of features drifted on the "
            f"champion's traffic: {', '.join(c.removeprefix('input.') for c in mine.get('drifted_columns', [])[:5])} …"
        )

        say.section(
            "The loop closes", "the controller retrains, gates and starts a canary by itself"
        )
        say.events(controller.tick())
        server.wait_routing({1, 2})  # a running server picks up a new revision within a second
        statuses = send_rows(server, story.shifted_traffic(360, seed=3), "canary")
        say.say(f"sent 360 more requests (30% to the canary): {dict(statuses)}")
        server_flush(server)
        say.events(controller.tick())
        say.say(f"champion → screening/{client.get_alias('screening', 'champion')}")

        say.section(
            "A bad candidate",
            "a teammate's change: a logistic regression, better offline; a new data batch arrives",
        )
        policy_path.write_text(POLICY.format(file=POLICY_FILE, algorithm="logreg"))
        PolicyStore().apply(policy_path)
        batch = keel.log_dataset(
            pd.concat([story.screening, story.clinic_train, story.clinic_more], ignore_index=True),
            name="screening",
        )
        say.say(f"{batch.uri}: +{len(story.clinic_more)} more labelled clinic cases")
        time.sleep(1.0)  # the policy's cooldown after a cycle (an hour or more in real life)
        say.events(controller.tick())
        server.wait_routing({2, 3})
        statuses = send_rows(server, story.glitchy_traffic(300, seed=4), "glitch")
        say.say(
            "sent 300 requests; the clinic's scanner left 'worst concave points' blank in a "
            f"quarter of them: {dict(statuses)}"
        )
        server_flush(server)
        say.events(controller.tick())
    finally:
        server.stop()

    events = history("screening-loop")
    report_path = _write_report(settings.home, events, drift_report)
    elapsed = time.perf_counter() - started
    out.rule(f"[bold]Done in {elapsed:.0f}s")
    table = Table("time", "event", "model", "reason", title="What the automation decided")
    for event in events:
        if event.kind == "resumed":
            continue
        table.add_row(
            time.strftime("%H:%M:%S", time.gmtime(event.at / 1000)),
            event.kind,
            event.model + ("" if event.version is None else f"/{event.version}"),
            event.reason if len(event.reason) < 90 else event.reason[:87] + "…",
        )
    out.print(table)
    out.print(f"Loop report (timeline, lineage, drift): [bold]{report_path}[/bold]", soft_wrap=True)
    prefix = f"keel --home {settings.home}"
    out.print("Explore what it left behind:")
    for command in (
        f"{prefix} automation history",
        f"{prefix} policy show screening-loop",
        f"{prefix} deploy history {DEPLOYMENT}",
        f"{prefix} models versions screening",
        f"{prefix} monitor history {DEPLOYMENT}",
        f"{prefix} lineage show models:/screening/2 --upstream",
        f"{prefix} data list",
        f"{prefix} pipeline list",
        f"{prefix} audit verify",
        f"{prefix} serve {DEPLOYMENT}   # and POST to /v2/models/{DEPLOYMENT}/infer",
    ):
        out.print(f"  [green]{command}[/green]", soft_wrap=True)
    out.print("See it all in the web UI (no login, this machine only):")
    out.print(
        f"  [bold green]{prefix} ui[/bold green]   # then open http://127.0.0.1:5000/",
        soft_wrap=True,
    )
    return settings.home


def server_flush(server: Any) -> None:
    """Let the server's prediction-log writer flush (it writes once a second)."""
    time.sleep(1.5)


def _write_report(home: Path, events: list[Any], drift_report: Any) -> Path:
    import keel
    from keel.automation.report import write_loop_report
    from keel.pipelines import upstream
    from keel.predictions import read_predictions

    settings = keel.config.get_settings()
    client = keel.Client()
    champion = client.get_alias("screening", "champion")
    rows = read_predictions(
        settings.artifacts_url,
        DEPLOYMENT,
        columns=["request_id", "time", "version", "route"],
    )
    prediction = None
    for row in reversed(rows.to_pylist()):
        if row["version"] == champion:
            prediction = row
            break
    graph = upstream(f"models:/screening/{champion}")
    drift_html = None
    if drift_report is not None:
        from keel.monitoring.report import render_html

        drift_html = render_html(drift_report, "Drift on the champion's traffic after the shift")
    promoted = [e for e in events if e.kind == "promoted"]
    rolled = [e for e in events if e.kind == "rolled_back"]
    return write_loop_report(
        home / "loop-report.html",
        title="Keel: the screening model's loop",
        summary=[
            ("deployment", DEPLOYMENT),
            ("champion now", f"screening/{champion}"),
            ("promoted", ", ".join(f"screening/{e.version}" for e in promoted) or "none"),
            ("rolled back", ", ".join(f"screening/{e.version}" for e in rolled) or "none"),
            ("events", str(len(events))),
        ],
        events=events,
        lineage=graph,
        prediction=prediction,
        drift_html=drift_html,
    )
