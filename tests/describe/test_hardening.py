"""A misbehaving endpoint: trickled bytes, cut-off, garbled and huge answers, echoed secrets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

from dga_engine.describe import DescribeConfig, cache, describe_objects, description
from tests.describe.helpers import FakeLLM, answer_for  # noqa: E402


def _config(llm, **kw) -> DescribeConfig:
    return DescribeConfig(llm=llm, features=False, **kw)


def _timed(fn, limit_s: float):
    """Run ``fn`` in a thread; (result, seconds). A run past ``limit_s`` fails the test without hanging it."""
    box = {}
    t0 = time.monotonic()
    thread = threading.Thread(target=lambda: box.setdefault("r", fn()), daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"still running after {limit_s:g} s"
    return box["r"], time.monotonic() - t0


def _all_bytes(layout) -> bytes:
    out = b""
    for d, _, files in os.walk(layout.root):
        for f in files:
            out += open(os.path.join(d, f), "rb").read()
    return out


def test_a_trickling_server_is_cut_off_at_the_total_timeout(layout, llm_server, fast_llm, make_objects):
    ids = make_objects("mug", "bowl")
    llm_server.trickle_s = 0.1  # the whole answer would take ~40 s
    llm_server.script = {"mug": ["trickle"], "bowl": ["trickle_headers"]}
    llm = fast_llm(llm_server.url, timeout_s=1.0, max_attempts=1)
    report, seconds = _timed(lambda: describe_objects(layout, ids, _config(llm, concurrency=2)), 15)
    assert seconds < 4.0, seconds
    assert report.failed == 2 and all("within 1 s" in why for why in report.failures.values()), report.failures
    assert not os.path.exists(layout.join("cache", "descriptions")) or not [
        f for f in os.listdir(layout.join("cache", "descriptions")) if f.endswith(".json")]


def test_the_whole_run_has_a_time_limit(layout, llm_server, fast_llm, make_objects):
    ids = make_objects("a mug", "a bowl", "a cup", "a pan", "a jar", "a box")
    llm_server.delay = 0.5  # every answer takes half a second
    llm = fast_llm(llm_server.url, timeout_s=5.0, run_timeout_s=1.2)
    report, seconds = _timed(lambda: describe_objects(layout, ids, _config(llm, concurrency=1)), 15)
    assert seconds < 2.5, seconds
    assert 1 <= report.described <= 3 and report.failed == len(ids) - report.described
    assert any("time limit" in why for why in report.failures.values()), report.failures


def test_cut_off_garbled_and_huge_answers_are_not_cached(layout, llm_server, fast_llm, make_objects):
    ids = make_objects("mug", "bowl", "drill", "pan")
    llm_server.huge_bytes = 64 << 20
    llm_server.script = {"mug": ["length"], "bowl": ["garbage"] * 10, "drill": ["huge"], "pan": ["huge_chunked"]}
    llm = fast_llm(llm_server.url, max_attempts=2, timeout_s=5.0)
    report, seconds = _timed(lambda: describe_objects(layout, ids, _config(llm)), 30)
    assert report.failed == 4 and report.described == 0, report.failures
    assert "finish_reason=length" in report.failures[ids[0]] and llm_server.count("mug") == 1  # not retried
    assert "not text" in report.failures[ids[1]] and llm_server.count("bowl") == 2  # retried, then given up
    assert "larger than" in report.failures[ids[2]] and llm_server.count("drill") == 1
    assert "larger than" in report.failures[ids[3]] and llm_server.count("pan") == 1
    assert not [f for f in _cache_files(layout) if "/descriptions/" in f]
    # once the server answers properly, every one is asked again and cached
    llm_server.script = {}
    again = describe_objects(layout, ids, _config(llm))
    assert again.described == 4 and description(layout, ids[0])["text"] == answer_for("mug")


def _cache_files(layout) -> list[str]:
    root = layout.join("cache")
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)


def test_cached_entries_are_validated_on_read(layout, llm_server, fast_llm, make_objects):
    ids = make_objects("mug")
    llm = fast_llm(llm_server.url)
    describe_objects(layout, ids, _config(llm))
    path = cache.description_path(layout, cache.description_key("mug", 1, "test-model", llm_server.url))
    entry = json.load(open(path))
    for bad in ({"finish_reason": "length"}, {"text": "\x00\x01" * 50}, {"text": "word " * 10_000}):
        with open(path, "w") as fh:
            json.dump({**entry, **bad}, fh)
        before = llm_server.count()
        assert describe_objects(layout, ids, _config(llm)).described == 1 and llm_server.count() == before + 1
    with open(path, "wb") as fh:  # an oversized entry is not even read
        fh.write(b'{"pad": "' + b"x" * (2 << 20) + b'"}')
    assert describe_objects(layout, ids, _config(llm)).described == 1


def test_the_endpoint_is_part_of_the_key_and_refresh_asks_again(layout, llm_server, fast_llm, make_objects):
    ids = make_objects("mug")
    describe_objects(layout, ids, _config(fast_llm(llm_server.url)))
    other = FakeLLM()  # another server with a model of the same name
    try:
        report = describe_objects(layout, ids, _config(fast_llm(other.url)))
        assert report.described == 1 and report.cached == 0 and other.count() == 1
    finally:
        other.close()
    assert describe_objects(layout, ids, _config(fast_llm(llm_server.url))).cached == 1
    before = llm_server.count()
    refreshed = describe_objects(layout, ids, _config(fast_llm(llm_server.url), refresh=True))
    assert refreshed.described == 1 and refreshed.cached == 0 and llm_server.count() == before + 1


def test_an_echoed_key_is_never_stored(layout, llm_server, fast_llm, make_objects, monkeypatch, caplog):
    secret = "sk-echo-Zq8SECRETvalue1234567890"
    monkeypatch.setenv("DGA_LLM_API_KEY", secret)
    ids = make_objects("mug")
    llm_server.script = {"mug": ["echo"]}
    caplog.set_level(logging.DEBUG)
    report = describe_objects(layout, ids, _config(fast_llm(llm_server.url)))
    assert report.described == 1
    entry = description(layout, ids[0])
    assert "***" in entry["text"] and secret not in entry["text"] and secret not in (entry["response_model"] or "")
    assert secret.encode() not in _all_bytes(layout) and secret not in caplog.text


def test_credentials_in_the_base_url_are_not_printed_with_verbose(layout, llm_server, make_objects, tmp_path):
    make_objects("mug")
    port = llm_server.url.split(":")[2].split("/")[0]
    url = f"http://alice:pw-hunter2-x@127.0.0.1:{port}/v1"
    llm_server.script = {"mug": ["echo"]}
    env = {**os.environ, "DGA_LLM_API_KEY": "sk-cli-secret-0987654321", "PYTHONPATH": os.getcwd()}
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "dga_engine.cli.main",
            "-v",
            "--root",
            layout.root,
            "describe",
            "--base-url",
            url,
            "--no-features",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    shown = res.stdout + res.stderr
    assert "DEBUG" in shown or "INFO" in shown  # it really was verbose
    for secret in ("pw-hunter2-x", "alice:", "sk-cli-secret-0987654321"):
        assert secret not in shown, [ln for ln in shown.splitlines() if secret in ln][:3]
        assert secret.encode() not in _all_bytes(layout)
