"""The root of the ``keel`` command tree: global options, ``keel init``, ``keel demo``.

:func:`keel.cli.main.main` imports this module only when a run needs Typer
(``keel --version`` never does), then :func:`build` adds what the arguments
need (:func:`keel.cli.tree.register`) and converts the tree into a Click command.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli.output import console, print_json
from keel.cli.tree import reads_only, register

__all__ = ["DemoScenario", "app", "build"]

app = typer.Typer(
    name="keel",
    help="Keel: track, version, register, serve and monitor models — and close the loop.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    # Reached when main's fast path declines (``keel --version --help``): same output.
    if value:
        from keel import __version__

        console.print(f"keel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Keel home folder (default: KEEL_HOME, else the nearest .keel folder upwards).",
            show_default=False,
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="A keel server to work through (default: KEEL_SERVER_URL); KEEL_TOKEN "
            "authenticates.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    if home is not None:
        os.environ["KEEL_HOME"] = str(home)
    if server is not None:
        os.environ["KEEL_SERVER_URL"] = server
    # through a server there is no local home to read: the server holds the state
    if reads_only(sys.argv[1:]) and not os.environ.get("KEEL_SERVER_URL"):
        from keel.home import require_home

        require_home()


@app.command("init")
def init_command(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Folder to create .keel in (default: the home KEEL_HOME or --home names, "
            "else the current folder).",
            show_default=False,
        ),
    ] = None,
    store_url: Annotated[
        str | None, typer.Option(help="Metadata store URL to save in config.toml.")
    ] = None,
    artifacts_url: Annotated[
        str | None, typer.Option(help="Artifact store URL (folder or s3://bucket/prefix) to save.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Create a Keel home (.keel/) with its database, artifact folder and config.toml."""
    from keel.home import init_home

    result = init_home(path, store_url=store_url, artifacts_url=artifacts_url)
    if as_json:
        print_json(result)
        return
    verb = "Created" if result["created"] else "Found"
    console.print(f"{verb} Keel home [bold]{result['home']}[/bold]")
    console.print(f"  metadata   {result['store_url']}")
    console.print(f"  artifacts  {result['artifacts_url']}")


class DemoScenario(StrEnum):
    """What ``keel demo`` shows."""

    loop = "loop"
    llm = "llm"


@app.command("demo")
def demo_command(
    scenario: Annotated[
        DemoScenario,
        typer.Argument(
            help="loop: a model's whole loop, on a dataset scikit-learn ships; llm: a "
            "prompt's loop on the LLM gateway, with a stand-in upstream (not a language model)."
        ),
    ] = DemoScenario.loop,
    home: Annotated[
        Path | None,
        typer.Option(help="Home for the demo (default: KEEL_HOME, else a new temporary folder)."),
    ] = None,
) -> None:
    """Run a small end-to-end example, narrated step by step (`keel demo llm`: the LLM loop)."""
    if scenario is DemoScenario.llm:
        from keel.demo.llm import run_llm_demo

        run_llm_demo(home)
        return
    from keel.demo import run_demo

    run_demo(home)


def build(argv: list[str]) -> Any:
    """The Click command for ``argv``: the root with the groups ``argv`` needs, ready to run."""
    register(app, argv)
    command = typer.main.get_command(app)
    _prepare(command, _coercion_layer())
    return command


def _prepare(command: Any, layer: Any) -> None:
    """Adjust every parameter of ``command``'s tree: see :func:`_hide_flag_type` and
    :class:`_Coercion`."""
    params = [*command.params, command.get_help_option(command.context_class(command))]
    for param in params:
        if param is not None:
            _hide_flag_type(param)
            _defer_coercion(param, layer)
    for sub in getattr(command, "commands", {}).values():
        _prepare(sub, layer)


def _hide_flag_type(param: Any) -> None:
    """Show no value type after a flag (Typer 0.29 prints ``--help <bool>``, ``--json <bool>``).

    A flag takes no value, so its help row must not suggest one; an empty metavar
    leaves the type column blank and changes nothing else.
    """
    if getattr(param, "is_flag", False) and param.metavar is None:
        param.metavar = ""


