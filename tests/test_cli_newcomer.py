"""A newcomer's first commands (issue #19): wrong input ends with one line that says what to do, read commands
refuse a root that does not exist, listings hide empty shards and name objects, Prefect's temporary API server
that cannot start is one line naming its setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dga_engine.cli.main import app


def _cli(*args: str, env: dict[str, str] | None = None, code: str | None = None) -> subprocess.CompletedProcess:
    """``dga-engine ARGS`` in a fresh process (its real console and exit path); ``code`` runs first."""
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **(env or {})}
    env.pop("DGA_ROOT", None)
    script = (f"{code or ''}\nimport sys\nfrom dga_engine.cli.main import main\n"
              f"sys.argv = ['dga-engine', *{list(args)!r}]\nmain()")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_choice_values_are_the_values_their_modules_accept():
    """dga_engine.cli.choices spells the values out (``--help`` stays fast); they must match the modules."""
    from dga_engine import build
    from dga_engine.cli import choices
    from dga_engine.export.formats import FORMATS
    from dga_engine.generate.config import PRESETS as GENERATOR_PRESETS
    from dga_engine.refine.config import PRESETS as REFINE_PRESETS
    from dga_engine.simulate.backends import BACKENDS
    from dga_engine.simulate.config import PRESETS as PROTOCOLS
    from dga_engine.sources.curate import SOURCES
    from dga_engine.synthesize.config import PRESETS as SYNTHESIS_PRESETS
    from dga_engine.viz.select import KINDS

    pairs = [(choices.PROFILES, build.PROFILES), (choices.BACKENDS, BACKENDS), (choices.PROTOCOLS, PROTOCOLS),
             (choices.CURATE_SOURCES, SOURCES), (choices.EXPORT_FORMATS, FORMATS),
             (choices.GENERATOR_PRESETS, GENERATOR_PRESETS), (choices.GRASP_KINDS, KINDS),
             (choices.SYNTHESIS_PRESETS, SYNTHESIS_PRESETS), (choices.REFINE_PRESETS, REFINE_PRESETS)]
    for spelled, accepted in pairs:
        assert set(spelled) == set(accepted), (spelled, accepted)


def test_build_profile_quick_is_one_line_naming_the_profiles(tmp_path):
    run = _cli("--root", str(tmp_path / "root"), "build", "--profile", "quick")
    assert run.returncode == 2
    line = _one_line(run.stderr)
    assert "'--profile': 'quick' is not one of 'demo', 'full'" in line and "dga-engine build --help" in line
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize("args, option", [
    (["export", "--format", "csv", "--out", "x"], "'--format' / '-f': 'csv' is not one of 'dexgraspnet', 'dga'"),
    (["render", "--kind", "all", "--out", "x"], "'--kind': 'all' is not one of 'accepted', 'rejects', 'candidates'"),
    (["train", "--preset", "huge"], "'--preset': 'huge' is not one of 'tiny', 'paper'"),
    (["refine", "--source", "x", "--preset", "fix"], "'--preset': 'fix' is not one of 'repair', 'polish'"),
    (["rounds", "resume", "--bogus"], "No such option: --bogus"),
])
def test_an_unknown_value_or_option_is_one_line(layout, args, option):
    res = CliRunner().invoke(app, ["--root", layout.root, *args])
    assert res.exit_code == 2
    assert option in _one_line(res.output)


def test_an_s3_root_without_s3fs_names_the_extra(tmp_path):
    """s3fs made unimportable (as in an install without the [s3] extra): one line with the pip command."""
    block = "import sys\nsys.modules['s3fs'] = None"
    run = _cli("--root", "s3://bucket/root", "shards", "ls", code=block)
    assert run.returncode == 1
    line = _one_line(run.stderr)
    assert "s3://bucket/root" in line and "pip install 'dga-engine[s3]'" in line


def test_a_missing_optional_module_names_its_extra():
    from dga_engine.extras import missing_extra_message

    assert missing_extra_message(ImportError("No module named 'openai'", name="openai")) == (
        "this needs openai, which is not installed: pip install 'dga-engine[llm]'")
    assert missing_extra_message(ImportError("x", name="mujoco_warp._src")).endswith("'dga-engine[gpu]'")
    assert missing_extra_message(ImportError("x", name="numpy")) is None  # a core module: a real bug, not an extra


@pytest.mark.parametrize("command", [["shards", "ls"], ["objects", "ls"], ["rounds", "status"], ["rounds", "resume"]])
def test_read_commands_refuse_a_root_that_does_not_exist(tmp_path, command):
    missing = tmp_path / "mistyped"
    res = CliRunner().invoke(app, ["--root", str(missing), *command])
    assert res.exit_code == 1
    line = _one_line(res.output)
    assert f"the storage root {missing} does not exist" in line and "--root" in line
    assert not missing.exists()  # reading created nothing


def test_shards_ls_hides_empty_shards_unless_asked_and_names_objects(layout, box_object):
    from dga_engine.dataset.store import Dataset
    from tests.helpers import make_grasps

    ds = Dataset(layout)
    ds.write_shard(make_grasps({box_object.object_id: 3}), "unit-full")
    ds.write_shard(make_grasps({box_object.object_id: 1}).slice(0, 0), "unit-empty")  # a unit that accepted nothing

    res = CliRunner().invoke(app, ["--root", layout.root, "shards", "ls"])
    assert res.exit_code == 0, res.output
    assert "unit-full" in res.output and "unit-empty" not in res.output
    assert f"{box_object.object_id}: box 5x5x10 cm" in res.output
    assert "2 shards, 3 rows" in res.output and "1 empty shards not listed (--empty)" in res.output

    res = CliRunner().invoke(app, ["--root", layout.root, "shards", "ls", "--empty"])
    assert res.exit_code == 0 and "unit-empty" in res.output and "not listed" not in res.output
    listed = json.loads(CliRunner().invoke(app, ["--root", layout.root, "shards", "ls", "--json"]).stdout)
    assert len(listed["shards"]) == 2  # JSON lists everything


def test_prefect_api_that_cannot_start_is_one_line_naming_the_setting(tmp_path):
    """The acceptance test of #19: the build on a tiny configuration with Prefect's temporary server made to fail
    (a 0 s startup timeout, set by the user, so it is used as is) ends with one line naming the setting, exit 1,
    and nothing written under the root."""
    root = tmp_path / "root"
    run = _cli("--root", str(root), "build", "--profile", "demo", "--n-objects", "1", "--rounds", "0",
               "--per-object", "2", "--workers", "1",
               env={"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0", "PREFECT_API_URL": ""})
    assert run.returncode == 1, run.stderr[-2000:]
    line = _one_line(run.stderr)
    assert line.startswith("error: Prefect's temporary API server did not start within 0 s (2 tries)")
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in line and "nothing was written" in line
    assert run.stdout == "" and not root.exists()


def test_prefect_database_from_a_newer_prefect_is_named_at_once(tmp_path):
    """A Prefect home whose database a newer Prefect migrated (seen on a CI machine: "Can't locate revision") is
    named in one line with the fixes, before any server start or write: waiting longer could not help."""
    import sqlite3

    home, root = tmp_path / "prefect-home", tmp_path / "root"
    home.mkdir()
    with sqlite3.connect(home / "prefect.db") as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        db.execute("INSERT INTO alembic_version VALUES ('feedfacecafe')")
    run = _cli("--root", str(root), "build", "--profile", "demo", "--n-objects", "1", "--rounds", "0",
               "--per-object", "2", "--workers", "1", env={"PREFECT_HOME": str(home), "PREFECT_API_URL": ""})
    assert run.returncode == 1, run.stderr[-2000:]
    line = _one_line(run.stderr)
    assert f"Prefect's database {home / 'prefect.db'} was migrated by a newer Prefect (revision feedfacecafe" in line
    assert "PREFECT_HOME" in line and "PREFECT_API_URL" in line and "nothing was written" in line
    assert run.stdout == "" and not root.exists()


@pytest.mark.parametrize("value, expected", [(None, 120.0), ("7", 7.0), ("300", 300.0)])
def test_startup_timeout_is_ours_unless_the_user_set_one(value, expected):
    env = {**os.environ}
    env.pop("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", None)
    if value is not None:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = value
    code = "from flows.local_api import startup_timeout; print(startup_timeout())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                         cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) == expected

