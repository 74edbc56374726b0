"""Prefect's temporary local API, started before an in-process run (``dga-engine build``, ``rounds resume``).

With no ``PREFECT_API_URL``, Prefect starts a temporary API server in a subprocess the first time a flow needs
one and waits ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (Prefect's default: 20 s) for it. The first
start on a machine creates and migrates the SQLite database under ``PREFECT_HOME``, which takes longer than that
on a busy 2-core machine, and the build would die before it began. So the commands start it themselves first:
with a longer wait (unless the user set that setting: theirs is used as is), once more if the first start fails,
and otherwise a one-line error that names the setting. Nothing is written before the server runs.

A database migrated by a newer Prefect (another virtual environment sharing ``PREFECT_HOME``) stops the server at
startup with "Can't locate revision"; waiting longer cannot help, so that case is checked first and named.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
# Seconds to wait for the first start when the user has not set the setting: a first start (database migrations)
# took ~10 s on an idle 2-core machine and over 20 s under load; 120 s leaves room for a machine three times busier.
STARTUP_TIMEOUT_S = 120
ATTEMPTS = 2  # the first start, then one retry on a fresh port


class LocalAPIError(RuntimeError):
    """Prefect's temporary API server did not start; the message says which setting to change."""


def startup_timeout() -> float:
    """The user's own setting of PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (environment, profile,
    prefect.toml...), else :data:`STARTUP_TIMEOUT_S`."""
    from prefect.settings import get_current_settings

    ephemeral = get_current_settings().server.ephemeral
    if "startup_timeout_seconds" in ephemeral.model_fields_set:
        return float(ephemeral.startup_timeout_seconds)
    return float(max(STARTUP_TIMEOUT_S, ephemeral.startup_timeout_seconds))


def ensure_local_api() -> str | None:
    """Start Prefect's temporary API server unless a server is configured; its URL, or None when
    ``PREFECT_API_URL`` names a server (or temporary servers are switched off: Prefect then says so itself).

    Raises :class:`LocalAPIError` when it does not start in :data:`ATTEMPTS` tries.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    check_database_revision()
    timeout = startup_timeout()
    with _quiet_server_lines():
        for attempt in range(1, ATTEMPTS + 1):
            server = SubprocessASGIServer()  # Prefect's own instance: the flow's client finds it running, reuses it
            try:
                # Prefect reads a timeout of 0 as "use the setting"; the setting then says 0 too, so 0 still fails.
                server.start(timeout=timeout)  # type: ignore[arg-type] - Prefect compares it with a float
                return server.api_url
            except RuntimeError as exc:
                log.debug("Prefect's temporary API server, try %d: %s", attempt, exc)
                server.stop()  # a server still migrating its database would otherwise outlive the command
    raise LocalAPIError(
        f"Prefect's temporary API server did not start within {timeout:g} s ({ATTEMPTS} tries): set "
        f"{STARTUP_TIMEOUT_SETTING} higher (e.g. export {STARTUP_TIMEOUT_SETTING}=300), or start a server "
        "(prefect server start) and set PREFECT_API_URL, then run the command again; nothing was written"
    )


def check_database_revision() -> None:
    """Raise :class:`LocalAPIError` when Prefect's SQLite database was migrated to a revision this Prefect does
    not have (a newer Prefect wrote it). Missing, empty or unreadable databases pass: Prefect creates or reports them.
    Only the file is opened, read-only; the connection URL (which may hold a password) is never printed."""
    import prefect
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    url = url.get_secret_value() if url is not None else ""
    if not url.startswith("sqlite") or ":memory:" in url or ":///" not in url:
        return
    database = Path(url.split(":///", 1)[1].split("?", 1)[0]).expanduser()
    if not database.is_file():
        return
    try:
        with sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return  # no table yet, locked or damaged: Prefect's own start says what it finds
    unknown = sorted({row[0] for row in rows} - _known_revisions())
    if unknown:
        raise LocalAPIError(
            f"Prefect's database {database} was migrated by a newer Prefect (revision {', '.join(unknown)}; this "
            f"is prefect {prefect.__version__}): upgrade prefect to the version that wrote it, or give this "
            "environment its own database (e.g. export PREFECT_HOME=~/.prefect-" + prefect.__version__ + "), or "
            "set PREFECT_API_URL to a running server, then run the command again; nothing was written"
        )


def _known_revisions() -> set[str]:
    """The revision ids of the SQLite migrations shipped with the installed Prefect."""
    import prefect.server.database as database_package

    versions = Path(database_package.__file__).parent / "_migrations" / "versions" / "sqlite"
    pattern = re.compile(r'^revision\s*=\s*["\']([0-9a-f]+)["\']', re.MULTILINE)
    return {match for path in versions.glob("*.py") for match in pattern.findall(path.read_text(encoding="utf-8"))}


@contextmanager
def _quiet_server_lines() -> Iterator[None]:
    """Without Prefect's "Starting/Stopping temporary server on ..." lines (four for two failed tries, before
    the one line that says what to do). Only the "prefect" logger's own records: flow and task logs go on."""
    def keep(record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO

    logger = logging.getLogger("prefect")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
