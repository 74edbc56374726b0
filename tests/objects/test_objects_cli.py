"""``dga-engine ingest ...`` and ``dga-engine objects ...``: JSON outputs and exit codes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from dga_engine.cli.main import app

from .objects_helpers import write_objaverse_mirror


def run(root, *args, code=0):
    result = CliRunner().invoke(app, ["--root", str(root), *map(str, args)])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result


def test_ingest_builtin_and_objects_ls_show_json(tmp_path):
    root = tmp_path / "root"
    out = json.loads(
        run(root, "ingest", "builtin", "--names", "can,box_tall", "--names", "sphere_6cm", "--json").stdout
    )
    assert (out["ingested"], out["skipped"], out["quarantined"], out["quarantine"]) == (3, 0, 0, [])
    assert len(out["ingested_ids"]) == 3 and out["timings"]["wall"] > 0
    again = json.loads(run(root, "ingest", "builtin", "--names", "can", "--json").stdout)
    assert (again["ingested"], again["skipped"]) == (0, 1)
    listed = json.loads(run(root, "objects", "ls", "--json").stdout)
    assert sorted(m["object_id"] for m in listed) == sorted(out["ingested_ids"])
    oid = out["ingested_ids"][0]
    shown = json.loads(run(root, "objects", "show", oid, "--json").stdout)
    assert shown["object_id"] == oid and shown["source"] == "builtin" and shown["n_parts"] == 1
    assert "not in" in run(root, "objects", "show", "obj-0000000000000000", code=1).stderr
    assert "unsafe" in run(root, "objects", "show", "../etc", code=1).stderr
    assert "choose from" in run(root, "ingest", "builtin", "--names", "nope", code=1).stderr
    names = json.loads(run(root, "ingest", "builtin", "--list", "--json").stdout)
    assert len(names) >= 30 and {"name", "label"} <= set(names[0])
    human = run(root, "objects", "ls")
    assert "soda can" in human.stdout


def test_ingest_local_json_with_quarantine(tmp_path, mesh_dir):
    root = tmp_path / "root"
    (mesh_dir / "broken.obj").write_bytes(b"")
    out = json.loads(run(root, "ingest", "local", mesh_dir, "--licence", "CC0", "--json").stdout)
    assert (out["ingested"], out["quarantined"]) == (5, 1)
    assert out["quarantine"][0]["path"].endswith("broken.obj") and "empty" in out["quarantine"][0]["reason"]
    q = json.loads(run(root, "objects", "ls", "--quarantined", "--json").stdout)
    assert len(q) == 1 and q[0]["reason"] == out["quarantine"][0]["reason"]
    scaled = json.loads(run(root, "ingest", "local", mesh_dir / "box.obj", "--scales", "0.05,0.1", "--json").stdout)
    assert scaled["ingested"] == 2 and all(i.endswith(("-s050", "-s100")) for i in scaled["ingested_ids"])
    assert "bad ingest option" in run(root, "ingest", "local", mesh_dir, "--scales", "0", code=1).stderr
    (tmp_path / "no-meshes").mkdir()
    assert "no mesh files" in run(root, "ingest", "local", tmp_path / "no-meshes", code=1).stderr
    missing = json.loads(run(root, "ingest", "local", tmp_path / "typo.obj", "--json").stdout)
    assert missing["quarantined"] == 1 and "not a file" in missing["quarantine"][0]["reason"]


def test_ingest_objaverse_offline_json(tmp_path, monkeypatch):
    import objaverse

    cache = tmp_path / "mirror"
    write_objaverse_mirror(
        cache,
        {"mug": ["a1", "a2"], "bottle": ["b1", "b2"]},
        {u: {"name": u, "tags": [{"name": u}], "license": "by"} for u in ("a1", "a2", "b1", "b2")},
    )
    monkeypatch.setattr(
        objaverse.urllib.request, "urlretrieve", lambda *a, **k: (_ for _ in ()).throw(OSError("offline"))
    )
    root = tmp_path / "root"
    out = json.loads(run(root, "ingest", "objaverse", "--categories", "mug,bottle", "--per-category", "1",
                         "--cache-dir", cache, "--no-download", "--json").stdout)
    assert (out["ingested"], out["quarantined"]) == (2, 0)
    assert (
        "unknown LVIS"
        in run(
            root, "ingest", "objaverse", "--categories", "mugs", "--cache-dir", cache, "--no-download", code=1
        ).stderr
    )
