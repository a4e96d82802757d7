"""``keel demo llm``: a prompt's loop on the LLM gateway, narrated, against a stand-in upstream.

**The upstream is a stand-in, not a language model.** It is
:mod:`keel.demo.upstream`: a small deterministic OpenAI-compatible server
that this demo starts on 127.0.0.1. It answers by keyword rules, one rule set
per model name, counts words as tokens, and can be told to be slow or to fail.
No provider key is needed and nothing leaves the machine. Everything else is
real: the prompt registry, a ``keel gateway start`` process with its traces,
prices and costs, the evaluations, and the automation controller.

The story: prompt ``support`` v1 (stand-in model ``basic``, which answers
most support questions vaguely) is in production behind prompt deployment
``support-llm``; customer traffic goes through the gateway and its traces give
requests, latency, tokens and cost. v2 switches to the stand-in model ``plus``,
which answers the eval set's questions: the policy's gates evaluate it against
production on the eval set (v2 vs v1, paired), give it a canary weight, and
promote it on live traffic. v3 moves to a cheaper model, ``lite``, that passes
the same evaluations; once its canary has started, the demo tells the stand-in
to fail part of ``lite``'s requests (a provider outage, simulated: the
stand-in cannot degrade by itself), and the controller rolls v3 back on the
error rate. Every decision is an automation event with its reason.

It runs in a fresh home (``KEEL_HOME`` when set, else a new temporary folder
whose path it prints), takes under a minute on two cores, and stops the two
processes it started.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from keel.errors import BackendUnavailable, InvalidInput

if TYPE_CHECKING:
    from keel.client import Client

__all__ = ["run_llm_demo"]

PROMPT = "support"
ALIAS = "production"
DEPLOYMENT = "support-llm"
POLICY_NAME = "support-loop"
EVAL_SET = "support-evals"
POLICY_FILE = "support-policy.yaml"
GATEWAY_FILE = "gateway.yaml"
STAND_IN_FILE = "stand-in-models.json"
#: Each stand-in model answers after this long (before the gateway's own time).
LATENCY_MS = {"stand-in-basic": 20, "stand-in-plus": 25, "stand-in-lite": 15}
#: USD per million (input, output) tokens of each stand-in model: made-up prices.
PRICES = {
    "stand-in-basic": (0.50, 1.50),
    "stand-in-plus": (1.50, 6.00),
    "stand-in-lite": (0.20, 0.80),
}
#: The support questions: (keyword the stand-in matches, question, what a right answer
#: contains, basic's answer, plus's answer, lite's answer). Basic answers two of eight.
FAQ = (
    (
        "password",
        "How do I reset my password?",
        "Settings > Security",
        "You can reset your password in Settings > Security.",
        "Open Settings > Security, choose Reset password and follow the link we email you.",
        "Settings > Security > Reset password.",
    ),
    (
        "refund",
        "Can I get a refund on an annual plan?",
        "within 30 days",
        "Please contact our support team about refunds.",
        "Yes: annual plans are refunded in full within 30 days of purchase, from Billing.",
        "Yes, within 30 days of purchase.",
    ),
    (
        "export",
        "How do I export my data?",
        "Settings > Export",
        "Please see our help center for data questions.",
        "Go to Settings > Export and pick CSV or JSON; the file is emailed to you.",
        "Settings > Export, as CSV or JSON.",
    ),
    (
        "single sign-on",
        "Which plans include single sign-on?",
        "Business plan",
        "Single sign-on is available on some plans.",
        "Single sign-on (SAML and OIDC) comes with the Business plan and above.",
        "The Business plan and above.",
    ),
    (
        "teammate",
        "How do I add a teammate to my workspace?",
        "Team > Invite",
        "Ask your administrator to add your teammate.",
        "Open Team > Invite, enter their email address and choose a role.",
        "Team > Invite, then their email.",
    ),
    (
        "invoice",
        "Where can I download my invoices?",
        "Billing > Invoices",
        "You can find invoices in Billing > Invoices.",
        "Every invoice is in Billing > Invoices, as a PDF you can download.",
        "Billing > Invoices, as PDFs.",
    ),
    (
        "delete",
        "How do I delete my account?",
        "Settings > Account",
        "We are sorry to see you go! Please contact support.",
        "An owner can delete the account in Settings > Account > Delete account.",
        "Settings > Account > Delete account.",
    ),
    (
        "rate limit",
        "What is the API rate limit?",
        "600 requests per minute",
        "Our API has generous limits.",
        "The API allows 600 requests per minute per key; a 429 says when to retry.",
        "600 requests per minute per key.",
    ),
)
SYSTEM = "You are Acme's support assistant."
TEMPLATES = {
    1: [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "{{ question }}"},
    ],
    2: [
        {
            "role": "system",
            "content": SYSTEM + " Give the exact menu path or policy, in one or two sentences.",
        },
        {"role": "user", "content": "{{ question }}"},
    ],
}
GATEWAY_CONFIG = """\
# The demo's gateway: one provider (the stand-in on loopback), three models a prompt can name.
# `keel gateway start --config {file}` serves it; `keel gateway check --config {file}` explains it.
name: gateway
providers:
  - name: stand-in                # a deterministic stand-in, NOT a language model
    base_url: {base_url}
    retries: 0                    # each upstream failure is a failed request the canary sees
