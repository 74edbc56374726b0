"""Exclusive locks under a storage root that work on a local disk and on S3.

A lock is one small JSON object at a fixed path, created only if absent:

* local folders (and NFS): ``open(O_CREAT | O_EXCL)``; the holder refreshes the file's mtime as its heartbeat;
* ``s3://``: a put with ``If-None-Match: *`` (S3 conditional writes); the heartbeat rewrites it with
  ``If-Match: <its etag>``, so a holder whose lock was taken over notices instead of overwriting it;
* ``memory://`` (tests, one process): a process-wide table.

The file says who holds the lock and since when (host, pid, purpose, start time). A lock is *stale* when its
heartbeat is older than its ``ttl_s`` or, on the same host, when its process is gone (so a ``kill -9`` frees a
local lock at once); a waiting process then takes it over atomically (local: rename it away and check it was
the one judged stale; S3: a put with ``If-Match`` on the stale etag). While held, a daemon thread beats every
``ttl_s / 4`` seconds; :meth:`FileLock.check` raises :class:`LockLost` if the lock was taken over, and
writers call it just before their commit point.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from fsspec.asyn import sync

from dga_engine import fs as fsio

DEFAULT_TTL_S = 60.0  # a holder that stopped beating for this long is presumed dead


class LockHeld(RuntimeError):
    """The lock is held by someone else (``holder`` says who and since when)."""

    def __init__(self, path: str, holder: dict[str, Any] | None, message: str | None = None) -> None:
        self.path = path
        self.holder = holder or {}
        super().__init__(message or f"{path} is held by {describe(self.holder)}")


class LockLost(RuntimeError):
    """This process's lock expired and was taken over by another process; its work was not committed."""


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host-a (build) since 2026-01-01T10:00:00+00:00`` for messages."""
    if not holder:
        return "an unknown process"
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            f"{' (' + str(holder['purpose']) + ')' if holder.get('purpose') else ''} since {holder.get('since', '?')}")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_MEMORY: dict[str, dict[str, Any]] = {}  # memory:// locks: path -> holder (one process only)
_MEMORY_GUARD = threading.Lock()

# One heartbeat thread per process beats every lock it holds (no thread start/join per short commit).
_HELD: dict[int, FileLock] = {}
_HELD_GUARD = threading.Lock()
_BEATER: list[threading.Thread] = []


def _beat_forever() -> None:
    while True:
        time.sleep(0.05)
        with _HELD_GUARD:
            held = list(_HELD.values())
        now = time.monotonic()
        for lock in held:
            if now - lock._last_beat >= max(0.05, lock.ttl_s / 4):
                lock._beat_once()


def _register(lock: FileLock) -> None:
    with _HELD_GUARD:
        _HELD[id(lock)] = lock
        if not _BEATER or not _BEATER[0].is_alive():  # also after a fork, where the parent's thread is gone
            _BEATER[:] = [threading.Thread(target=_beat_forever, name="dga-lock-heartbeat", daemon=True)]
            _BEATER[0].start()


def _unregister(lock: FileLock) -> None:
    with _HELD_GUARD:
        _HELD.pop(id(lock), None)


class FileLock:
    """An exclusive lock at ``path`` (a local path or an fsspec URL); use as a context manager or acquire/release."""

    def __init__(self, path: str, purpose: str = "", ttl_s: float = DEFAULT_TTL_S) -> None:
        self.path = path
        self.purpose = purpose
        self.ttl_s = float(ttl_s)
        self.token: str | None = None
        self._etag: str | None = None
        self._last_beat = 0.0
        self._lost = False
        self._local = fsio.local_path(path)
        self._s3 = path.startswith("s3://") or path.startswith("s3a://")
        if self._local is None and not self._s3 and not path.startswith("memory://"):
            raise ValueError(f"locks need a local folder, s3:// or memory:// root, not {path!r}: other object stores "
                             "cannot create a file only if it is absent")

    # --- who holds it ------------------------------------------------------------------------------

    def holder(self) -> dict[str, Any] | None:
        """The current holder's record (with ``heartbeat_age_s`` and ``stale``), or None when free."""
        got = self._read()
        if got is None:
            return None
        rec, age, _ = got
        rec = dict(rec)
        rec["heartbeat_age_s"] = age
        rec["stale"] = self._is_stale(rec, age)
        return rec

    def _record(self) -> dict[str, Any]:
        return {"owner": f"{socket.gethostname()}:{os.getpid()}", "host": socket.gethostname(), "pid": os.getpid(),
                "purpose": self.purpose, "since": _now(), "token": self.token, "ttl_s": self.ttl_s}

    def _is_stale(self, rec: dict[str, Any], age: float | None) -> bool:
        if rec.get("host") == socket.gethostname() and isinstance(rec.get("pid"), int) and not _pid_alive(rec["pid"]):
            return True
        ttl = rec.get("ttl_s", self.ttl_s)
        ttl = float(ttl) if isinstance(ttl, (int, float)) and ttl > 0 else self.ttl_s
        return age is not None and age > ttl

    def _read(self) -> tuple[dict[str, Any], float | None, str | None] | None:
        """(record, heartbeat age in s, etag) or None when absent. A damaged lock file reads as an empty record."""
        if self._local is not None:
            try:
                st = os.stat(self._local)
                raw = open(self._local, "rb").read(65536)
            except FileNotFoundError:
                return None
            return _parse(raw), max(0.0, time.time() - st.st_mtime), None
        if self._s3:
            fs, key = fsio.filesystem(self.path)
            bucket, obj = key.split("/", 1)

            async def get() -> tuple[dict[str, Any], bytes]:
                resp = await fs._call_s3("get_object", Bucket=bucket, Key=obj)
                async with resp["Body"] as body:
                    return resp, await body.read()

            try:
                resp, raw = sync(fs.loop, get)
            except FileNotFoundError:
                return None
            rec = _parse(raw[:65536])
            beat = rec.get("heartbeat_at") or rec.get("since")
            try:
                age = time.time() - _dt.datetime.fromisoformat(str(beat)).timestamp()
            except ValueError:
                age = None
            return rec, age, resp.get("ETag")
        with _MEMORY_GUARD:
            rec = _MEMORY.get(self.path)
            return (dict(rec), 0.0, None) if rec is not None else None

    # --- taking and giving back --------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Take the lock if it is free or stale; True on success. Never waits."""
        self.token = uuid.uuid4().hex
        rec = self._record()
        data = json.dumps(rec).encode()
        if self._create(data):
            self._started()
            return True
        got = self._read()
        if got is None:
            return self._create(data) and self._started()
        old, age, etag = got
        if not self._is_stale(old, age):
            return False
        if self._take_over(old, etag, data):
            self._started()
            return True
        return False

    def acquire(self, timeout: float | None = None, poll_s: float = 0.005) -> FileLock:
        """Wait until the lock is ours; LockHeld (naming the holder) after ``timeout`` seconds (None: forever)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll_s
        while not self.try_acquire():
            if deadline is not None and time.monotonic() >= deadline:
                raise LockHeld(self.path, self.holder())
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2 if self._local is not None else 1.0)
        return self

    def release(self) -> None:
        """Give the lock back (only if it is still ours)."""
        _unregister(self)
        if self.token is None:
            return
        got = self._read()
        if got is not None and got[0].get("token") == self.token:
            if self._local is not None:
                try:
                    os.remove(self._local)
                except FileNotFoundError:
                    pass
            elif self._s3:
                fs, key = fsio.filesystem(self.path)
                bucket, obj = key.split("/", 1)
                try:
                    fs.call_s3("delete_object", Bucket=bucket, Key=obj, IfMatch=got[2])
                except (OSError, PermissionError, ValueError):
                    pass  # taken over meanwhile: not ours to delete
            else:
                with _MEMORY_GUARD:
                    if _MEMORY.get(self.path, {}).get("token") == self.token:
                        del _MEMORY[self.path]
        self.token = None

    def check(self) -> None:
        """Raise LockLost if this lock is no longer ours (expired and taken over)."""
        if self.token is None:
            raise LockLost(f"{self.path} is not held")
        got = self._read()
        if self._lost or got is None or got[0].get("token") != self.token:
            self._lost = True
            raise LockLost(
                f"lost {self.path} to {describe(got[0]) if got else 'nobody (it was removed)'}: this process "
                f"stalled longer than the lock's {self.ttl_s:g} s lease; its work was not committed, run it again"
            )

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # --- backends ----------------------------------------------------------------------------------

    def _create(self, data: bytes) -> bool:
        if self._local is not None:
            os.makedirs(os.path.dirname(self._local) or ".", exist_ok=True)
            try:
                fd = os.open(self._local, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:  # no fsync: after a power loss a lock only needs to expire
                fh.write(data)
            return True
        if self._s3:
            fs, key = fsio.filesystem(self.path)
            bucket, obj = key.split("/", 1)
            try:
                resp = fs.call_s3("put_object", Bucket=bucket, Key=obj, Body=data, IfNoneMatch="*")
            except (OSError, PermissionError, ValueError) as exc:
                if _precondition_failed(exc):
                    return False
                raise
            self._etag = resp.get("ETag")
            return True
        with _MEMORY_GUARD:
            if self.path in _MEMORY:
                return False
            _MEMORY[self.path] = json.loads(data)
            return True

    def _take_over(self, old: dict[str, Any], etag: str | None, data: bytes) -> bool:
        if self._local is not None:
            aside = f"{self._local}.stale.{uuid.uuid4().hex[:8]}"
            try:
                os.rename(self._local, aside)
            except FileNotFoundError:
                return self._create(data)
            try:
                moved = _parse(open(aside, "rb").read(65536))
                if moved.get("token") != old.get("token"):  # someone else took it meanwhile: put theirs back
                    try:
                        os.link(aside, self._local)
                    except FileExistsError:
                        pass
                    return False
            finally:
                os.remove(aside)
            return self._create(data)
        if self._s3:
            fs, key = fsio.filesystem(self.path)
            bucket, obj = key.split("/", 1)
            try:
                resp = fs.call_s3("put_object", Bucket=bucket, Key=obj, Body=data, IfMatch=etag)
            except (OSError, PermissionError, ValueError) as exc:
                if _precondition_failed(exc) or isinstance(exc, FileNotFoundError):
                    return False
                raise
            self._etag = resp.get("ETag")
            return True
        with _MEMORY_GUARD:
            if _MEMORY.get(self.path, {}).get("token") != old.get("token"):
                return False
            _MEMORY[self.path] = json.loads(data)
            return True

    def _started(self) -> bool:
        self._lost = False
        self._last_beat = time.monotonic()
        self._since = _now()
        if self._local is not None or self._s3:
            _register(self)
        return True

    def _beat_once(self) -> None:
        """Refresh the heartbeat (local: the file's mtime; S3: a conditional rewrite); mark the lock lost if it is not
        ours."""
        self._last_beat = time.monotonic()
        try:
            if self._local is not None:
                got = self._read()
                if got is None or got[0].get("token") != self.token:
                    self._lost = True
                    _unregister(self)
                    return
                os.utime(self._local)
            else:
                fs, key = fsio.filesystem(self.path)
                bucket, obj = key.split("/", 1)
                rec = self._record()
                rec["since"] = self._since
                rec["heartbeat_at"] = _now()
                resp = fs.call_s3(
                    "put_object", Bucket=bucket, Key=obj, Body=json.dumps(rec).encode(), IfMatch=self._etag
                )
                self._etag = resp.get("ETag")
        except Exception as exc:  # noqa: BLE001 - a failed beat: the lock may be lost; check() decides
            if _precondition_failed(exc) or isinstance(exc, FileNotFoundError):
                self._lost = True
                _unregister(self)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        rec = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return rec if isinstance(rec, dict) else {}


def _precondition_failed(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}"
    return "PreconditionFailed" in text or "412" in text or "At least one of the pre-conditions" in text


__all__ = ["FileLock", "LockHeld", "LockLost", "describe", "DEFAULT_TTL_S"]
