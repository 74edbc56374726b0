"""The describe stage against a real local chat-completions server, through the real openai client."""

from __future__ import annotations

import json
import logging
import os

from dga_engine.describe import (
    DISABLED_MESSAGE,
    DescribeConfig,
    LLMConfig,
    build_prompt,
    cache,
    describe_objects,
    description,
)
from tests.describe.helpers import answer_for  # noqa: E402


def _config(llm, **kw) -> DescribeConfig:
    return DescribeConfig(llm=llm, features=kw.pop("features", False), **kw)


def _cache_files(layout) -> list[str]:
    root = layout.join("cache")
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files)


def test_prompt_is_the_papers():
    assert build_prompt("mug") == (
        "I want to grasp a mug. First, provide its object category, then give a detailed description "
        "of its shape before making a successful grip."
    )


def test_describes_caches_and_rerun_asks_nothing(layout, llm_server, fast_llm, make_objects):
    ids = make_objects("mug", "banana", "mug")  # two objects share a label: one question
    report = describe_objects(layout, ids, _config(fast_llm(llm_server.url)))

    assert (report.requested, report.described, report.cached, report.failed) == (3, 3, 0, 0)
    assert report.calls == 2 and llm_server.count() == 2
    assert sorted(r["label"] for r in llm_server.requests) == ["banana", "mug"]
    assert all(r["model"] == "test-model" for r in llm_server.requests)
    assert llm_server.requests[0]["prompt"] == build_prompt(llm_server.requests[0]["label"])

    entry = description(layout, ids[0])
    assert entry["text"] == answer_for("mug").strip() and entry["model"] == "test-model"
    assert entry["response_model"] == "test-model-served" and entry["attempts"] == 1
    assert description(layout, ids[1])["label"] == "banana"
    assert description(layout, ids[2])["key"] == entry["key"]

    again = describe_objects(layout, ids, _config(fast_llm(llm_server.url)))
    assert (again.requested, again.cached, again.described, again.failed, again.calls) == (3, 3, 0, 0, 0)
    assert llm_server.count() == 2  # the server saw nothing new

    # Another model is another question (the model is part of the key).
    other = describe_objects(layout, ids[:1], _config(fast_llm(llm_server.url, model="other-model")))
    assert other.described == 1 and llm_server.count() == 3
    assert description(layout, ids[0], model="test-model", endpoint=llm_server.url)["model"] == "test-model"
    assert description(layout, ids[0], model="test-model") is None  # no endpoint named: only the last answer counts
    assert description(layout, ids[0])["model"] == "other-model"  # last described with


def test_transient_errors_are_retried_and_budget_exhaustion_fails_only_that_object(
    layout, llm_server, fast_llm, make_objects
):
    ids = make_objects("mug", "bowl", "drill", "apple")
    llm_server.script = {
        "mug": ["429", "500", "sleep", "badjson"],  # recovers on the 5th request... but max_attempts=5 below
        "bowl": ["nochoices", "empty"],
        "drill": ["500"] * 10,  # never recovers
    }
    llm = fast_llm(llm_server.url, max_attempts=5)
    report = describe_objects(layout, ids, _config(llm, concurrency=4))

    assert report.described == 3 and report.failed == 1
    assert set(report.failures) == {ids[2]}
    assert "gave up after 5 attempts" in report.failures[ids[2]] and "HTTP 500" in report.failures[ids[2]]
    assert llm_server.count("mug") == 5 and llm_server.count("bowl") == 3 and llm_server.count("apple") == 1
    assert llm_server.count("drill") == 5
    assert report.calls == llm_server.count()
    assert description(layout, ids[0])["attempts"] == 5
    # A failed call never writes an entry.
    key = cache.description_key("drill", 1, "test-model", llm_server.url)
    assert not os.path.exists(cache.description_path(layout, key))
    assert description(layout, ids[2]) is None

    # Rerun once the server is healthy: only the failed object is asked.
    llm_server.script = {}
    before = llm_server.count()
    again = describe_objects(layout, ids, _config(llm))
    assert (again.cached, again.described, again.failed) == (3, 1, 0)
    assert llm_server.count() == before + 1 and llm_server.requests[-1]["label"] == "drill"


def test_retry_budget_bounds_wall_clock(layout, llm_server, fast_llm, make_objects):
    ids = make_objects("mug")
    llm_server.script = {"mug": ["500"] * 50}
    llm = fast_llm(llm_server.url, max_attempts=50, backoff_base_s=0.05, backoff_max_s=0.05, retry_budget_s=0.3)
    report = describe_objects(layout, ids, _config(llm))
    assert report.failed == 1 and "retry budget" in report.failures[ids[0]]
    assert 3 <= llm_server.count() <= 12  # ~0.3 s / (0.025..0.05 s waits), far fewer than 50
    assert report.elapsed_s < 2.0


def test_concurrency_bound_is_respected(layout, llm_server, fast_llm, make_objects):
    ids = make_objects(*[f"thing{i}" for i in range(9)])
    llm_server.delay = 0.15
    report = describe_objects(layout, ids, _config(fast_llm(llm_server.url, timeout_s=5), concurrency=3))
    assert report.described == 9 and llm_server.count() == 9
    assert llm_server.max_in_flight == 3  # parallel, never more than the bound