models:
  - name: basic
    targets: [{{provider: stand-in, model: stand-in-basic}}]
  - name: plus
    targets: [{{provider: stand-in, model: stand-in-plus}}]
  - name: lite
    targets: [{{provider: stand-in, model: stand-in-lite}}]
# No tokens checked: only for loopback. A real gateway keeps the default, `auth: tokens`
# (Keel tokens with scope llm, sent as Authorization: Bearer <token>).
auth: none
"""
POLICY = """\
# The support prompt's loop: a new version is evaluated against production on the eval
# set, canaried on the gateway, then promoted or rolled back. `keel policy apply {file}`.
name: support-loop
prompt: support
deployment: support-llm
alias: production
triggers:
  - prompt: {{}}                            # a new version of the prompt
cooldown: 1s                              # the demo's clock is fast; hours in real life
gates:
  evals:                                  # keel evals run ... --against production
    dataset: datasets:/support-evals@latest
    scorers: ["contains:ignore_case=true"]  # the answer holds the expected phrase
    gates: ["contains >= 0.9", "diff.contains >= 0"]
    gateway: {gateway}
rollout:
  canary: {{weight: 30, min_requests: 60, max_duration: 5m}}
  promote_when: {{error_rate: 0.01, p99_ratio: 5.0, cost_ratio: 8.0}}
  rollback_when: {{error_rate: 0.05}}
approval: {{mode: auto}}
"""


def _stand_in_models() -> dict[str, dict[str, Any]]:
    """The stand-in's models: each answers the FAQ's keywords with its own replies."""
    replies = {"stand-in-basic": 3, "stand-in-plus": 4, "stand-in-lite": 5}
    return {
        model: {
            "latency_ms": LATENCY_MS[model],
            "rules": {row[0]: row[column] for row in FAQ},
        }
        for model, column in replies.items()
    }


class _Story:
    """Numbered sections, indented lines, and the controller's events as they come."""

    def __init__(self, out: Console) -> None:
        self.out = out
        self.step = 0

    def section(self, title: str, detail: str) -> None:
        self.step += 1
        self.out.print(f"\n[bold]{self.step}. {title}[/bold]  {detail}", soft_wrap=True)

    def say(self, text: str) -> None:
        self.out.print(f"   {text}", soft_wrap=True)

    def event(self, event: Any) -> None:
        colour = {"promoted": "green", "rolled_back": "red", "gate_failed": "red"}.get(
            event.kind, "cyan"
        )
        target = f"{event.model}/{event.version}" if event.version else event.model
        self.say(f"[{colour}]{event.kind:<15}[/{colour}] {target:<10} {event.reason}")


