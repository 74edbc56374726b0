"""Rehearsal of the multi-node shape (issue 17), all on 127.0.0.1 and offline.

    a Prefect server (own PREFECT_HOME), the dga-process work pool, flows/prefect.yaml deployed,
    two process workers on that pool;
    a Ray head and a second Ray node (``ray start --address``), one CPU each, token authentication;
    ``prefect deployment run build-dga/demo --watch`` with a small configuration and ray_address=HEAD
    (generation: one GeneratorWorker actor per node, one batch each);
    the same configuration in-process (``dga-engine --root OTHER build ...``) as the single-process reference;
    then ``shards verify --json`` on both roots, and the accepted grasps (and the generated candidates, and the
    round-1 checkpoint) compared.

Prints one JSON report: wall and CPU seconds of each run, the Ray nodes, actors and batches per node (from the
generation completion records, which name the Ray node that ran each batch, and from the cluster's actor
table), rows, verify, equality. Every service is stopped by its process group (never ``ray stop``).

    python benchmarks/rehearse_cluster.py [--out benchmarks/out/rehearse_cluster.json] [--keep]

About 15 minutes on 2 shared CPU cores (both builds run one after the other, never at once).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.flows.local_services import (  # noqa: E402  (the tests' service helpers, used as they are)
    Service,
    base_env,
    exe,
    free_port,
    http_json,
    run,
    start_prefect_server,
    wait_until,
)

# The small configuration: 2 seed objects (seed synthesis, repair, filter), then one round: train the tiny
# generator, generate for 2 expansion objects (2 batches of 1 object: one per Ray actor), polish, filter.
PARAMS = {"n_objects": 2, "rounds": 1, "seed_per_object": 8, "generate_per_object": 8, "workers": 2, "n_expand": 2,
          "seed": 0}
TOLERANCE = 1e-4  # pose components (m, quaternion, rad): float32 sampling on 1 thread (actor) vs 2 (in-process)

_CLK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class CpuMeter:
    """CPU seconds and resident memory of every process started by the watched services, sampled from /proc
    once a second. A process counts for the service whose leader is its ancestor (the Prefect worker runs each
    flow run in a session of its own, so sessions alone would miss it) or whose session it is in (Ray's
    processes whose parent went first); a process's last sample counts."""

    def __init__(self) -> None:
        self.leaders: dict[int, str] = {}
        self.cpu: dict[int, tuple[str, float]] = {}
        self.peak_rss: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def watch(self, svc: Service) -> Service:
        self.leaders[svc.proc.pid] = svc.name
        return svc

    def start(self) -> None:
        self._thread.start()

    def _sample(self) -> None:
        procs: dict[int, tuple[int, int, float, float]] = {}  # pid -> (ppid, session, cpu s, rss bytes)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)": state ppid pgrp session ...
                with open(f"/proc/{entry.name}/statm") as f:
                    resident = int(f.read().split()[1]) * _PAGE
            except (OSError, IndexError, ValueError):
                continue
            procs[int(entry.name)] = (int(fields[1]), int(fields[3]),
                                      (int(fields[11]) + int(fields[12])) / _CLK, resident)
        rss: dict[str, float] = {}
        for pid, (ppid, session, seconds, resident) in procs.items():
            name, up = self.leaders.get(pid), ppid
            for _ in range(64):
                if name is not None or up not in procs:
                    break
                name, up = self.leaders.get(up), procs[up][0]
            name = name or self.leaders.get(session)
            if name is None:
                continue
            self.cpu[pid] = (name, seconds)
            rss[name] = rss.get(name, 0.0) + resident
        for name, value in rss.items():
            self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), value)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(1.0)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        by: dict[str, float] = {}
        for name, seconds in self.cpu.values():
            by[name] = by.get(name, 0.0) + seconds
        return {"cpu_seconds": {k: round(v, 1) for k, v in sorted(by.items())},
                "cpu_seconds_total": round(sum(by.values()), 1),
                "peak_rss_mib": {k: round(v / 2**20, 1) for k, v in sorted(self.peak_rss.items())}}


