"""What every command shares: the storage root option, JSON output, progress bars, clean errors."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dga_engine.layout import Layout

console = Console(stderr=True, soft_wrap=True)  # no hard wraps: messages stay greppable in logs
T = TypeVar("T")

JSON_OPTION = typer.Option(False, "--json", help="Print the result as one JSON object on stdout (for scripts).")


def layout(ctx: typer.Context) -> Layout:
    """The storage root selected by the global ``--root`` option (or ``$DGA_ROOT``, or ``./storage``)."""
    root = (ctx.find_root().obj or {}).get("root")
    return Layout.at(root)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def table(title: str, columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    """Print a table for people (stdout)."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[_fmt(v) for v in r])
    # Piped output would otherwise be cut to 80 columns, truncating the figures.
    Console(width=None if sys.stdout.isatty() else 200).print(t)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def fail(message: str, code: int = 1) -> "typer.Exit":
    """Print ``message`` as an error and exit with ``code``; use as ``raise fail(...)``."""
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


@contextmanager
def progress(description: str, total: int | None, enabled: bool = True) -> Iterator[Any]:
    """A progress bar on stderr; yields a callable ``advance(n=1)``. Silent when ``enabled`` is false."""
    if not enabled:
        yield lambda n=1: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
