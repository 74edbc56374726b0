"""The description and feature caches: one file per key, written atomically, validated on read.

    <root>/cache/descriptions/<key>.json               one LLM answer per (label, prompt version, model)
    <root>/cache/descriptions/by-object/<object>.json  which answer an object was last described with
    <root>/cache/features/<key>.npz                    one vector per (description, encoder)

A key is a SHA-256 of its inputs, so concurrent runs that ask the same question write the same file
(last rename wins, both whole). Entries that fail validation read as misses and are asked again.
Nothing secret is written: no API key, no endpoint credentials.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
from typing import Any

import numpy as np

from dga_engine import fs
from dga_engine.layout import Layout, safe_name

log = logging.getLogger(__name__)

DESCRIPTIONS = "descriptions"
FEATURES = "features"
BY_OBJECT = "by-object"
FEATURE_VERSION = 1  # bump when sentence splitting or pooling changes


def _digest(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=True).encode("utf-8")).hexdigest()


def description_key(label: str, prompt_version: int, model: str) -> str:
    return _digest({"kind": DESCRIPTIONS, "label": label.strip(), "prompt_version": prompt_version, "model": model})


def feature_key(desc_key: str, encoder: str) -> str:
    return _digest({"kind": FEATURES, "description": desc_key, "encoder": encoder, "feature_version": FEATURE_VERSION})


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def description_path(layout: Layout, key: str) -> str:
    return f"{layout.cache(DESCRIPTIONS)}/{safe_name(key)}.json"


def pointer_path(layout: Layout, object_id: str) -> str:
    return f"{layout.cache(DESCRIPTIONS)}/{BY_OBJECT}/{safe_name(object_id)}.json"


def feature_path(layout: Layout, key: str) -> str:
    return f"{layout.cache(FEATURES)}/{safe_name(key)}.npz"


def read_description(layout: Layout, label: str, prompt_version: int, model: str) -> dict[str, Any] | None:
    """The cached answer for this question, or None (missing, unreadable, or not this question's)."""
    key = description_key(label, prompt_version, model)
    path = description_path(layout, key)
    if not fs.exists(path):
        return None
    try:
        entry = fs.read_json(path)
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable description cache entry %s (%s); it will be asked again", path, type(err).__name__)
        return None
    ok = (
        isinstance(entry, dict)
        and entry.get("key") == key
        and entry.get("label") == label.strip()
        and entry.get("prompt_version") == prompt_version
        and entry.get("model") == model
        and isinstance(entry.get("text"), str)
        and entry["text"].strip() != ""
    )
    if not ok:
        log.warning("ignoring invalid description cache entry %s; it will be asked again", path)
        return None
    return entry


def write_description(layout: Layout, label: str, prompt_version: int, model: str, text: str, **extra: Any) -> dict[str, Any]:
    """Store one validated answer (atomically) and return the entry."""
    key = description_key(label, prompt_version, model)
    entry = {
        "key": key,
        "label": label.strip(),
        "prompt_version": prompt_version,
        "model": model,
        "text": text,
        "created_at": _now(),
        **extra,
    }
    fs.write_json(description_path(layout, key), entry)
    return entry


def write_pointer(layout: Layout, object_id: str, entry: dict[str, Any]) -> None:
    """Record that ``object_id`` is described by ``entry`` (rewritten only when it changes)."""
    pointer = {"object_id": object_id, "key": entry["key"], "label": entry["label"],
               "prompt_version": entry["prompt_version"], "model": entry["model"]}
    path = pointer_path(layout, object_id)
    if fs.exists(path):
        try:
            old = fs.read_json(path)
            if isinstance(old, dict) and all(old.get(k) == v for k, v in pointer.items()):
                return
        except (OSError, ValueError):
            pass
    fs.write_json(path, {**pointer, "updated_at": _now()})


def read_pointer(layout: Layout, object_id: str) -> dict[str, Any] | None:
    path = pointer_path(layout, object_id)
    if not fs.exists(path):
        return None
    try:
        pointer = fs.read_json(path)
    except (OSError, ValueError):
        return None
    return pointer if isinstance(pointer, dict) and isinstance(pointer.get("key"), str) else None


def read_description_by_key(layout: Layout, key: str) -> dict[str, Any] | None:
    path = description_path(layout, key)
    if not fs.exists(path):
        return None
    try:
        entry = fs.read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("text"), str):
        return None
    return read_description(layout, entry.get("label", ""), entry.get("prompt_version", -1), entry.get("model", ""))


def read_feature(layout: Layout, desc_key: str, encoder: str) -> np.ndarray | None:
    """The cached feature vector (float32, shape (C,)) or None. Loaded without pickle."""
    path = feature_path(layout, feature_key(desc_key, encoder))
    if not fs.exists(path):
        return None
    try:
        with np.load(io.BytesIO(fs.read_bytes(path)), allow_pickle=False) as z:
            vec = np.asarray(z["feature"], dtype=np.float32)
            meta = json.loads(str(z["meta"]))
    except (OSError, ValueError, KeyError) as err:
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
