"""The describe stage: one LLM description per object label (cached), then one semantic feature per object.

With no endpoint configured (no base URL given and no $DGA_LLM_BASE_URL) the stage is disabled: it
asks nothing, writes nothing and says so, and the pipeline continues without semantic features.

While it runs, every log record (ours, openai's, httpx's) passes a filter that replaces the API key and
the base URL's credentials with ``***``; stored answers and reports are scrubbed the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dga_engine.describe import cache
from dga_engine.describe.config import (
    BASE_URL_ENV,
    DEFAULT_ENCODER,
    ENCODER_ENV,
    PROMPT_VERSION,
    DescribeConfig,
    build_prompt,
    endpoint_id,
    redact_url,
    scrub,
)
from dga_engine.describe.features import EncoderError, encode_text, load_encoder
from dga_engine.describe.llm import PermanentError, ask
from dga_engine.layout import Layout, UnsafeNameError
from dga_engine.objects.store import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

DISABLED_MESSAGE = (
    "descriptions disabled: no LLM endpoint configured (pass --base-url or set "
    f"${BASE_URL_ENV} to any OpenAI-compatible /v1 URL); continuing without semantic features"
)


@dataclass
class DescribeReport:
    """What one describe run did. Counts are objects unless named otherwise."""

    requested: int = 0  # objects asked for
    cached: int = 0  # objects whose description came from the cache (no request made)
    described: int = 0  # objects described by a new answer in this run
    failed: int = 0  # objects left without a description (reasons in ``failures``)
    calls: int = 0  # HTTP requests made to the endpoint, retries included
    disabled: bool = False  # no endpoint configured: nothing was asked or written
    message: str = ""  # one line for people
    model: str | None = None  # chat model (part of the cache key)
    endpoint: str | None = None  # base URL without credentials, query or fragment
    encoder: str | None = None  # text encoder used for features (None: features not requested)
    features: int = 0  # objects that have a cached feature vector for ``encoder`` after this run
    features_computed: int = 0  # feature vectors computed in this run (one per distinct description)
    feature_dim: int | None = None  # length C of each feature vector
    feature_error: str | None = None  # why features could not be computed (descriptions are kept)
    failures: dict[str, str] = field(default_factory=dict)  # object id -> reason
    elapsed_s: float = 0.0  # wall-clock seconds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _ScrubSecrets(logging.Filter):
    """Rewrites each record's message with the secrets replaced by ``***`` (the record is kept)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is left to logging to report
            return True
        clean = scrub(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, None
        return True


@contextlib.contextmanager
def scrubbed_logs(secrets: list[str]) -> Iterator[None]:
    """While the block runs, scrub ``secrets`` from every record any handler of the root logger (or
    Python's last-resort handler, or a handler of the HTTP libraries' loggers) emits."""
    if not secrets:
        yield
        return
    scrubber = _ScrubSecrets(secrets)
    handlers = list(logging.getLogger().handlers) + [h for h in (logging.lastResort,) if h is not None]
    for name in ("openai", "httpx", "httpcore", "dga_engine"):
        handlers += logging.getLogger(name).handlers
    for h in handlers:
        h.addFilter(scrubber)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(scrubber)


def _resolve_encoder(name: str | None) -> str:
    return name or os.environ.get(ENCODER_ENV) or DEFAULT_ENCODER


def describe_objects(
    layout: Layout,
    object_ids: Sequence[str] | None = None,
    config: DescribeConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> DescribeReport:
    """Describe ``object_ids`` (None: every object in the store) and compute their semantic features.

    Each distinct label is asked at most once per (prompt version, model), ever: answers are cached under
    the storage root, and a hit never calls the endpoint. Failures are per object and never abort the
    batch, except a fatal endpoint error (401/403/404), after which nothing more is asked. ``progress`` is
    called with the number of objects settled, as they settle.
    """
    started = time.monotonic()
    config = config or DescribeConfig()
    llm = config.llm.resolved()
    with scrubbed_logs(llm.secrets()):
        return _describe(layout, object_ids, config, llm, started, progress)


def _describe(layout, object_ids, config, llm, started, progress) -> DescribeReport:
    store = ObjectStore(layout)
    ids = list(store.ids() if object_ids is None else dict.fromkeys(object_ids))
    report = DescribeReport(requested=len(ids), model=llm.model, endpoint=redact_url(llm.base_url))
    advance = progress or (lambda n: None)

    if not llm.enabled:
        report.disabled = True
        report.message = DISABLED_MESSAGE
        log.info(DISABLED_MESSAGE)
        report.elapsed_s = time.monotonic() - started
        return report

    # Group objects by label: objects sharing a label share one question and one answer.
    by_label: dict[str, list[str]] = {}
    for oid in ids:
        try:
            label = store.meta(oid).label.strip()
        except (ObjectNotFound, UnsafeNameError) as err:
            report.failures[oid] = str(err).strip("'\"")
            advance(1)
            continue
        if not label:
            report.failures[oid] = (
                "object has no label to describe: set one in its meta.json (or re-ingest with a label)"
            )
            advance(1)
            continue
        by_label.setdefault(label, []).append(oid)

    entries: dict[str, dict[str, Any]] = {}  # object id -> description entry
    pending: list[str] = []
    endpoint = endpoint_id(llm.base_url)
    for label, oids in by_label.items():
        entry = None if config.refresh else cache.read_description(layout, label, PROMPT_VERSION, llm.model, endpoint,
                                                                   llm.max_answer_chars)
        if entry is None:
            pending.append(label)
            continue
        report.cached += len(oids)
        for oid in oids:
            entries[oid] = entry
        advance(len(oids))

    if pending:
        deadline = None if llm.run_timeout_s is None else started + llm.run_timeout_s
        _ask_all(layout, llm, config, pending, by_label, entries, report, advance, deadline)

    for oid, entry in entries.items():
        try:
            cache.write_pointer(layout, oid, entry)
        except OSError as err:
            log.warning("could not record the description pointer of %s: %s", oid, err)
    report.failed = len(report.failures)

    if config.features and entries:
        _features(layout, config, entries, report)

    report.message = (
        f"{report.requested} objects: {report.cached} cached, {report.described} described, {report.failed} failed "
        f"({report.calls} requests to {report.endpoint}, model {report.model})"
    )
    if report.encoder:
        report.message += (
            f"; features ({report.encoder}): {report.features} available, {report.features_computed} computed"
        )
        if report.feature_error:
            report.message += f"; feature error: {report.feature_error}"
    report.elapsed_s = time.monotonic() - started
    return report


def _ask_all(layout, llm, config, pending, by_label, entries, report, advance, deadline) -> None:
    """Ask every pending label, at most ``config.concurrency`` at a time; fill ``entries`` and ``report``."""
    stop = threading.Event()
    fatal: list[str] = []
    lock = threading.Lock()
    endpoint = endpoint_id(llm.base_url)

    def count_call() -> None:
        with lock:
            report.calls += 1

    def work(label: str) -> dict[str, Any]:
        # Another run may have answered it since we looked: the cache still wins (unless refreshing).
        if not config.refresh:
            entry = cache.read_description(layout, label, PROMPT_VERSION, llm.model, endpoint, llm.max_answer_chars)
            if entry is not None:
                return {**entry, "_from_cache": True}
        if stop.is_set():
            raise PermanentError(f"not asked: {fatal[0] if fatal else 'the endpoint failed fatally'}")
        if deadline is not None and time.monotonic() >= deadline:
            raise PermanentError(f"not asked: the run's time limit ({llm.run_timeout_s:g} s) was reached")
        prompt = build_prompt(label)
        try:
            answer = ask(prompt, llm, stop=stop, rng=random.Random(), on_attempt=count_call, deadline=deadline)
        except PermanentError as err:
            if err.fatal:  # stop here, in the worker, before it picks up its next label
                with lock:
                    first = not stop.is_set()
                    fatal.append(str(err))
                    stop.set()
                if first:
                    log.error("the endpoint failed fatally (%s); asking nothing more in this run", err)
            raise
        return cache.write_description(
            layout, label, PROMPT_VERSION, llm.model, endpoint, answer.text,
            prompt=prompt, response_model=answer.response_model, finish_reason=answer.finish_reason,
            attempts=answer.attempts,
        )

    try:
        with ThreadPoolExecutor(
            max_workers=min(config.concurrency, len(pending)), thread_name_prefix="describe"
        ) as pool:
            futures = {pool.submit(work, label): label for label in pending}
            for fut in as_completed(futures):
                label = futures[fut]
                oids = by_label[label]
                try:
                    entry = fut.result()
                except PermanentError as err:
                    for oid in oids:
                        report.failures[oid] = str(err)
                    log.warning("no description for %r (%d objects): %s", label, len(oids), err)
                except Exception as err:  # noqa: BLE001 - e.g. the cache could not be written; the batch goes on
                    for oid in oids:
                        report.failures[oid] = scrub(f"{type(err).__name__}: {err}", llm.secrets())
                    log.warning("no description for %r (%d objects): %s: %s", label, len(oids), type(err).__name__, err)
                else:
                    if entry.pop("_from_cache", False):
                        report.cached += len(oids)
                    else:
                        report.described += len(oids)
                    for oid in oids:
                        entries[oid] = entry
                advance(len(oids))
    finally:
        stop.set()  # an early exit (an error above) must not leave workers asking


def _features(
    layout: Layout, config: DescribeConfig, entries: dict[str, dict[str, Any]], report: DescribeReport
) -> None:
    """Make sure every described object has a feature vector for the configured encoder."""
    name = _resolve_encoder(config.encoder)
    report.encoder = name
    done: dict[str, bool] = {}  # description key -> feature available
    for oid, entry in entries.items():
        key = entry["key"]
        if key not in done:
            vec = cache.read_feature(layout, key, name)
            if vec is None and report.feature_error is None:
                try:
                    vec, n = encode_text(entry["text"], load_encoder(name, config.device), batch_size=config.batch_size)
                    cache.write_feature(layout, key, name, vec, n)
                    report.features_computed += 1
                except EncoderError as err:
                    report.feature_error = str(err)
                    log.warning("semantic features skipped: %s", err)
                except (ValueError, OSError) as err:
                    log.warning("no semantic feature for %s: %s", oid, err)
                    vec = None
            if vec is not None:
                report.feature_dim = int(vec.shape[0])
            done[key] = vec is not None
        report.features += int(done[key])


def description(layout: Layout, object_id: str, model: str | None = None,
                endpoint: str | None = None) -> dict[str, Any] | None:
    """The cached description entry of ``object_id`` (``text``, ``model``, ``label``, ``endpoint``, ...), or None.

    With ``model`` the answer of that model for the object's current label, from ``endpoint`` (a base URL;
    default $DGA_LLM_BASE_URL; with neither, the object's last answer if that model gave it); without
    ``model``, the answer the object was last described with. Entries for an older prompt or a
    since-renamed label do not count. Raises ObjectNotFound for an unknown object.
    """
    label = ObjectStore(layout).meta(object_id).label.strip()
    url = endpoint if endpoint is not None else os.environ.get(BASE_URL_ENV)
    if model is not None and url:
        return cache.read_description(layout, label, PROMPT_VERSION, model, endpoint_id(url))
    pointer = cache.read_pointer(layout, object_id)
    if pointer is None:
        return None
    entry = cache.read_description_by_key(layout, pointer["key"])
    if entry is None or entry["label"] != label or entry["prompt_version"] != PROMPT_VERSION:
        return None
    if model is not None and entry["model"] != model:
        return None
    return entry


def semantic_feature(
    layout: Layout, object_id: str, encoder: str | None = None, model: str | None = None, device: str = "cpu",
    endpoint: str | None = None,
) -> np.ndarray | None:
    """The object's semantic feature vector, float32 shape (C,) (C = encoder hidden size: 384 for the
    default MiniLM, 1024 for bert-large-uncased), or None when the object has no description.

    Served from the feature cache; computed and cached on a miss (never calls the LLM). ``encoder``
    defaults to $DGA_TEXT_ENCODER, else the packaged MiniLM; ``model`` and ``endpoint`` as in :func:`description`.
    Raises ObjectNotFound for an unknown object and EncoderError when the encoder cannot be loaded.
    """
    entry = description(layout, object_id, model, endpoint)
    if entry is None:
        return None
    name = _resolve_encoder(encoder)
    vec = cache.read_feature(layout, entry["key"], name)
    if vec is None:
        vec, n = encode_text(entry["text"], load_encoder(name, device))
        cache.write_feature(layout, entry["key"], name, vec, n)
    return vec
