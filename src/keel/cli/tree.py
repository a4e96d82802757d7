"""The command tree of ``keel``: its groups and commands by name, and which of them a run builds.

Typer converts every command it is given, at a cost per option, so the tree is
named here without importing any group: :func:`register` adds to the Typer root
(:mod:`keel.cli.root`) only what a run can show or invoke. The entry module
(:mod:`keel.cli.main`) reads the root options from here too, and this module
imports nothing of Keel's CLI, so both can stand on it.
"""

from __future__ import annotations

# Not ``typing.TYPE_CHECKING``: the entry module answers ``--version`` without typing.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

    import typer

__all__ = [
    "COMMANDS", "GROUPS", "READ_ONLY", "ROOT_OPTIONS", "leading_options", "reads_only", "register",
]  # fmt: skip

#: Command groups by name: (module, Typer app). Building a Typer command costs time per
#: option, so a run registers only the group its arguments name (see :func:`register`);
#: ``keel --help`` (or an unknown name, to get Typer's error) registers them all, in outline.
GROUPS = {
    "experiments": ("keel.cli.experiments", "app"),
    "runs": ("keel.cli.runs", "app"),
    "models": ("keel.cli.models", "app"),
    "prompts": ("keel.cli.prompts", "app"),
    "data": ("keel.cli.data", "app"),
    "pipeline": ("keel.cli.pipeline", "app"),
    "lineage": ("keel.cli.lineage", "app"),
    "deploy": ("keel.cli.serving", "deploy_app"),
    "predictions": ("keel.cli.serving", "predictions_app"),
    "monitor": ("keel.cli.monitor", "monitor_app"),
    "automation": ("keel.cli.automation", "automation_app"),
    "policy": ("keel.cli.automation", "policy_app"),  # protections and automation policies
    "roles": ("keel.cli.governance", "roles_app"),
    "audit": ("keel.cli.audit", "app"),
    "server": ("keel.cli.server", "server_app"),
    "users": ("keel.cli.server", "users_app"),
    "tokens": ("keel.cli.server", "tokens_app"),
    "import": ("keel.cli.interop", "import_app"),
    "gateway": ("keel.cli.gateway", "gateway_app"),
    "llm": ("keel.cli.llm", "llm_app"),
    "evals": ("keel.cli.evals", "evals_app"),
    "guardrails": ("keel.cli.guardrails", "guardrails_app"),
    "rag": ("keel.cli.rag", "rag_app"),
    "features": ("keel.cli.features", "features_app"),
    "jobs": ("keel.cli.jobs", "jobs_app"),
}
#: Single commands by name: (module, function).
COMMANDS = {
    "serve": ("keel.cli.serving", "serve_command"),
    "predict": ("keel.cli.predict", "predict_command"),
    "drift": ("keel.cli.monitor", "drift_command"),
    "ui": ("keel.cli.ui", "ui_command"),
    "stream": ("keel.cli.stream", "stream_command"),
}
ROOT_OPTIONS = ("--home", "--server")
#: Commands that only read. Run where no home exists they fail, saying where they looked,
#: instead of creating an empty ``.keel`` and answering "No runs match" (a typo'd folder
#: must not look like an empty project). Every other command creates the home on first use.
READ_ONLY = frozenset(
    {
        ("experiments", "list"),
        *(("runs", verb) for verb in ("list", "search", "show", "compare")),
        *(("models", verb) for verb in ("list", "show", "versions", "card")),
        ("models", "alias", "history"),
        *(("prompts", verb) for verb in ("list", "show", "versions", "render", "diff")),
        ("prompts", "alias", "history"),
        *(("data", verb) for verb in ("list", "show")),
        *(("pipeline", verb) for verb in ("list", "show")),
        ("lineage", "show"),
        *(("deploy", verb) for verb in ("list", "status", "history")),
        *(("monitor", verb) for verb in ("history", "alerts", "show")),
        ("monitor", "reference", "show"),
        *(("automation", verb) for verb in ("status", "history")),
        *(("policy", verb) for verb in ("list", "show")),
        ("roles", "list"),
        ("llm", "prices", "list"),
        ("llm", "budgets", "status"),
        *(("rag", verb) for verb in ("list", "versions", "show", "status", "query")),
        *(("rag", "alias", verb) for verb in ("get", "history")),
        *(("audit", verb) for verb in ("list", "verify")),
        *(("features", verb) for verb in ("list", "show", "history", "status", "get", "serve")),
        *(("jobs", verb) for verb in ("list", "show", "logs", "why", "report")),
        *(("jobs", noun, "list") for noun in ("queues", "prices")),
        ("jobs", "queues", "show"),
    }
)


