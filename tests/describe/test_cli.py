"""``dga-engine describe`` end to end: JSON counts, exit codes, disabled mode, no key in any output."""

from __future__ import annotations

import json
import logging

from typer.testing import CliRunner

from dga_engine.cli.main import app


def _run(*args: str):
    result = CliRunner().invoke(app, list(args))
    return result, (json.loads(result.stdout) if "--json" in args and result.stdout.strip() else None)


def test_cli_disabled_is_a_clean_no_op(layout, make_objects):
    make_objects("mug", "banana")
    result, out = _run("--root", layout.root, "describe", "--json")
    assert result.exit_code == 0, result.output
    assert out["disabled"] is True and out["requested"] == 2 and out["cached"] == 0 and out["failed"] == 0
    human, _ = _run("--root", layout.root, "describe")
    assert human.exit_code == 0 and "descriptions disabled" in human.stdout


def test_cli_describes_then_serves_from_cache(layout, llm_server, make_objects, tiny_bert, monkeypatch, caplog):
    secret = "sk-cli-SECRET-987654321"
    monkeypatch.setenv("DGA_LLM_API_KEY", secret)
    ids = make_objects("mug", "banana", "bowl")
    caplog.set_level(logging.DEBUG)
    args = ["--root", layout.root, "-v", "describe", "--base-url", llm_server.url, "--model", "m1",
            "--concurrency", "2", "--encoder", tiny_bert, "--timeout", "5"]
    result, out = _run(*args, "--objects", ",".join(ids[:2]), "--json")
    assert result.exit_code == 0, result.output
    assert (out["requested"], out["cached"], out["described"], out["failed"]) == (2, 0, 2, 0)
    assert out["features"] == 2 and out["feature_dim"] == 32 and out["model"] == "m1"
    assert llm_server.count() == 2

    result, out = _run(*args, "--json")  # all objects: two cached, one new
    assert (out["requested"], out["cached"], out["described"], out["failed"], out["calls"]) == (3, 2, 1, 0, 1)
    assert llm_server.count() == 3

    human, _ = _run(*args)
    assert human.exit_code == 0 and "3 cached" in human.stdout and llm_server.count() == 3
    for text in (result.stdout, result.stderr, human.stdout, human.stderr, caplog.text):
        assert secret not in text


def test_cli_exit_code_reports_failures(layout, llm_server, make_objects):
    ids = make_objects("mug")
    llm_server.script = {"mug": ["401"]}
    result, out = _run("--root", layout.root, "describe", "--base-url", llm_server.url, "--json", "--no-features")
    assert result.exit_code == 1
    assert out["failed"] == 1 and "HTTP 401" in out["failures"][ids[0]]
    human, _ = _run("--root", layout.root, "describe", "--base-url", llm_server.url, "--objects", "obj-nope")
    assert human.exit_code == 1 and "obj-nope" in human.stdout
