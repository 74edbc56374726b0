"""External names and storage roots: nothing outside the root is written, odd roots are one-line errors."""

from __future__ import annotations

import os

import pytest
import trimesh
from typer.testing import CliRunner

from dga_engine.cli.main import app
from dga_engine.layout import Layout, UnsafeNameError, safe_name


@pytest.mark.parametrize(
    "name", ["abc\n", "abc\r", "a\nb", "abc\x00", "\nabc", "abc\n\n", "../x", "a/b", ".hidden", "", "x" * 201]
)
def test_safe_name_refuses_line_breaks_and_separators(name):
    with pytest.raises(UnsafeNameError):
        safe_name(name)


def test_safe_name_keeps_plain_names():
    assert safe_name("core-mug_8570d9.v2+a") == "core-mug_8570d9.v2+a"
    assert safe_name("x" * 200) == "x" * 200


@pytest.fixture
def mesh_file(tmp_path):
    path = tmp_path / "in" / "box.obj"
    path.parent.mkdir()
    trimesh.creation.box(extents=[0.05, 0.06, 0.07]).export(path)
    return path


def test_empty_root_writes_nothing_into_the_current_directory(tmp_path, mesh_file, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for argv in (["--root", ""], ["--root", "   "]):
        result = CliRunner().invoke(app, [*argv, "ingest", "local", str(mesh_file)])
        assert result.exit_code == 1, result.output
        assert "storage root is empty" in result.stderr and "Traceback" not in result.output
    monkeypatch.setenv("DGA_ROOT", "")
    result = CliRunner().invoke(app, ["ingest", "local", str(mesh_file)])
    assert result.exit_code == 1 and "storage root is empty" in result.stderr
    assert os.listdir(cwd) == []
    from dga_engine.layout import RootError

    with pytest.raises(RootError):
        Layout.at("")


@pytest.mark.parametrize("root, says", [
    ("memory://x", "discarded"),
    ("nosuchproto://bucket/x", "unknown protocol"),
    ("s3://", "names no bucket"),
    ("with\x00nul", "NUL"),
    ("x" * 300, "File name too long"),
])
def test_odd_roots_are_one_line_errors(tmp_path, mesh_file, monkeypatch, root, says):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["--root", root, "ingest", "local", str(mesh_file)])
    assert result.exit_code == 1, result.output
    assert says in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_file_as_root_is_refused(tmp_path, mesh_file):
    f = tmp_path / "afile"
    f.write_text("keep me")
    result = CliRunner().invoke(app, ["--root", str(f), "objects", "ls"])
    assert result.exit_code == 1 and "is a file, not a folder" in result.stderr
    assert f.read_text() == "keep me"


def test_memory_root_still_works_for_library_use():
    # one process, nothing to lose: tests and notebooks may use it; only the CLI refuses it
    lay = Layout.at("memory://dga-roots-test")
    assert lay.root == "memory://dga-roots-test" and not lay.is_local


@pytest.mark.parametrize("root, says", [("/proc/1/dga-root", "cannot use the storage root"),
                                        ("http://127.0.0.1:9/dga-root", "cannot use the storage root")])
def test_roots_that_cannot_be_created_or_reached_are_one_line_errors(mesh_file, root, says):
    result = CliRunner().invoke(app, ["--root", root, "ingest", "local", str(mesh_file)])
    assert result.exit_code == 1, result.output
    assert says in result.stderr and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