def leading_options(argv: list[str]) -> tuple[list[tuple[str, str | None]], list[str]] | None:
    """The options before the first word of ``argv``, and the arguments from that word on.

    A root option comes with its value (``--home H`` or ``--home=H``); any other option
    comes alone, its value ``None`` (``--version``, ``--help``). ``None`` when a root
    option ends ``argv`` without its value.
    """
    options: list[tuple[str, str | None]] = []
    rest = iter(argv)
    for arg in rest:
        if not arg.startswith("-"):
            return options, [arg, *rest]
        option, eq, value = arg.partition("=")
        if arg in ROOT_OPTIONS:
            given = next(rest, None)
            if given is None:
                return None
            options.append((arg, given))
        elif eq and option in ROOT_OPTIONS:
            options.append((option, value))
        else:
            options.append((arg, None))
    return options, []


def _named(argv: list[str]) -> str | None:
    """The command or group ``argv`` names (the first word that is not a root option)."""
    args = iter(argv)
    for arg in args:
        if arg in ROOT_OPTIONS:
            next(args, None)
        elif not arg.startswith("-"):
            return arg
    return None


def _words(argv: list[str]) -> tuple[str, ...]:
    """The command's words (``runs``, ``search``, …): arguments up to the first option."""
    args = iter(argv)
    words: list[str] = []
    for arg in args:
        if arg in ROOT_OPTIONS and not words:
            next(args, None)
        elif arg.startswith("-"):
            if words:
                break
        else:
            words.append(arg)
    return tuple(words)


def reads_only(argv: list[str]) -> bool:
    """Whether ``argv`` runs a command that only reads (and is not asking for ``--help``)."""
    if "--help" in argv:
        return False
    words = _words(argv)
    return any(words[: len(command)] == command for command in READ_ONLY)


def _lists_commands(argv: list[str], known: Collection[str]) -> bool:
    """Whether ``argv`` shows the root's list of commands (``keel``, ``keel --help …``) or
    names none of ``known`` (Typer's error then suggests the near names)."""
    args = iter(argv)
    for arg in args:
        if arg in ROOT_OPTIONS:
            next(args, None)
        elif arg == "--help":
            return True
        elif not arg.startswith("-"):
            return arg not in known
    return True


def register(app: typer.Typer, argv: list[str]) -> None:
    """Add the command groups ``argv`` needs to ``app``, the root.

    Typer converts every command it is given, at a cost per option, so a run gets
    only what it can show or invoke: the group it names, cut to the command it runs
    (``keel data status`` converts no other ``data`` command); or, when it lists the
    root's commands, every group and command in outline (its name and help only).
    """
    import importlib
    import inspect

    name = _named(argv)
    own = {info.name for info in app.registered_commands if info.name}
    listing = _lists_commands(argv, {*GROUPS, *COMMANDS, *own})
    words = _words(argv)
    for group, (module, attr) in GROUPS.items():
        if listing or group == name:
            sub = getattr(importlib.import_module(module), attr)
            if listing:
                sub = _outline(sub)
            elif len(words) > 1:
                sub = _narrowed(sub, words[1])
            app.add_typer(sub, name=group)
    for command, (module, attr) in COMMANDS.items():
        if listing or command == name:
            function = getattr(importlib.import_module(module), attr)
            if listing:
                app.command(command, help=inspect.getdoc(function))(_listed)
            else:
                app.command(command)(function)


def _narrowed(group: typer.Typer, word: str) -> typer.Typer:
    """``group`` with only its command or sub-group named ``word``, the one this run
    invokes (or whole, when ``word`` names none: Typer's error then lists the others)."""
    import copy

    from typer.main import get_command_name

    commands = [
        info
        for info in group.registered_commands
        if (info.name or get_command_name(getattr(info.callback, "__name__", ""))) == word
    ]
    groups = [info for info in group.registered_groups if info.name == word]
    if not commands and not groups:
        return group
    narrowed = copy.copy(group)
    narrowed.registered_commands = commands
    narrowed.registered_groups = groups
    return narrowed


def _listed() -> None:
    """Stands for a command in the root's list, which shows its name and help only.

    A list is all such a run shows: it either prints the root's help or fails on an
    unknown name, and never invokes a command.
    """


def _outline(group: typer.Typer) -> typer.Typer:
    """``group`` without its commands: the same name, help and callback, for a list."""
    import copy

    outline = copy.copy(group)
    outline.registered_commands = []
    outline.registered_groups = []
    return outline
