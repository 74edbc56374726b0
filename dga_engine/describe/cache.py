"""The description and feature caches: one file per key, written atomically, validated on read.

    <root>/cache/descriptions/<key>.json               one LLM answer per (label, prompt version, model, endpoint)
    <root>/cache/descriptions/by-object/<object>.json  which answer an object was last described with
    <root>/cache/features/<key>.npz                    one vector per (description, encoder)

A key is a SHA-256 of its inputs, so concurrent runs that ask the same question write the same file
(last rename wins, both whole). The endpoint (base URL without credentials) is part of the key: two
servers that both call their model "llama3" are not the same model. Entries are untrusted on read: one
larger than :data:`MAX_ENTRY_BYTES`, not of this question, or whose answer fails the stage's answer test
(cut off, too long, not text) reads as a miss and is asked again. Nothing secret is written: no API key,
no endpoint credentials (the stage scrubs what a server echoes before it gets here).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import zipfile
from typing import Any

import numpy as np

from dga_engine import fs
from dga_engine.describe.config import LLMConfig
from dga_engine.layout import Layout, safe_name

log = logging.getLogger(__name__)

DESCRIPTIONS = "descriptions"
FEATURES = "features"
BY_OBJECT = "by-object"
FEATURE_VERSION = 1  # bump when sentence splitting or pooling changes
MAX_ENTRY_BYTES = 1 << 20  # a description entry or pointer larger than this is not read (answers are a paragraph)
MAX_FEATURE_BYTES = 1 << 20  # a feature file larger than this (or unpacking to more) is not read


def _digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=True).encode("utf-8")).hexdigest()


def description_key(label: str, prompt_version: int, model: str, endpoint: str) -> str:
    return _digest({"kind": DESCRIPTIONS, "label": label.strip(), "prompt_version": prompt_version, "model": model,
                    "endpoint": endpoint})


def feature_key(desc_key: str, encoder: str) -> str:
    return _digest({"kind": FEATURES, "description": desc_key, "encoder": encoder, "feature_version": FEATURE_VERSION})


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


def description_path(layout: Layout, key: str) -> str:
    return f"{layout.cache(DESCRIPTIONS)}/{safe_name(key)}.json"


def pointer_path(layout: Layout, object_id: str) -> str:
    return f"{layout.cache(DESCRIPTIONS)}/{BY_OBJECT}/{safe_name(object_id)}.json"


def feature_path(layout: Layout, key: str) -> str:
    return f"{layout.cache(FEATURES)}/{safe_name(key)}.npz"


def _read_small_json(path: str) -> Any:
    """The JSON at ``path`` if it exists and is at most MAX_ENTRY_BYTES, else None (with a warning when oversized)."""
    if not fs.exists(path):
        return None
    try:
        if fs.size(path) > MAX_ENTRY_BYTES:
            log.warning("ignoring cache entry %s: larger than %d bytes; it will be asked again", path, MAX_ENTRY_BYTES)
            return None
        return fs.read_json(path)
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable cache entry %s (%s); it will be asked again", path, type(err).__name__)
        return None


def read_description(layout: Layout, label: str, prompt_version: int, model: str, endpoint: str,
                     max_chars: int = LLMConfig.max_answer_chars) -> dict[str, Any] | None:
    """The cached answer for this question, or None (missing, unreadable, not this question's, or not a valid
    answer)."""
    from dga_engine.describe.llm import answer_problem

    key = description_key(label, prompt_version, model, endpoint)
    path = description_path(layout, key)
    entry = _read_small_json(path)
    if entry is None:
        return None
    ok = (
        isinstance(entry, dict)
        and entry.get("key") == key
        and entry.get("label") == label.strip()
        and entry.get("prompt_version") == prompt_version
        and entry.get("model") == model
        and entry.get("endpoint") == endpoint
        and isinstance(entry.get("text"), str)
        and entry["text"].strip() != ""
        and answer_problem(entry["text"], entry.get("finish_reason"), max_chars) is None
    )
    if not ok:
        log.warning("ignoring invalid description cache entry %s; it will be asked again", path)
        return None
    return entry


def write_description(layout: Layout, label: str, prompt_version: int, model: str, endpoint: str, text: str,
                      **extra: Any) -> dict[str, Any]:
    """Store one validated answer (atomically) and return the entry."""
    key = description_key(label, prompt_version, model, endpoint)
    entry = {
        "key": key,
        "label": label.strip(),
        "prompt_version": prompt_version,
        "model": model,
        "endpoint": endpoint,
        "text": text,
        "created_at": _now(),
        **extra,
    }
    fs.write_json(description_path(layout, key), entry)
    return entry


def write_pointer(layout: Layout, object_id: str, entry: dict[str, Any]) -> None:
    """Record that ``object_id`` is described by ``entry`` (rewritten only when it changes)."""
    pointer = {"object_id": object_id, "key": entry["key"], "label": entry["label"],
               "prompt_version": entry["prompt_version"], "model": entry["model"], "endpoint": entry["endpoint"]}
    path = pointer_path(layout, object_id)
    old = _read_small_json(path)
    if isinstance(old, dict) and all(old.get(k) == v for k, v in pointer.items()):
        return
    fs.write_json(path, {**pointer, "updated_at": _now()})


def read_pointer(layout: Layout, object_id: str) -> dict[str, Any] | None:
    pointer = _read_small_json(pointer_path(layout, object_id))
    return pointer if isinstance(pointer, dict) and isinstance(pointer.get("key"), str) else None


def read_description_by_key(layout: Layout, key: str) -> dict[str, Any] | None:
    entry = _read_small_json(description_path(layout, key))
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("text"), str):
        return None
    return read_description(layout, str(entry.get("label", "")), entry.get("prompt_version", -1),
                            str(entry.get("model", "")), str(entry.get("endpoint", "")))


def read_feature(layout: Layout, desc_key: str, encoder: str) -> np.ndarray | None:
    """The cached feature vector (float32, shape (C,)) or None. Loaded without pickle."""
    path = feature_path(layout, feature_key(desc_key, encoder))
    if not fs.exists(path):
        return None
    try:
        if fs.size(path) > MAX_FEATURE_BYTES:
            raise ValueError(f"larger than {MAX_FEATURE_BYTES} bytes")
        data = fs.read_bytes(path)
        with zipfile.ZipFile(io.BytesIO(data)) as zf:  # members are inflated whole: check what they declare first
            if sum(i.file_size for i in zf.infolist()) > MAX_FEATURE_BYTES:
                raise ValueError(f"unpacks to more than {MAX_FEATURE_BYTES} bytes")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            vec = np.asarray(z["feature"], dtype=np.float32)
            meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict):
                raise ValueError("feature meta is not a JSON object")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        log.warning("ignoring unreadable feature cache entry %s (%s); it will be recomputed", path, type(err).__name__)
        return None
    if vec.ndim != 1 or vec.size == 0 or not np.all(np.isfinite(vec)) or meta.get("encoder") != encoder:
        log.warning("ignoring invalid feature cache entry %s; it will be recomputed", path)
        return None
    return vec


def write_feature(layout: Layout, desc_key: str, encoder: str, vector: np.ndarray, n_sentences: int) -> None:
    vector = np.asarray(vector, dtype=np.float32)
    meta = {"description": desc_key, "encoder": encoder, "feature_version": FEATURE_VERSION,
            "dim": int(vector.shape[0]), "sentences": int(n_sentences), "pooling": "max over sentence [CLS]",
            "created_at": _now()}
    buf = io.BytesIO()
    np.savez(buf, feature=vector, meta=np.array(json.dumps(meta, sort_keys=True)))
    fs.write_bytes(feature_path(layout, feature_key(desc_key, encoder)), buf.getvalue())