def _require_gateway_client() -> None:
    """Fail before starting anything if the gateway cannot send requests upstream."""
    import importlib.util

    # The gateway's upstream client is aiohttp; without it every request would fail with a
    # 500 from the gateway, half-way through the demo.
    if importlib.util.find_spec("aiohttp") is None:
        raise InvalidInput(
            "the LLM gateway sends its upstream requests with aiohttp, which is not "
            "installed: pip install aiohttp"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Child:
    """A child process in its own session (stopped with SIGTERM, which flushes its traces)."""

    def __init__(self, what: str, argv: list[str], home: Path, log: Path) -> None:
        self.what = what
        self.log_path = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
        env["KEEL_HOME"] = str(home)
        self._log = log.open("wb")
        self._proc = subprocess.Popen(
            [sys.executable, *argv],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, url: str, timeout: float = 90.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BackendUnavailable(
                    f"the demo's {self.what} exited with code {self._proc.returncode}; "
                    f"see {self.log_path}"
                )
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise BackendUnavailable(
            f"the demo's {self.what} did not start in {timeout:.0f} s; see {self.log_path}"
        )

    def stop(self) -> None:
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGTERM)
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()


class _Traffic:
    """Customers asking the FAQ's questions through the gateway, as ``prompts:/support@production``.

    :meth:`burst` sends a number of requests and returns; :meth:`start` keeps sending at a
    steady rate in the background until :meth:`stop`. Each request has its own
    ``x-request-id`` (the gateway splits a canary by it). What came back is counted per
    answering version (the ``x-keel-prompt-version`` header) and status.
    """

    def __init__(self, base_url: str, connections: int = 4) -> None:
        self.base_url = base_url
        self.connections = connections
        self.counts: collections.Counter[tuple[str, int]] = collections.Counter()
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _send(self, http: Any) -> None:
        import httpx

        with self._lock:
            n = next(self._numbers)
        question = FAQ[n % len(FAQ)][1]
        try:
            answer = http.post(
                f"{self.base_url}/chat/completions",
                json={"model": f"prompts:/{PROMPT}@{ALIAS}", "variables": {"question": question}},
                headers={"x-request-id": f"customer-{n}"},
            )
            key = (answer.headers.get("x-keel-prompt-version", "-"), answer.status_code)
        except httpx.HTTPError:
            key = ("-", 0)
        with self._lock:
            self.counts[key] += 1

    def burst(self, n: int) -> collections.Counter[tuple[str, int]]:
        """Send ``n`` requests over ``connections`` connections; what came back."""
        import httpx

        before = collections.Counter(self.counts)
        share = [
            n // self.connections + (k < n % self.connections) for k in range(self.connections)
        ]

        def worker(count: int) -> None:
            with httpx.Client(timeout=30) as http:
                for _ in range(count):
                    self._send(http)

        threads = [threading.Thread(target=worker, args=(c,)) for c in share]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return self.counts - before

    def start(self, per_second: float) -> None:
        """Keep sending about ``per_second`` requests a second until :meth:`stop`."""
        import httpx

        self._stop.clear()
        gap = self.connections / per_second

        def worker(offset: float) -> None:
            with httpx.Client(timeout=30) as http:
                due = time.monotonic() + offset
                while not self._stop.is_set():
                    self._send(http)
                    due += gap
                    self._stop.wait(max(0.0, due - time.monotonic()))

        self._threads = [
            threading.Thread(target=worker, args=(k * gap / self.connections,), daemon=True)
            for k in range(self.connections)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=35)
        self._threads = []


def _describe(counts: collections.Counter[tuple[str, int]]) -> str:
    parts = [
        f"{version} → {n} x {status or 'no answer'}"
        for (version, status), n in sorted(counts.items())
    ]
    return f"{sum(counts.values())} requests: " + ", ".join(parts)


def _wait_for_traces(client: Client, partition: str, since_ms: int, n: int) -> None:
    """Wait until ``partition`` holds ``n`` traces since ``since_ms`` (the gateway writes
    them in the background, about once a second)."""
    from keel.llm.traces import read_traces

    deadline = time.monotonic() + 30
    while True:
        table = read_traces(client, partition, since_ms, columns=["request_id"])
        if table.num_rows >= n:
            return
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                f"the gateway wrote {table.num_rows} of {n} traces in 30 s; see its log"
            )
        time.sleep(0.3)