def test_fatal_error_stops_asking(layout, llm_server, fast_llm, make_objects):
    ids = make_objects(*[f"thing{i}" for i in range(8)])
    llm_server.script = {f"thing{i}": ["401"] for i in range(8)}
    report = describe_objects(layout, ids, _config(fast_llm(llm_server.url), concurrency=2))
    assert report.failed == 8 and report.described == 0
    assert llm_server.count() <= 2  # the requests already in flight, then nothing more
    assert any("HTTP 401" in r and "API key" in r for r in report.failures.values())
    assert _cache_files(layout) == []


def test_bad_objects_fail_alone(layout, llm_server, fast_llm, make_objects, object_store):
    (good,) = make_objects("mug")
    (blank,) = make_objects("  ")
    report = describe_objects(layout, [good, "obj-missing", blank, "../escape"], _config(fast_llm(llm_server.url)))
    assert report.described == 1 and report.failed == 3
    assert "ingest it first" in report.failures["obj-missing"]
    assert "no label" in report.failures[blank]
    assert "unsafe name" in report.failures["../escape"]
    assert llm_server.count() == 1


def test_invalid_cache_entry_is_asked_again(layout, llm_server, fast_llm, make_objects):
    ids = make_objects("mug")
    describe_objects(layout, ids, _config(fast_llm(llm_server.url)))
    path = cache.description_path(layout, cache.description_key("mug", 1, "test-model", llm_server.url))
    with open(path, "w") as fh:
        fh.write('{"key": "x", "te')  # torn by hand (atomic writes never leave this)
    report = describe_objects(layout, ids, _config(fast_llm(llm_server.url)))
    assert report.described == 1 and report.cached == 0 and llm_server.count() == 2
    assert json.load(open(path))["text"] == answer_for("mug").strip()


def test_api_key_is_sent_but_never_logged_or_stored(layout, llm_server, fast_llm, make_objects, monkeypatch, caplog):
    secret = "sk-test-Zq8SECRETvalue1234567890"
    monkeypatch.setenv("DGA_LLM_API_KEY", secret)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback-not-used")
    ids = make_objects("mug", "drill", "bowl")
    llm_server.script = {"drill": ["500"] * 10, "bowl": ["429", "sleep"]}
    caplog.set_level(logging.DEBUG)  # every logger, the openai and httpx clients included
    report = describe_objects(layout, ids, _config(fast_llm(llm_server.url, max_attempts=3)))

    assert report.described == 2 and report.failed == 1
    assert {r["auth"] for r in llm_server.requests} == {f"Bearer {secret}"}  # it really was used
    assert caplog.records and secret not in caplog.text
    assert secret not in json.dumps(report.to_dict())
    files = _cache_files(layout)
    assert files and all(secret.encode() not in open(f, "rb").read() for f in files)
    assert all(b"sk-fallback" not in open(f, "rb").read() for f in files)


def test_openai_api_key_is_the_fallback(layout, llm_server, fast_llm, make_objects, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback-123")
    describe_objects(layout, make_objects("mug"), _config(fast_llm(llm_server.url)))
    assert llm_server.requests[0]["auth"] == "Bearer sk-fallback-123"


def test_base_url_from_environment(layout, llm_server, make_objects, monkeypatch):
    monkeypatch.setenv("DGA_LLM_BASE_URL", llm_server.url)
    monkeypatch.setenv("DGA_LLM_MODEL", "env-model")
    report = describe_objects(layout, make_objects("mug"), DescribeConfig(llm=LLMConfig(timeout_s=2), features=False))
    assert report.described == 1 and llm_server.requests[0]["model"] == "env-model"


def test_disabled_without_endpoint(layout, make_objects, caplog):
    ids = make_objects("mug")
    caplog.set_level(logging.INFO)
    report = describe_objects(layout, ids, DescribeConfig())
    assert report.disabled and report.message == DISABLED_MESSAGE
    assert (report.requested, report.cached, report.described, report.failed, report.calls) == (1, 0, 0, 0, 0)
    assert "descriptions disabled" in caplog.text
    assert not os.path.exists(layout.join("cache"))
    assert description(layout, ids[0]) is None


def test_endpoint_url_is_stored_without_credentials(layout, llm_server, fast_llm, make_objects):
    port = llm_server.url.split(":")[2].split("/")[0]
    url = f"http://user:hunter2@127.0.0.1:{port}/v1"
    report = describe_objects(layout, make_objects("mug"), _config(fast_llm(url)))
    assert report.described == 1 and report.endpoint == f"http://127.0.0.1:{port}/v1"
    assert all(b"hunter2" not in open(f, "rb").read() for f in _cache_files(layout))
    assert "hunter2" not in json.dumps(report.to_dict())


def test_concurrent_runs_share_the_cache_without_corruption(layout, llm_server, fast_llm, make_objects):
    import threading

    ids = make_objects(*[f"thing{i}" for i in range(6)])
    llm_server.delay = 0.05
    reports = []
    runs = [
        threading.Thread(
            target=lambda: reports.append(
                describe_objects(layout, ids, _config(fast_llm(llm_server.url, timeout_s=5), concurrency=3))
            )
        )
        for _ in range(2)
    ]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert all(r.failed == 0 for r in reports)
    assert all(description(layout, oid)["text"] == answer_for(f"thing{i}").strip() for i, oid in enumerate(ids))
    assert not [f for f in _cache_files(layout) if ".tmp" in f]
    before = llm_server.count()
    assert describe_objects(layout, ids, _config(fast_llm(llm_server.url))).cached == 6 and llm_server.count() == before
