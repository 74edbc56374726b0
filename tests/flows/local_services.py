"""Real services on 127.0.0.1 for the deployment tests: moto's S3 server, a Prefect server, a Ray head.

Each runs as a subprocess in its own session (so it and every child it spawns form one process group) on a
free port, logs to a file in the test's tmp dir, and is stopped by its process group id, SIGTERM first.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the virtualenv's console scripts (prefect, moto_server, ray, dga-engine)


def exe(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise RuntimeError(f"{name} is not installed next to {sys.executable}: pip install -e '.[test]'")
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """One long-running subprocess (and its children) with a log file."""

    def __init__(self, name: str, args: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(list(args), env=dict(env), cwd=str(cwd), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self, limit: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def _group_alive(self) -> bool:
        self.proc.poll()  # reap the leader, or its zombie keeps the group alive
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after ``timeout``. Safe to call twice."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group outlives its leader while children remain
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while self._group_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._group_alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()


def wait_until(check, *, timeout: float, what: str, service: Service | None = None, interval: float = 0.25) -> Any:
    """Poll ``check()`` until it returns a truthy value; fail with the service's log on timeout or death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service is not None and not service.alive():
            raise RuntimeError(f"{service.name} exited ({service.proc.returncode}) before {what}:\n{service.log()}")
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f} s waiting for {what}" + (f":\n{service.log()}" if service else "")
    )


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return None


def http_json(url: str, body: Any | None = None, timeout: float = 10.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def run(args: Sequence[str], *, env: Mapping[str, str], cwd: Path = REPO, timeout: float = 120.0,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a command to completion (its own session, killed with its children on timeout)."""
    proc = subprocess.Popen(list(args), env=dict(env), cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise TimeoutError(f"{' '.join(args)} took more than {timeout:.0f} s:\n{out[-6000:]}") from None
    result = subprocess.CompletedProcess(list(args), proc.returncode, out, "")
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{out[-6000:]}")
    return result


def base_env(**extra: str) -> dict[str, str]:
    """The test process's environment without anything that points at someone else's Prefect, Ray or cloud."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "AWS_", "FSSPEC_", "RAY_", "DGA_"))}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    env.update(extra)
    return env


# ---- the services ------------------------------------------------------------------------------------


S3_KEY = "dga-test-key"
S3_SECRET = "dga-test-secret"


def s3_env(endpoint: str) -> dict[str, str]:
    """What a worker sets to use an S3-compatible store: fsspec reads FSSPEC_S3_<ARG> as S3FileSystem(<arg>=...)."""
    return {"FSSPEC_S3_ENDPOINT_URL": endpoint, "FSSPEC_S3_KEY": S3_KEY, "FSSPEC_S3_SECRET": S3_SECRET}


def start_moto(tmp: Path) -> tuple[Service, str]:
    """moto's S3 server; returns it and its endpoint URL."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    svc = Service(
        "moto", [exe("moto_server"), "-H", "127.0.0.1", "-p", str(port)], env=base_env(), cwd=tmp, log_dir=tmp
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: http_get(f"{endpoint}/moto-api/") is not None, timeout=60, what="moto's S3 server", service=svc
        )
    except BaseException:
        svc.stop()
        raise
    return svc, endpoint


def start_prefect_server(tmp: Path) -> tuple[Service, dict[str, str]]:
    """``prefect server start --host 127.0.0.1 --port N --no-ui`` with its own PREFECT_HOME (SQLite database).

    Returns the server and the environment every Prefect command of the test uses (PREFECT_API_URL set).
    """
    port = free_port()
    home = tmp / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    api = f"http://127.0.0.1:{port}/api"
    env = base_env(PREFECT_HOME=str(home), PREFECT_API_URL=api)
    server_env = base_env(PREFECT_HOME=str(home))
    svc = Service(
        "prefect-server",
        [exe("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"],
        env=server_env,
        cwd=tmp,
        log_dir=tmp,
    )

    def healthy() -> bool:
        got = http_get(f"{api}/health")
        return got is not None and got[0] == 200

    try:
        wait_until(healthy, timeout=120, what="the Prefect server's /api/health", service=svc)
    except BaseException:
        svc.stop()
        raise
    return svc, env


def start_ray_head(tmp: Path, extra_env: Mapping[str, str] | None = None) -> tuple[Service, str, dict[str, str], Path]:
    """``ray start --head --block`` on a free port with one CPU and token authentication.

    Returns the service, its address, the environment a driver needs to connect (RAY_AUTH_MODE and
    RAY_AUTH_TOKEN: the same token on every node and driver) and Ray's temp dir. ``extra_env`` is the node's
    own configuration, e.g. FSSPEC_S3_* when the storage root is on S3 (actors read the root themselves). HOME points
    into ``tmp``
    so the machine's ``~/.ray/auth_token`` plays no part. Never ``ray stop`` in a test: it stops every Ray
    on the machine; stop the returned service instead.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    ray_tmp = Path("/tmp") / f"ray-dga-{os.getpid()}-{port}"  # short: Ray's socket paths must fit in 107 bytes
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env = base_env(RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp), **auth, **dict(extra_env or {}))
    svc = Service("ray-head", [exe("ray"), "start", "--head", "--block", "--port", str(port), "--num-cpus", "1",
                               "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={ray_tmp}",
                               "--ray-client-server-port", str(free_port())],
                  env=env, cwd=tmp, log_dir=tmp)
    address = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: "Ray runtime started" in svc.log(20000), timeout=120, what="the Ray head", service=svc)
    except BaseException:
        svc.stop()
        raise
    return svc, address, auth, ray_tmp