def _usd(value: float | None, per: int = 1000) -> str:
    return "-" if value is None else f"${value * per:.4f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _stats_table(stats: dict[str, Any], title: str) -> Table:
    table = Table(
        "version", "req", "errors", "p50 ms", "p99 ms", "tok/req", "$/1k req", title=title
    )
    for key, s in stats.items():
        table.add_row(
            key,
            str(s.requests),
            f"{s.errors} ({s.error_rate:.0%})" if s.error_rate is not None else str(s.errors),
            _ms(s.p50_ms),
            _ms(s.p99_ms),
            "-" if s.tokens_per_request is None else f"{s.tokens_per_request:.1f}",
            _usd(s.cost_per_request),
        )
    cost = sum(s.cost_usd for s in stats.values())
    table.caption = f"{sum(s.requests for s in stats.values())} requests, ${cost:.4f} in all"
    return table


def _show_evals(say: _Story, event: Any) -> None:
    """What the gate's evaluation measured: the candidate's scores next to production's."""
    evals = (event.details.get("metrics") or {}).get("evals") or {}
    metrics = evals.get("metrics") or {}
    if "contains" not in metrics:
        return
    against = evals.get("against") or "-"
    say.say(
        f"   eval run {str(evals.get('run_id'))[:12]} on {evals.get('dataset')}: "
        f"{evals.get('prompt')} vs {against}, the same {metrics.get('cases', 0):.0f} cases"
    )
    line = f"   contains: {metrics['contains']:.2f}"
    if metrics.get("against.contains") is not None:
        line += f" vs {metrics['against.contains']:.2f}"
    if metrics.get("diff.contains") is not None:
        low, high = metrics.get("diff.contains.ci_low"), metrics.get("diff.contains.ci_high")
        line += f"; paired difference {metrics['diff.contains']:+.2f}"
        if low is not None and high is not None:
            line += f" (95% CI {low:+.2f} … {high:+.2f}"
            p_value = metrics.get("diff.contains.p_value")
            line += f", p = {p_value:.3f})" if p_value is not None else ")"
    say.say(line)
    for gate in event.details.get("gates") or []:
        mark = "pass" if gate.get("passed") else "FAIL"
        say.say(f"   {mark}  {gate.get('name')}: {gate.get('detail')}")


def _show_live(say: _Story, event: Any) -> None:
    live = event.details.get("live") or {}
    if not live:
        return
    say.say(
        f"   live: canary {live.get('canary_requests')} answered, {live.get('canary_errors')} "
        f"failed; primary {live.get('primary_requests')} answered, "
        f"{live.get('primary_errors')} failed; cost /1k req "
        f"{_usd(live.get('canary_cost_per_request'))} vs "
        f"{_usd(live.get('primary_cost_per_request'))}"
    )


