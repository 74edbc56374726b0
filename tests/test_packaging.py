"""Packaging (issue #19): the core install runs the build, each optional part is an extra that its error message
names, the fast-moving majors are bounded, and CI runs the README's commands."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = {name: [Requirement(r) for r in reqs] for name, reqs in PROJECT["optional-dependencies"].items()}
CORE = {Requirement(r).name: Requirement(r) for r in PROJECT["dependencies"]}


def _names(extra: str) -> set[str]:
    return {r.name.lower() for r in EXTRAS[extra]}


def test_every_extra_an_error_names_exists_and_installs_that_package():
    from dga_engine.extras import MODULE_EXTRAS
    from dga_engine.layout import _EXTRAS as PROTOCOL_EXTRAS

    for module, (dist, extra) in MODULE_EXTRAS.items():
        assert extra in EXTRAS, f"{module}: the hint names [{extra}], which pyproject.toml does not define"
        assert dist.lower() in _names(extra), f"{module}: [{extra}] does not install {dist}"
        assert dist.lower() not in {n.lower() for n in CORE}, f"{dist} is core: no hint should send users to [{extra}]"
    assert set(PROTOCOL_EXTRAS.values()) == {"s3"} and "s3fs" in _names("s3")


def test_the_test_extra_pulls_every_extra_but_gpu_and_bench():
    (self_ref,) = [r for r in EXTRAS["test"] if r.name == PROJECT["name"]]
    assert set(self_ref.extras) == set(EXTRAS) - {"test", "gpu", "bench"}


def test_fast_moving_majors_are_bounded_above_and_hold_the_installed_version():
    for name in ("prefect", "ray", "mujoco", "numpy"):
        req = CORE[name]
        assert any(s.operator == "<" for s in req.specifier), f"{name} has no upper bound: {req}"
        assert req.specifier.contains(version(name)), (name, version(name), str(req))
    (transformers,) = [r for r in EXTRAS["llm"] if r.name == "transformers"]
    assert any(s.operator == "<" for s in transformers.specifier)
    assert transformers.specifier.contains(version("transformers"))
    # not ray[default] (nothing uses its dashboard or job API); `ray start --head` needs the Ray Client's grpcio
    assert CORE["ray"].extras == {"client"}, CORE["ray"]


def test_the_core_imports_without_any_extra():
    """Every module of dga_engine and flows imports with the extras' packages made unimportable: each optional
    part imports its package when it runs, so the core install (``pip install -e .``) is complete for the build."""
    blocked = sorted({m for m in __import__("dga_engine.extras", fromlist=["x"]).MODULE_EXTRAS} | {"datasets", "moto"})
    code = (
        "import importlib, pkgutil, sys\n"
        f"for m in {blocked!r}: sys.modules[m] = None\n"
        "import dga_engine, flows\n"
        "bad = []\n"
        "for pkg in (dga_engine, flows):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        try: importlib.import_module(info.name)\n"
        "        except ImportError as exc: bad.append(f'{info.name}: {exc}')\n"
        "print('\\n'.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "", out.stdout


def test_ci_runs_the_readmes_install_and_test_commands():
    readme = (REPO / "README.md").read_text()
    quick = readme[readme.index("## Quick start"):]
    quick = quick[:quick.index("```", quick.index("```bash") + 3)]
    commands = [line for line in quick.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2, "the Quick start stays two commands"
    ci = (REPO / ".ci" / "run").read_text()
    install, test = commands[1].split(" && ")[-2:]
    assert install in ci and re.search(rf"^{re.escape(test)}$", ci, re.M), (install, test)
    assert 'pip install torch==2.13.0 -e ".[test]"' == install and test == "python -m pytest"


def test_the_lock_file_pins_every_requirement_within_its_range():
    """requirements.lock (pip-tools) must be regenerated when pyproject.toml's ranges move past its pins."""
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO / "requirements.lock").read_text(), re.M))
    pins = {re.sub(r"[-_.]+", "-", k).lower(): v for k, v in pins.items()}
    needed = list(CORE.values()) + [r for name in set(EXTRAS) - {"gpu", "bench"} for r in EXTRAS[name]]
    for req in needed:
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in ("torch", PROJECT["name"]) or (req.marker and not req.marker.evaluate()):
            continue  # torch is installed first, by hand; the project itself is installed with -e
        assert name in pins, f"{req.name} is not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), (str(req), pins[name])