#: The Typer releases whose value coercion :class:`_Coercion` was checked against, line by line.
_COERCION_CHECKED = ("0.29.",)
#: :meth:`_Coercion.plain`'s answer for a value it leaves to Typer.
_TO_TYPER: Any = object()


class _Coercion:
    """A parameter's value coercion that calls on Pydantic only where Typer's could change
    the value.

    Typer 0.29 coerces every value through a Pydantic ``TypeAdapter`` it builds for the
    parameter on first use, even an absent value (``None``) or a default of the right
    type. Importing Pydantic and building the adapters costs more than importing Typer,
    on every run. For the values below, Typer's adapter returns the value unchanged, so
    this returns it without one:

    * absent (``None``): through Typer's own rule for absent values (``None``, or ``()``
      for a multiple option), on a runtime parameter that has no adapter;
    * a ``str`` for a ``str`` parameter, or ``str`` items for a ``list[str]`` one;
    * an ``int`` or ``float`` default for an unbounded parameter of that type;
    * a ``str`` for a ``Path`` parameter that reads the same as a ``Path``: made one as
      Pydantic would, then checked by Typer's own path coercion (exists, file or folder …).

    Anything else (a number typed on the command line, a choice, a parser …) goes
    through the runtime parameter Typer builds, exactly as without this class.
    """

    def __init__(self, descriptor: Any, layer: Any) -> None:
        self._descriptor = descriptor
        self._layer = layer
        self._absent = layer.PassThroughRuntimeParam(
            parameter_info=descriptor.parameter_info, annotation=descriptor.annotation
        )
        self._runtime: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        if value is None:
            return self._absent.coerce(value, param=param, ctx=ctx)
        plain = self.plain(value, param, ctx)
        if plain is not _TO_TYPER:
            return plain
        if self._runtime is None:
            self._runtime = self._layer.build_runtime_param(self._descriptor)
        return self._runtime.coerce(value, param=param, ctx=ctx)

    def plain(self, value: Any, param: Any, ctx: Any) -> Any:
        """``value`` as Typer's adapter would return it, or ``_TO_TYPER`` to ask Typer."""
        annotation = self._descriptor.annotation
        info = self._descriptor.parameter_info
        if self._descriptor.file_annotation is not None or info.parser is not None:
            return _TO_TYPER
        if param.multiple or param.nargs == -1:
            items = value if isinstance(value, list | tuple) else None
            if annotation == list[str] and items is not None:
                return list(items) if all(type(item) is str for item in items) else _TO_TYPER
            return _TO_TYPER
        if param.nargs != 1:
            return _TO_TYPER
        if annotation is str and type(value) is str:
            return value
        if annotation in (int, float) and type(value) is annotation:
            if info.min is None and info.max is None and not info.clamp:
                return value
            return _TO_TYPER
        if (
            isinstance(annotation, type)
            and issubclass(annotation, Path)
            and info.path_type is None
            and type(value) is str
        ):
            path = annotation(value)
            # Typer's messages quote the value as given: only a path that reads the same
            # (no "./", "//" or trailing "/") may stand in for it.
            if str(path) != value:
                return _TO_TYPER
            return self._layer.coerce_cli_path(
                path, info, path_type=annotation, param=param, ctx=ctx
            )
        return _TO_TYPER


def _coercion_layer() -> Any:
    """Typer's coercion functions, where :class:`_Coercion` was checked against them."""
    from types import SimpleNamespace

    if not typer.__version__.startswith(_COERCION_CHECKED):
        return None
    try:
        from typer._coercion import PassThroughRuntimeParam, build_runtime_param
        from typer._param_types import coerce_cli_path
    except ImportError:
        return None
    return SimpleNamespace(
        PassThroughRuntimeParam=PassThroughRuntimeParam,
        build_runtime_param=build_runtime_param,
        coerce_cli_path=coerce_cli_path,
    )


def _defer_coercion(param: Any, layer: Any) -> None:
    """Give ``param`` a :class:`_Coercion` where Typer would build its own on first use."""
    descriptor = getattr(param, "type_descriptor", None)
    if layer is None or descriptor is None or getattr(param, "_runtime_param", False) is not None:
        return
    param._runtime_param = _Coercion(descriptor, layer)