def _loop(
    controller: Any,
    say: _Story,
    *,
    on_canary: Callable[[], None] | None = None,
    timeout: float = 120.0,
) -> list[Any]:
    """Tick the controller every second until the cycle ends; the events, as they came."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        for result in controller.tick():
            for event in result.events:
                if event.kind == "resumed":
                    continue
                seen.append(event)
                say.event(event)
                if event.kind in ("gate_passed", "gate_failed"):
                    _show_evals(say, event)
                if event.kind in ("promoted", "rolled_back"):
                    _show_live(say, event)
                if event.kind == "canary_started" and on_canary is not None:
                    on_canary()
        if any(e.kind in ("promoted", "rolled_back", "gate_failed") for e in seen):
            return seen
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                f"the canary was not judged within {timeout:.0f} s; "
                f"see `keel automation status` on this home"
            )
        time.sleep(1.0)


def _ask(gateway_url: str, question: str, request_id: str) -> tuple[str, str, str]:
    """One customer question through the gateway: (answering version, answer, cost header)."""
    import httpx

    answer = httpx.post(
        f"{gateway_url}/chat/completions",
        json={"model": f"prompts:/{PROMPT}@{ALIAS}", "variables": {"question": question}},
        headers={"x-request-id": request_id},
        timeout=30,
    )
    answer.raise_for_status()
    cost = answer.headers.get("x-keel-cost-usd")
    return (
        answer.headers.get("x-keel-prompt-version", "-"),
        str(answer.json()["choices"][0]["message"]["content"]),
        "-" if cost is None else f"${float(cost):.7f}",
    )


def _ask_until(gateway_url: str, question: str, version: str) -> tuple[str, str, str]:
    """Ask until ``version`` answers (the gateway re-reads aliases about once a second)."""
    deadline = time.monotonic() + 15
    n = 0
    while True:
        answer = _ask(gateway_url, question, f"after-the-move-{n}")
        if answer[0] == version or time.monotonic() > deadline:
            return answer
        n += 1
        time.sleep(0.25)


def run_llm_demo(
    home: str | os.PathLike[str] | None = None, console: Console | None = None
) -> Path:
    """Run the LLM demo in ``home`` (default ``KEEL_HOME``, else a new temporary folder).

    Returns the home folder it used.
    """
    import httpx

    import keel
    from keel.automation import Controller, PolicyStore, history
    from keel.llm.prices import Prices
    from keel.llm.traces import trace_stats
    from keel.serving import Deployments, build_spec
    from keel.store.sql import now_ms

    _require_gateway_client()
    out = console or Console(highlight=False)
    say = _Story(out)
    started = time.perf_counter()
    chosen = home or os.environ.get("KEEL_HOME") or tempfile.mkdtemp(prefix="keel-demo-llm-")
    settings = keel.init(home=Path(chosen))
    client = keel.Client()
    out.rule("[bold]Keel demo: a prompt's loop on the LLM gateway, with a stand-in upstream")
    out.print(
        f"Keel home: [bold]{settings.home}[/bold] (SQLite metadata + a local artifact folder)"
    )
    out.print(
        "[bold yellow]The upstream is a stand-in, not a language model:[/bold yellow] a small "
        "deterministic OpenAI-compatible server (keel.demo.upstream) that this demo starts on "
        "127.0.0.1. It answers by keyword rules per model name, counts words as tokens, and "
        "can be told to fail. No provider key, no network. Everything else is Keel for real; "
        "point the gateway's providers at vLLM, Ollama, llama.cpp's server or OpenAI to run "
        "the same loop on a language model.",
        soft_wrap=True,
    )

    upstream_port, gateway_port = _free_port(), _free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}/v1"
    models = _stand_in_models()
    (settings.home / STAND_IN_FILE).write_text(json.dumps(models, indent=2) + "\n")
    children: list[_Child] = []
    traffic = _Traffic(gateway_url)
    try:
        say.section(
            "Start the stand-in upstream", f"python -m keel.demo.upstream on {upstream_url}"
        )
        upstream = _Child(
            "stand-in upstream",
            [
                "-m",
                "keel.demo.upstream",
                "--port",
                str(upstream_port),
                "--models",
                json.dumps(models),
            ],
            settings.home,
            settings.home / "stand-in.log",
        )
        children.append(upstream)
        upstream.wait_ready(f"{upstream_url}/v1/models")
        for model, doc in models.items():
            say.say(
                f"{model:<15} answers from {len(doc['rules'])} keyword rules, "
                f"after {doc['latency_ms']} ms"
            )
        say.say(
            f"stand-in-basic answers 2 of the {len(FAQ)} support questions it knows; "
            "plus and lite answer all of them"
        )

        say.section("Prices", "USD per million tokens, per upstream model (rows only added)")
        prices = Prices(client)
        for model, (price_in, price_out) in PRICES.items():
            prices.set(model, input_per_million=price_in, output_per_million=price_out)
            say.say(f"{model:<15} input ${price_in:.2f}  output ${price_out:.2f}  (made up)")

        say.section("Prompt v1 in production", f"prompt {PROMPT}, prompt deployment {DEPLOYMENT}")
        v1 = keel.prompts.register(
            PROMPT,
            template=TEMPLATES[1],
            model="basic",
            parameters={"temperature": 0},
            description="first version",
        )
        keel.prompts.set_alias(PROMPT, ALIAS, v1.version, comment="first version")
        Deployments().create(DEPLOYMENT, build_spec(f"prompts:/{PROMPT}@{ALIAS}", kind="prompt"))
        say.say(f"prompts:/{PROMPT}/{v1.version} (gateway model basic) → alias {ALIAS}")
        say.say(f"{DEPLOYMENT}: 100% of prompts:/{PROMPT}@{ALIAS}'s traffic to its primary route")

        say.section("Start the gateway", f"keel gateway start --config {GATEWAY_FILE}")
        config = settings.home / GATEWAY_FILE
        config.write_text(GATEWAY_CONFIG.format(file=GATEWAY_FILE, base_url=f"{upstream_url}/v1"))
        gateway = _Child(
            "gateway",
            [
                *("-m", "keel.cli.main", "gateway", "start"),
                *("--config", str(config), "--port", str(gateway_port)),
            ],
            settings.home,
            settings.home / "gateway.log",
        )
        children.append(gateway)
        gateway.wait_ready(f"http://127.0.0.1:{gateway_port}/health")
        say.say(f"OpenAI-compatible API on {gateway_url}: models basic, plus, lite")
        say.say(
            "[yellow]auth: none[/yellow]: no tokens checked, fine on loopback for a demo; "
            "a real gateway checks Keel tokens with scope llm"
        )

        say.section(
            "Customers ask", 'POST /v1/chat/completions {"model": "prompts:/support@production"}'
        )
        since = now_ms()
        question = FAQ[1][1]
        version, text, cost = _ask(gateway_url, question, "first-question")
        say.say(f"Q: {question}")
        say.say(f"A ({version}, {cost}): {text}")
        sent = traffic.burst(200)
        say.say(f"then {_describe(sent)}")
        _wait_for_traces(client, DEPLOYMENT, since, 1 + sum(sent.values()))
        out.print(
            _stats_table(
                trace_stats(client, DEPLOYMENT, since),
                f"From the gateway's traces of {DEPLOYMENT}, by prompt version",
            )
        )

        say.section(
            "An eval set and a better prompt", f"dataset {EVAL_SET} (JSONL), prompts:/{PROMPT}/2"
        )
        cases = settings.home / f"{EVAL_SET}.jsonl"
        cases.write_text(
            "".join(
                json.dumps({"vars": {"question": row[1]}, "expected": row[2]}) + "\n" for row in FAQ
            )
        )
        eval_set = keel.data.add(cases, name=EVAL_SET)
        say.say(f"{eval_set.uri}: {len(FAQ)} questions, each with the phrase a right answer holds")
        v2 = keel.prompts.register(
            PROMPT,
            template=TEMPLATES[2],
            model="plus",
            parameters={"temperature": 0},
            description="exact menu paths, on model plus",
        )
        say.say(
            f"prompts:/{PROMPT}/{v2.version}: asks for the exact menu path, on gateway model plus "
            "(the stand-in's answers depend on the model's rules, not on the instructions)"
        )

        say.section(
            "Automate", f"the policy in {POLICY_FILE}: new version → evals → canary → promote"
        )
        policy_path = settings.home / POLICY_FILE
        policy_path.write_text(POLICY.format(file=POLICY_FILE, gateway=gateway_url))
        PolicyStore().apply(policy_path)
        say.say(
            "gates: contains ≥ 0.9 on the eval set and no worse than production, paired; "
            "canary 30% until 60 answered; promote at ≤ 1% errors, p99 ≤ 5x and cost per "
            "request ≤ 8x production's; roll back above 5% errors"
        )
        say.say(
            "customers keep asking, about 40 requests a second; the controller ticks every "
            "second (`keel automation run` ticks every 30 s)"
        )
        controller = Controller(lease_seconds=30)
        before = collections.Counter(traffic.counts)
        traffic.start(per_second=40)
        _loop(controller, say)
        traffic.stop()
        say.say(f"traffic during the cycle: {_describe(traffic.counts - before)}")
        moves = keel.prompts.alias_history(PROMPT, ALIAS)
        say.say(
            f"alias {ALIAS}: "
            + " → ".join(
                [str(moves[0].from_version or "none")] + [str(m.to_version) for m in moves]
            )
        )
        version, text, cost = _ask_until(gateway_url, question, f"{PROMPT}/{v2.version}")
        say.say(f"the gateway re-reads the alias every second; Q: {question}")
        say.say(f"A ({version}, {cost}): {text}")

        say.section(
            "A cheaper model",
            f"prompts:/{PROMPT}/3: v2's template on gateway model lite (7.5x cheaper per token)",
        )
        keel.prompts.register(
            PROMPT,
            template=TEMPLATES[2],
            model="lite",
            parameters={"temperature": 0},
            description="v2 on the cheaper model lite",
        )
        time.sleep(1.0)  # the policy's cooldown after a cycle (an hour or more in real life)

        def degrade() -> None:
            httpx.post(
                f"{upstream_url}/control",
                json={"model": "stand-in-lite", "fail_rate": 0.3},
                timeout=10,
            ).raise_for_status()
            say.say(
                "[yellow]the demo now tells the stand-in to fail 30% of stand-in-lite's "
                "requests[/yellow] (POST /control): a provider outage, simulated after the "
                "gate passed, since the stand-in cannot degrade by itself"
            )

        before = collections.Counter(traffic.counts)
        traffic.start(per_second=40)
        _loop(controller, say, on_canary=degrade)
        traffic.stop()
        say.say(f"traffic during the cycle: {_describe(traffic.counts - before)}")
        routes = Deployments().get(DEPLOYMENT).spec.routes
        say.say(
            f"alias {ALIAS} still → {keel.prompts.get_alias(PROMPT, ALIAS)}; {DEPLOYMENT}: "
            + ", ".join(f"{r.model}@{r.ref} {r.weight}%" for r in routes)
        )
    finally:
        traffic.stop()
        for child in reversed(children):
            child.stop()  # SIGTERM: the gateway flushes its last traces before it exits

    stats = trace_stats(client, DEPLOYMENT, since)
    evaluations = trace_stats(client, "gateway", since, by="all").get("all")
    elapsed = time.perf_counter() - started
    out.rule(f"[bold]Done in {elapsed:.0f}s")
    out.print(_stats_table(stats, f"Every customer request of the demo ({DEPLOYMENT})"))
    if evaluations is not None:
        out.print(
            f"The evaluations' {evaluations.requests} calls went through the gateway too "
            f"(traced under its own name, gateway): ${evaluations.cost_usd:.4f}",
            soft_wrap=True,
        )
    table = Table("time", "event", "prompt", "reason", title="What the automation decided")
    for event in history(POLICY_NAME):
        if event.kind == "resumed":
            continue
        table.add_row(
            time.strftime("%H:%M:%S", time.gmtime(event.at / 1000)),
            event.kind,
            event.model + ("" if event.version is None else f"/{event.version}"),
            event.reason if len(event.reason) < 90 else event.reason[:87] + "…",
        )
    out.print(table)
    prefix = f"keel --home {settings.home}"
    out.print("The gateway and the stand-in are stopped. Explore what they left behind:")
    for command in (
        f"{prefix} automation history --policy {POLICY_NAME}",
        f"{prefix} deploy status {DEPLOYMENT}",
        f"{prefix} deploy history {DEPLOYMENT}",
        f"{prefix} prompts versions {PROMPT}",
        f"{prefix} prompts diff {PROMPT} 1 2",
        f"{prefix} prompts alias history {PROMPT}",
        f"{prefix} llm prices list",
        f"{prefix} monitor run {DEPLOYMENT} --window 1d --json",
        f"{prefix} runs list --experiment evals",
        f"{prefix} audit verify",
    ):
        out.print(f"  [green]{command}[/green]", soft_wrap=True)
    out.print("Start them again, on the same ports, to send your own requests:")
    for command in (
        f"python -m keel.demo.upstream --port {upstream_port} "
        f'--models "$(cat {settings.home / STAND_IN_FILE})"',
        f"{prefix} gateway start --config {settings.home / GATEWAY_FILE} --port {gateway_port}",
    ):
        out.print(f"  [green]{command}[/green]", soft_wrap=True)
    out.print("See it all in the web UI (no login, this machine only):")
    out.print(
        f"  [bold green]{prefix} ui[/bold green]   # then open http://127.0.0.1:5000/",
        soft_wrap=True,
    )
    return settings.home
