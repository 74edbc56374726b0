"""Crafted source files (hand-written pickle opcodes): each declares sizes or states it does not hold.

A plain module (not a conftest) so the fuzz and the limit tests share it.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def integer(n: int) -> bytes:
    if 0 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    return b"\x8a\x08" + n.to_bytes(8, "little", signed=True)


def text(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _reconstruct_empty() -> bytes:
    """``_reconstruct(ndarray, (0,), b'b')``: what numpy writes before an array's state."""
    return (glob("numpy._core.multiarray", "_reconstruct") + glob("numpy", "ndarray") + integer(0) + b"\x85"
            + b"C\x01b" + b"\x87R")


def _dtype(code: str) -> bytes:
    return glob("numpy", "dtype") + text(code) + b"\x89\x88\x87R"  # dtype(code, False, True)


def object_array_short_list(n: int) -> bytes:
    """An object array of shape (n,) whose state holds one element (numpy itself crashes on it)."""
    return (b"\x80\x02" + _reconstruct_empty() + b"(" + integer(1) + integer(n) + b"\x85" + _dtype("O8")
            + b"\x89" + b"](" + integer(7) + b"e" + b"tb.")


def float_array_declared(n: int) -> bytes:
    """A float64 array of shape (n,) with 8 bytes of data."""
    return (b"\x80\x02" + _reconstruct_empty() + b"(" + integer(1) + integer(n) + b"\x85" + _dtype("f8")
            + b"\x89" + b"C\x08" + b"\x00" * 8 + b"tb.")


def bytearray_of(n: int) -> bytes:
    return b"\x80\x02" + glob("builtins", "bytearray") + integer(n) + b"\x85R."


def reconstruct_of(n: int, code: str = "O8") -> bytes:
    """``_reconstruct(ndarray, (n,), dtype)``: numpy allocates (and for objects fills) n elements."""
    return (b"\x80\x02" + glob("numpy._core.multiarray", "_reconstruct") + glob("numpy", "ndarray") + integer(n)
            + b"\x85" + _dtype(code) + b"\x87R.")


def pointer_scalar() -> bytes:
    """A void dtype given an object field by a crafted state, then a scalar of it from raw bytes: reading the
    bytes as a PyObject pointer crashes (or worse) an unguarded numpy."""
    state = (b"(" + integer(3) + text("|") + b"N" + b"(" + text("a") + b"t" + b"}" + text("a") + b"(" + _dtype("O8")
             + integer(0) + b"ts" + integer(8) + integer(1) + integer(16) + b"t")
    return (b"\x80\x02" + glob("numpy._core.multiarray", "scalar") + _dtype("V8") + state + b"b"
            + b"C\x08" + b"\x41" * 8 + b"\x86R.")


def ndarray_called(n: int) -> bytes:
    """``numpy.ndarray((n,), 'f8')`` called directly (numpy pickles never do)."""
    return b"\x80\x02" + glob("numpy", "ndarray") + integer(n) + b"\x85" + text("f8") + b"\x86R."


def write_object_npy(path: Path, body: bytes, shape: tuple = (1,)) -> Path:
    from numpy.lib import format as npformat

    with open(path, "wb") as fh:
        npformat.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": shape})
        fh.write(body)
    return path


def write_npz_bomb(path: Path, unpacked: int = 400 << 20) -> Path:
    """A deflated .npz member of ``unpacked`` bytes of zeros (a few hundred kB on disk)."""
    from numpy.lib import format as npformat

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        with zf.open("qpos.npy", "w", force_zip64=True) as fh:
            npformat.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (unpacked // 8,)})
            chunk = b"\x00" * (1 << 22)
            for _ in range(unpacked // len(chunk)):
                fh.write(chunk)
    return path


def write_pt_bomb(path: Path, numel: int = 300 << 20) -> Path:
    """A torch file whose storage record is deflated (torch's reader inflates it whole)."""
    import torch

    buf = io.BytesIO()
    torch.save({"metadata": [torch.zeros(numel, dtype=torch.uint8)]}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            deflate = info.filename.endswith("/data/0")
            out.writestr(
                info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            )
    return path


def write_pt_with_pickle(path: Path, swap: tuple[bytes, bytes]) -> Path:
    """A real torch file of a numpy object array, with bytes of its data.pkl replaced (``swap``)."""
    import torch

    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = 1, 2
    buf = io.BytesIO()
    torch.save({"metadata": [arr]}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                assert swap[0] in data, pickle.loads  # the layout torch writes has not changed
                data = data.replace(*swap)
            out.writestr(info.filename, data)
    return path