def ray_node_args(ray_tmp: Path) -> list[str]:
    """Ports every Ray node on this host needs of its own (the defaults collide between two nodes on one host).

    The nodes register under the host's own address, not 127.0.0.1: Ray maps a loopback --node-ip-address to
    it (services.resolve_ip_for_localhost); nothing leaves the machine either way."""
    return ["--num-cpus", "1", "--disable-usage-stats", f"--temp-dir={ray_tmp}",
            "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
            "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]


_RAY_QUERY = """
import json, sys
import ray
from ray._private import state
ray.init(address=sys.argv[1], include_dashboard=False, log_to_driver=False)
nodes = [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "alive": n["Alive"],
          "cpus": n["Resources"].get("CPU", 0),
          "head": "node:__internal_head__" in n["Resources"]} for n in ray.nodes()]
actors = [{"class": a.get("ActorClassName", ""), "node_id": a.get("Address", {}).get("NodeID", ""),
           "pid": a.get("Pid"), "state": a.get("State")} for a in state.actors().values()]
ray.shutdown()
print(json.dumps({"nodes": nodes, "actors": actors}))
"""


def ray_query(address: str, env: dict) -> dict:
    out = run([sys.executable, "-c", _RAY_QUERY, address], env=env, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(args: list[str], env: dict, cwd: Path, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    """Run a command under /usr/bin/time -v; returns it and its wall, CPU and peak-RSS figures."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    timev = Path(tempfile.mkstemp(suffix=".timev")[1])
    out = run(["/usr/bin/time", "-v", "-o", str(timev), *args], env=env, cwd=cwd, timeout=timeout, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss_kb = next((int(line.split(":")[1]) for line in timev.read_text().splitlines()
                   if "Maximum resident set size" in line), 0)
    timev.unlink()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out, {"wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1), "peak_rss_mib": round(rss_kb / 1024, 1)}


def verify(root: Path, env: dict) -> dict:
    out = run([exe("dga-engine"), "--root", str(root), "shards", "verify", "--json"], env=env, timeout=300, check=False)
    try:
        return json.loads(out.stdout[out.stdout.index("{"):])
    except ValueError:
        return {"ok": False, "error": out.stdout[-2000:]}


def stage_cpu(root: Path, env: dict) -> dict:
    """CPU seconds per round and stage as the build's ledger recorded them (the flow process and its finished
    workers; generation on Ray: the driver only)."""
    out = run([exe("dga-engine"), "--root", str(root), "rounds", "status", "--json"], env=env, timeout=120, check=False)
    try:
        status = json.loads(out.stdout[out.stdout.index("{"):])
    except ValueError:
        return {}
    return {str(r["round"]): r.get("cost") for r in status.get("rounds", [])}


def generation_records(root: Path) -> list[dict]:
    folder = root / "runs" / "stages" / "generate"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def compare(cluster: Path, single: Path) -> dict:
    """Accepted grasps, generated candidates and the round-1 checkpoint of the two roots, side by side."""
    import numpy as np

    from dga_engine.dataset.store import Dataset
    from dga_engine.generate import checkpoint as ckpt
    from dga_engine.layout import Layout

    def poses(table) -> dict:
        t = table.sort_by("grasp_id")
        ids = t.column("grasp_id").to_pylist()
        arr = np.concatenate([np.asarray(t.column(c).to_pylist(), dtype=np.float64).reshape(len(ids), -1)
                              for c in ("translation", "rotation", "joints")], axis=1) if ids else np.zeros((0, 31))
        return dict(zip(ids, arr))

    def side(a: dict, b: dict) -> dict:
        common = sorted(set(a) & set(b))
        diff = max((float(np.abs(a[g] - b[g]).max()) for g in common), default=0.0)
        return {"cluster": len(a), "single": len(b), "common": len(common), "only_cluster": len(set(a) - set(b)),
                "only_single": len(set(b) - set(a)), "max_abs_pose_diff": diff,
                "equal": set(a) == set(b) and diff <= TOLERANCE}

    out: dict = {}
    la, lb = Layout.at(str(cluster)), Layout.at(str(single))
    da, db = Dataset(la), Dataset(lb)
    out["accepted"] = side(poses(da.read()), poses(db.read()))
    rounds = {}
    for name, ds in (("cluster", da), ("single", db)):
        col = ds.read(columns=["round"]).column("round").to_pylist()
        rounds[name] = {str(r): col.count(r) for r in sorted(set(col))}
    out["accepted_per_round"] = rounds
    out["generated_candidates"] = side(poses(da.candidates("generator")), poses(db.candidates("generator")))
    out["seed_candidates"] = side(poses(da.candidates("synthesis")), poses(db.candidates("synthesis")))
    out["round1_weights_sha256"] = {"cluster": ckpt.read_meta(la, 1)["weights_sha256"],
                                    "single": ckpt.read_meta(lb, 1)["weights_sha256"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "rehearse_cluster.json"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (roots, logs)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds each build may take")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="dga-cluster-"))
    logs = tmp / "logs"
    logs.mkdir()
    meter = CpuMeter()
    services: list[Service] = []
    report: dict = {"params": PARAMS, "tmp": str(tmp)}
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    ray_tmps = [Path("/tmp") / f"ray-dga-{os.getpid()}-{tag}" for tag in ("h", "n")]  # short: socket paths
    try:
        t_setup = time.perf_counter()
        # ---- Prefect: server, pool, deployments, two workers
        server, env = start_prefect_server(tmp / "prefect")
        services.append(meter.watch(server))
        meter.start()
        run([exe("prefect"), "work-pool", "create", "dga-process", "--type", "process"], env=env, timeout=120)
        run([exe("prefect"), "deploy", "--all", "--prefect-file", "flows/prefect.yaml", "--no-prompt"],
            env=env, cwd=REPO, timeout=300)

        # ---- Ray: a head and a second node, one CPU each, the same token
        ray_env = base_env(RAY_USAGE_STATS_ENABLED="0", HOME=str(tmp), **token)
        head_port = free_port()
        address = f"127.0.0.1:{head_port}"
        head = meter.watch(Service("ray-head", [exe("ray"), "start", "--head", "--block", "--port", str(head_port),
                                                "--include-dashboard=false", "--ray-client-server-port",
                                                str(free_port()), *ray_node_args(ray_tmps[0])],
                                   env=ray_env, cwd=tmp, log_dir=logs))
        services.append(head)
        wait_until(lambda: "Ray runtime started" in head.log(20000), timeout=180, what="the Ray head", service=head)
        node = meter.watch(Service("ray-node", [exe("ray"), "start", "--address", address, "--block",
                                                *ray_node_args(ray_tmps[1])],
                                   env=ray_env, cwd=tmp, log_dir=logs))
        services.append(node)

        def two_alive():
            cluster = ray_query(address, ray_env)
            return cluster if sum(n["alive"] for n in cluster["nodes"]) >= 2 else None

        wait_until(lambda: "Ray runtime started" in node.log(20000), timeout=180, what="the second Ray node",
                   service=node)
        nodes = wait_until(two_alive, timeout=120, what="2 alive Ray nodes", interval=2.0)["nodes"]
        report["ray"] = {"address": address, "nodes": nodes}

        worker_env = {**env, **token, "RAY_USAGE_STATS_ENABLED": "0"}
        workdir = tmp / "worker"
        workdir.mkdir()
        for i in (1, 2):
            services.append(meter.watch(Service(
                f"prefect-worker-{i}",
                [exe("prefect"), "worker", "start", "--pool", "dga-process", "--type", "process", "--name", f"w{i}"],
                env=worker_env, cwd=workdir, log_dir=logs)))
        api = env["PREFECT_API_URL"]
        wait_until(lambda: len([w for w in http_json(f"{api}/work_pools/dga-process/workers/filter", {})
                                if w.get("status") == "ONLINE"]) >= 2,
                   timeout=120, what="2 online Prefect workers", interval=1.0)
        report["setup_seconds"] = round(time.perf_counter() - t_setup, 1)

        # ---- the cluster run
        cluster_root = tmp / "cluster-root"
        cmd = [exe("prefect"), "deployment", "run", "build-dga/demo", "--param", f"root={cluster_root}",
               "--param", f"ray_address={address}", "--watch", "--watch-timeout", str(int(args.timeout))]
        for k, v in PARAMS.items():
            cmd += ["--param", f"{k}={json.dumps(v)}"]
        cpu_before = dict(meter.cpu)
        t0 = time.perf_counter()
        out = run(cmd, env=env, cwd=tmp, timeout=args.timeout + 60, check=False)
        wall = time.perf_counter() - t0
        run_id = next((line.split("UUID:")[1].strip() for line in out.stdout.splitlines() if "UUID:" in line), None)
        state = http_json(f"{api}/flow_runs/{run_id}")["state"] if run_id else None
        # both workers poll the pool; the one whose submission the server accepted runs it, the other is aborted
        tried = {s.name: s.log(10**7) for s in services if s.name.startswith("prefect-worker")}
        tried = {k: v for k, v in tried.items() if run_id and f"submitting flow run '{run_id}'" in v}
        aborted = [k for k, v in tried.items() if f"Aborted submission of flow run '{run_id}'" in v]
        cluster_after = ray_query(address, ray_env)
        cpu_run: dict[str, float] = {}
        for pid, (name, seconds) in meter.cpu.items():
            cpu_run[name] = cpu_run.get(name, 0.0) + seconds - cpu_before.get(pid, (name, 0.0))[1]
        records = generation_records(cluster_root)
        batches = [{"key": r["unit"], "node_id": r.get("worker", {}).get("node_id"),
                    "pid": r.get("worker", {}).get("pid"), "grasps": r["stats"].get("grasps"),
                    "seconds": round(r["stats"].get("seconds", 0.0), 1)}
                   for r in records]
        actors = [a for a in cluster_after["actors"] if "GeneratorWorker" in a["class"]]
        per_node = {n["node_id"]: {"head": n["head"],
                                   "actors": sum(a["node_id"] == n["node_id"] for a in actors),
                                   "batches": sum(b["node_id"] == n["node_id"] for b in batches)} for n in nodes}
        report["cluster_run"] = {
            "flow_run": run_id, "state": state and state["type"], "exit": out.returncode,
            "ran_on": sorted(set(tried) - set(aborted)),
            "submission_aborted_on": aborted,
            "wall_seconds": round(wall, 1),
            "cpu_seconds_by_service": {k: round(v, 1) for k, v in sorted(cpu_run.items())},
            "cpu_seconds": round(sum(cpu_run.values()), 1),
            "batches": batches, "per_node": per_node,
            "nodes_with_batches": sum(1 for v in per_node.values() if v["batches"]),
            # whether the meter saw the actors' processes (their CPU is in the Ray nodes' figures then)
            "actor_pids_metered": sorted({str(b["pid"]) for b in batches} & {str(p) for p in meter.cpu}),
        }
        if out.returncode != 0:
            report["cluster_run"]["output"] = out.stdout[-4000:]
    finally:
        for svc in reversed(services):  # workers, then Ray (SIGTERM to the group, SIGKILL after 20 s), server
            svc.stop()
        for d in ray_tmps:
            shutil.rmtree(d, ignore_errors=True)
        report["services"] = meter.stop()

    # ---- the single-process reference, the same parameters (nothing else running)
    single_root = tmp / "single-root"
    ref_env = base_env(HOME=str(tmp))
    cmd = [exe("dga-engine"), "--root", str(single_root), "build", "--profile", "demo",
           "--n-objects", str(PARAMS["n_objects"]), "--rounds", str(PARAMS["rounds"]),
           "--per-object", str(PARAMS["generate_per_object"]), "--workers", str(PARAMS["workers"]),
           "--n-expand", str(PARAMS["n_expand"]), "--seed", str(PARAMS["seed"]), "--json"]
    assert PARAMS["seed_per_object"] == PARAMS["generate_per_object"]  # the CLI has one --per-object for both
    out, figures = timed(cmd, ref_env, tmp, args.timeout)
    report["single_run"] = {"exit": out.returncode, **figures}
    if out.returncode != 0:
        report["single_run"]["output"] = out.stdout[-4000:]

    # ---- compare
    if report.get("cluster_run", {}).get("state") == "COMPLETED" and out.returncode == 0:
        report["verify"] = {"cluster": verify(cluster_root, ref_env), "single": verify(single_root, ref_env)}
        report["stage_cpu_seconds"] = {"cluster": stage_cpu(cluster_root, ref_env),
                                       "single": stage_cpu(single_root, ref_env)}
        report["compare"] = compare(cluster_root, single_root)
        report["equal"] = report["compare"]["accepted"]["equal"]
    report["ok"] = bool(report.get("equal")) and all(v.get("ok") for v in report.get("verify", {}).values()) \
        and report["cluster_run"]["nodes_with_batches"] == 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if not args.keep and report["ok"]:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
