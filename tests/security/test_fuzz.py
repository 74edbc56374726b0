"""Random bytes and random records into every source loader, curate and the filter: bounded, no crash, and
nothing written outside the storage root. The run itself is ``fuzz_driver.py``, in a child process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11])
def test_fuzz_sources_and_filter(tmp_path, seed):
    work = tmp_path / "work"
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "TMPDIR": str(work / "tmp"), "HOME": str(home), "PYTHONPATH": str(REPO)}
    res = subprocess.run([sys.executable, "-m", "tests.security.fuzz_driver", str(work), str(seed), "16"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, f"the fuzz run crashed (exit status {res.returncode}): {res.stderr[-3000:]}"
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["failures"] == [], "\n\n".join(out["failures"][:5])
    # every loader saw both kinds of input and got through them; the filter judged every row
    for source in ("dexgraspnet", "unidexgrasp", "multidex", "dga", "realdex"):
        assert sum(v for k, v in out["cases"].items() if k.startswith(f"{source}:")) >= 16, out["cases"]
        assert f"curate-{source}:ok" in out["cases"] or f"curate-{source}:refused" in out["cases"]
    assert sum(v for k, v in out["cases"].items() if k.startswith("filter:") and k != "filter:bad-table-refused") == 48
    assert out["cases"]["filter:bad-table-refused"] == 2
    # bounded: no single load takes long, the whole run stays small
    assert out["slowest_s"] < 5.0 and out["cpu_s"] < 120.0, out
    assert out["grew_mb"] < 400, f"the fuzz run grew by {out['grew_mb']:.0f} MB"
    # nothing outside the root: the working directory, $TMPDIR and $HOME stay empty
    assert sorted(p.name for p in work.iterdir()) == ["cwd", "root", "src", "tmp"]
    assert list((work / "cwd").iterdir()) == [] and list((work / "tmp").iterdir()) == [] and list(home.iterdir()) == []
