"""What every command shares: the storage root option, JSON output, progress bars, clean errors."""

from __future__ import annotations

import errno
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from dga_engine.layout import DEFAULT_ROOT, ROOT_ENV, Layout, RootError

try:  # Typer >= 0.17 parses with its own copy of Click; before, with Click itself
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older Typer
    from click.exceptions import NoArgsIsHelpError, UsageError

console = Console(stderr=True, soft_wrap=True)  # no hard wraps: messages stay greppable in logs
T = TypeVar("T")

JSON_OPTION = typer.Option(False, "--json", help="Print the result as one JSON object on stdout (for scripts).")


# Roots a command must not write to: the data would vanish when the process exits.
_EPHEMERAL_PROTOCOLS = ("memory://",)


def layout(ctx: typer.Context, existing: bool = False) -> Layout:
    """The storage root selected by the global ``--root`` option (or ``$DGA_ROOT``, or ``./storage``).

    A root that cannot be meant (empty, a file, an unknown protocol, ``memory://``) ends the command with
    a one-line error instead of writing somewhere unexpected. ``existing``: the command only reads, so a root
    that does not exist is an error too (a mistyped --root, or the default ./storage in another folder, would
    otherwise print empty tables); commands that write create it.
    """
    root = (ctx.find_root().obj or {}).get("root")
    try:
        lay = Layout.at(root)
    except RootError as exc:
        raise fail(str(exc))
    if lay.root.startswith(_EPHEMERAL_PROTOCOLS):
        raise fail(f"the storage root {lay.root} lives only in this process's memory and would be discarded when the "
                   "command exits: use a folder or an object store (s3://bucket/prefix)")
    if existing:
        from dga_engine import fs

        if not fs.exists(lay.root):
            raise fail(f"the storage root {lay.root} does not exist: point --root (or ${ROOT_ENV}) at the root a build "
                       f"wrote (the default {DEFAULT_ROOT} is relative to the current folder), or create one with "
                       "`dga-engine build`")
    return lay


# OSErrors that mean the storage itself refused the write, not a bug: one line, not a traceback.
_FULL = "free space under the storage root (or point --root elsewhere)"
_LOCKED = "make the storage root writable (or point --root elsewhere)"
_STORAGE_ERRNOS = {errno.ENOSPC: ("no space left on the device", _FULL), errno.EDQUOT: ("disk quota exceeded", _FULL),
                   errno.EFBIG: ("a file grew over the size limit", _FULL),
                   errno.EROFS: ("the file system is read-only", _LOCKED), errno.EACCES: ("permission denied", _LOCKED),
                   errno.EPERM: ("operation not permitted", _LOCKED)}


def storage_error_message(exc: OSError) -> str | None:
    """A one-line message for an OSError the storage raised (disk full, read-only, no permission), else None."""
    known = _STORAGE_ERRNOS.get(exc.errno or -1)
    if known is None:
        return None
    what, todo = known
    where = f" ({exc.filename})" if exc.filename else ""
    return (f"{what}{where}: {todo}, then rerun the command; files are written atomically, so nothing already "
            "written was damaged and finished work is kept")


def _root_problem(exc: OSError, root: str | None) -> str | None:
    """A one-line message when ``exc`` is the storage root itself failing (a folder that cannot be created, an
    object store that cannot be reached), else None."""
    try:
        lay = Layout.at(root)
    except RootError:
        return None
    if lay.is_local:
        where = str(exc.filename or "")
        local = lay.root[len("file://"):] if lay.root.startswith("file://") else lay.root
        if not where.startswith(local):
            return None
        return (f"cannot use the storage root {lay.root}: {exc.strerror or exc} ({where}); point --root at a folder "
                "that exists or can be created")
    path = lay.root.split("://", 1)[1]
    if not (
        isinstance(exc, ConnectionError) or "connect" in type(exc).__name__.lower() or path in str(exc.filename or "")
    ):
        return None
    return (
        f"cannot use the storage root {lay.root}: {type(exc).__name__}: {exc}; check the URL and that it can be reached"
    )


class StorageErrorsGroup(typer.core.TyperGroup):
    """The top-level command group: storage failures (disk full, read-only, a root that cannot be created or
    reached), bad options and option values (``--profile quick``) and optional packages that are not installed end a
    command with one line instead of a traceback or a usage box."""

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:  # `dga-engine rounds`: the group's help
            raise
        except UsageError as exc:  # a subcommand's option: its name, the value and the valid ones
            where = exc.ctx.command_path if exc.ctx is not None else ctx.command_path
            raise fail(f"{exc.format_message().replace('Value error, ', '')} (see {where} --help)", code=2) from None
        except OSError as exc:  # see dga_engine.fs.STORAGE_ERRNOS
            message = storage_error_message(exc) or _root_problem(exc, (ctx.obj or {}).get("root"))
            if message is None:
                raise
            raise fail(message) from None
        except ImportError as exc:  # an optional part that is not installed: the extra that installs it
            from dga_engine.extras import missing_extra_message

            message = missing_extra_message(exc)
            if message is None:
                raise
            raise fail(f"{ctx.invoked_subcommand or 'this command'}: {message}") from None


def object_labels(lay: Layout, object_ids: Iterable[str]) -> dict[str, str]:
    """Each object's label from the object store, for listings ("?" for one the store does not hold)."""
    from dga_engine.layout import UnsafeNameError
    from dga_engine.objects.store import ObjectNotFound, ObjectStore

    store, out = ObjectStore(lay), {}
    for oid in object_ids:
        try:
            out[oid] = store.meta(oid).label
        except (ObjectNotFound, UnsafeNameError, ValueError):  # not ingested here, or another schema version
            out[oid] = "?"
    return out


def labelled(object_ids: Iterable[str], labels: dict[str, str], at_most: int = 3) -> str:
    """``obj-1473...: bottle with a neck; ...`` for a few objects, else their count."""
    ids = list(object_ids)
    if len(ids) > at_most:
        return f"{len(ids)} objects"
    return "; ".join(f"{oid}: {labels.get(oid, '?')}" for oid in ids)


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
    return escape(str(v))  # a label or an SQL result "[...]" is text, not rich markup


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error and exit with ``code``; use as ``raise fail(...)``."""
    console.print(f"[bold red]error:[/] {escape(message)}")  # escaped: "pip install 'dga-engine[s3]'" is not markup
    return typer.Exit(code)


def _bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, transient=False)


@contextmanager
def progress(description: str, total: int | None, enabled: bool = True) -> Iterator[Any]:
    """A progress bar on stderr; yields a callable ``advance(n=1)``. Silent when ``enabled`` is false."""
    if not enabled:
        yield lambda n=1: None
        return
    with _bar() as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


@contextmanager
def progress_done_of(description: str, enabled: bool = True) -> Iterator[Any]:
    """A progress bar for stages that report ``progress(done, total)``; yields that callback."""
    if not enabled:
        yield lambda done, total: None
        return
    with _bar() as bar:
        task = bar.add_task(description, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)
