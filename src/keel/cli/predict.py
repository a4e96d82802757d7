"""``keel predict``: score a Parquet or CSV file with a model, in chunks, into a new file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli.output import console, print_json
from keel.cli.progress import progress_bar


def predict_command(
    model_uri: Annotated[
        str,
        typer.Argument(
            metavar="MODEL_URI",
            help="models:/name@alias, models:/name/3, runs:/<run_id>/model or a package folder.",
        ),
    ],
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT", help="A .parquet or .csv file, or a folder of .parquet files."
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="File to write: .parquet or .csv (the format follows the suffix).",
        ),
    ],
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", help="Rows per predict call; bounds memory use.")
    ] = 100_000,
    executor: Annotated[
        str, typer.Option(help="local (this process) or ray (Parquet, split by row group).")
    ] = "local",
    keep: Annotated[
        list[str] | None,
        typer.Option(
            "--keep", help="Input column to copy into the output, e.g. an id. Repeatable."
        ),
    ] = None,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress",
            help="Progress bar on stderr (default: when stderr is a terminal).",
            show_default=False,
        ),
    ] = None,
    runtime: Annotated[
        str,
        typer.Option(
            help="What runs a registered version: auto (its compiled form if one passed "
            "parity in `keel models compile`, else the native package), native, onnx or "
            "treelite.",
        ),
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Score every row of a file with a model and write the predictions to a new file.

    The output holds the --keep columns, then `prediction` (or `prediction_0` …
    for several values per row). It is written under a temporary name and
    renamed at the end, so a failure leaves no output file. A registered version
    is scored with its compiled form when one passed parity (--runtime auto).
    """
    from keel.scoring import predict_file

    with progress_bar(f"scoring {input_path.absolute().name}", "rows", enabled=progress) as bar:
        stats = predict_file(
            model_uri,
            input_path,
            output,
            chunk_rows=chunk_rows,
            executor=executor,
            keep_columns=keep or None,
            progress=bar,
            runtime=runtime,
        )
    if as_json:
        print_json(stats)
        return
    console.print(
        f"Scored {stats['rows']:,} rows in {stats['seconds']:.2f} s "
        f"({stats['rows_per_s']:,.0f} rows/s, {stats['runtime']} runtime) → {stats['output']}",
        soft_wrap=True,  # one line, however long the path
    )
