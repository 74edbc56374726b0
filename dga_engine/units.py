"""Naming units of stage work and fingerprinting their inputs.

A stage's unit (a candidate file x object for the filter, a candidate file for refine) is *done* when its
completion record (:mod:`dga_engine.runs`) exists **and** says it was made from the same input with the
same settings: the record carries :func:`table_fingerprint` of the rows it consumed and the settings'
version string. A changed input (new candidates, a refined instead of a raw pose) or changed settings
therefore redo the unit in place, under the same output key, so a dataset never holds two verdicts for
one grasp and never keeps a verdict of settings that are no longer asked for.
"""

from __future__ import annotations

import hashlib
import re
import resource

import numpy as np
import pyarrow as pa

_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")

# Columns that identify a grasp and its pose: a unit's input is the same when these are.
FINGERPRINT_COLUMNS = ("grasp_id", "object_id", "object_scale", "translation", "rotation", "joints")


def key_part(name: str) -> str:
    """A name made safe for a key; long or changed names get a short hash so they stay unique."""
    clean = _UNSAFE.sub("_", name).strip("._-") or "x"
    if clean != name or len(clean) > 60:
        clean = f"{clean[:40]}+{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return clean


def join_key(prefix: str, *parts: str) -> str:
    """``<prefix>.<part>.<part>...`` from safe parts, hashed to a bounded length when too long."""
    k = ".".join([prefix, *(key_part(p) for p in parts)])
    if len(k) > 180:
        k = f"{prefix}.{key_part(parts[0])[:40]}.{hashlib.sha256(k.encode()).hexdigest()[:32]}"
    return k


def table_fingerprint(table: pa.Table) -> str:
    """A hash of the rows' identities and poses (order included): 24 hex digits."""
    h = hashlib.sha256()
    h.update(str(table.num_rows).encode())
    for name in FINGERPRINT_COLUMNS:
        col = table.column(name).combine_chunks()
        if pa.types.is_string(col.type):
            h.update("\x1f".join(col.to_pylist()).encode())
        else:
            values = col.flatten() if pa.types.is_fixed_size_list(col.type) else col
            h.update(np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).tobytes())
    return h.hexdigest()[:24]


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its children that have finished: around a stage,
    the difference is what the stage cost, its worker processes included once their pool has closed."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
