"""Loading the sources' pickled files without running anything they name.

The source datasets ship as pickles: numpy object arrays (``.npy`` / ``.npz`` members whose dtype is
``object``), torch ``.pt`` files and plain ``.pkl`` files. The default unpickler imports and calls
whatever a file names, so a crafted file runs code on load. Here every pickle goes through an
allowlist of the few classes these formats need:

- numpy: ``ndarray``, ``dtype`` (and the ``numpy.dtypes.*DType`` classes), ``_reconstruct`` and
  ``scalar`` under both ``numpy.core.multiarray`` (numpy 1 writers) and ``numpy._core.multiarray``
  (numpy 2 writers), and ``numeric._frombuffer`` (arrays in protocol-5 pickles);
- builtins containers that need a global (``set``, ``frozenset``, ``complex``, ``bytearray``),
  ``collections.OrderedDict``, and ``_codecs.encode`` (how protocol-2 pickles spell ``bytes``);
- torch files are read only by ``torch.load(weights_only=True)`` (tensors and their rebuild functions),
  extended with the numpy entries above so numpy scalars inside ``.pt`` files load.

A file that names anything else raises :class:`UnsafeSourceFile` before that name is imported; a
truncated or malformed file raises :class:`SourceFileError`. Both name the file and what is wrong.

Sizes are capped before anything is allocated, because a file can *declare* sizes it does not hold:

- the numpy callables are wrapped: an array's shape and dtype (from ``_reconstruct``, from its pickled
  state, from ``_frombuffer``) are checked first, and all arrays of one load together may take at most
  :data:`PICKLE_BYTES_PER_BYTE` bytes per byte of pickle (an object array's element costs at least one
  pickle byte and one 8-byte pointer); ``bytearray`` takes only bytes or text, never a length;
- array states are checked against their shape (numpy itself crashes on an object array whose list is
  shorter than its shape), and only plain dtypes (no structured, sub-array or void dtypes, flags as numpy
  sets them) are accepted: a crafted structured dtype would let raw bytes be read as object pointers;
- ``.npz`` and ``.pt`` zips may unpack to at most :data:`MAX_INFLATION` times the file's size (at least
  :data:`ZIP_FLOOR_BYTES`), checked on the zip's directory before any member is inflated.

Memory: a load holds the file's bytes plus what it decodes, at most ~``PICKLE_BYTES_PER_BYTE`` x (file
size) for pickles and ``MAX_INFLATION`` x for zips; the torch reader checks storage sizes itself.
"""

from __future__ import annotations

import builtins
import collections
import contextvars
import io
import lzma
import math
import os
import pickle
import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


class SourceFileError(ValueError):
    """A source file is truncated, malformed or not in the expected format."""

    def __init__(self, path: str, problem: str, hint: str = "") -> None:
        self.path = str(path)
        self.problem = problem
        msg = f"{self.path}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class UnsafeSourceFile(SourceFileError):
    """A pickle names a class or function outside the allowlist; nothing in it was run."""


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


_ma = _numpy_multiarray()
try:
    from numpy._core import numeric as _numeric  # numpy >= 2
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import numeric as _numeric

PICKLE_BYTES_PER_BYTE = 8  # bytes all arrays of one load may declare, per byte of pickle (plus MIN_BUDGET_BYTES)
MIN_BUDGET_BYTES = 1 << 20
MAX_INFLATION = 64  # a .npz/.pt zip may unpack to this many times its file size (np.savez stores members as they are)
ZIP_FLOOR_BYTES = 16 << 20  # ... or to this much, whichever is larger
_LATIN1 = frozenset({"latin1", "latin-1", "iso-8859-1", "iso8859-1"})  # how protocol-2 pickles spell bytes


@dataclass
class _Load:
    """The load in progress in this context: whose file, how many bytes arrays may still declare."""

    path: str
    remaining: int
    arrays: int = 0  # checked arrays made (the result is walked to plain ndarrays only when > 0)


_LOAD: contextvars.ContextVar[_Load | None] = contextvars.ContextVar("dga_safeload", default=None)


class _Refused(pickle.UnpicklingError):
    """Raised inside an unpickler: the file declares something it must not (the caller names the file)."""


def _charge(nbytes: int, what: str) -> None:
    load = _LOAD.get()
    if load is None:
        raise _Refused("numpy objects can only be unpickled through dga_engine.sources.safeload")
    if nbytes > load.remaining:
        raise _Refused(f"{what} declares {nbytes:,} bytes, more than the file can hold ({max(load.remaining, 0):,} "
                       "bytes left of its budget): the file is corrupt or crafted; nothing was allocated")
    load.remaining -= nbytes


def _check_dtype(dtype: Any) -> np.dtype:
    """A plain dtype as numpy builds it from its own type string, or _Refused."""
    if not isinstance(dtype, np.dtype):
        raise _Refused(f"array dtype is a {type(dtype).__name__}, not a numpy dtype")
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind == "V":
        raise _Refused(f"structured, sub-array or void dtype {dtype!r}: no source format uses one")
    ref = np.dtype(dtype.str)
    if dtype.flags != ref.flags or dtype.itemsize != ref.itemsize or dtype.hasobject != ref.hasobject:
        raise _Refused(f"dtype {dtype.str!r} carries flags or a size numpy never gives it: the file is crafted")
    return dtype


def _check_shape(shape: Any) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(type(n) is int and n >= 0 for n in shape):
        raise _Refused(f"array shape {shape!r} is not a tuple of at most 32 non-negative integers")
    return shape


class _CheckedArray(np.ndarray):
    """An ndarray while it is being unpickled: its state is checked before numpy's ``__setstate__`` sees it."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _Refused("array state is not numpy's (version, shape, dtype, fortran, data)")
        shape, dtype, _, data = state[-4:]
        shape, dtype = _check_shape(shape), _check_dtype(dtype)
        n = math.prod(shape)
        _charge(n * dtype.itemsize, f"an array of shape {shape} and dtype {dtype.str}")
        if dtype.hasobject:
            if not isinstance(data, list) or len(data) != n:
                raise _Refused(
                    f"object array of {n} elements comes with {len(data) if isinstance(data, list) else 'no'} "
                    "elements: the file is corrupt or crafted"
                )
        elif not isinstance(data, (bytes, bytearray)) or len(data) != n * dtype.itemsize:
            raise _Refused(f"array of {n * dtype.itemsize} bytes comes with "
                           f"{len(data) if isinstance(data, (bytes, bytearray)) else 'no'} bytes of data")
        super().__setstate__(state)


class _NdarrayName:
    """What ``numpy.ndarray`` names in a pickle: only the first argument of ``_reconstruct``, never called."""


_NDARRAY = _NdarrayName()


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not _NDARRAY:
        raise _Refused(f"_reconstruct of {type(subtype).__name__}: only numpy.ndarray is rebuilt")
    dt = _check_dtype(np.dtype(dtype) if isinstance(dtype, (str, bytes)) else dtype)
    shape = _check_shape(tuple(shape) if isinstance(shape, list) else shape)
    _charge(math.prod(shape) * dt.itemsize, f"an array of shape {shape}")
    load = _LOAD.get()
    if load is not None:
        load.arrays += 1
    return _ma._reconstruct(_CheckedArray, shape, dt)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(buf, (bytes, bytearray)):
        raise _Refused(f"array buffer is a {type(buf).__name__}, not bytes")
    arr = _numeric._frombuffer(buf, _check_dtype(dtype), _check_shape(shape), order)
    load = _LOAD.get()
    if load is not None:
        load.arrays += 1
    return arr.view(_CheckedArray)  # a later BUILD on it goes through the checked __setstate__


def _scalar(dtype: Any, *args: Any) -> Any:
    return _ma.scalar(_check_dtype(dtype), *args)


def _dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(obj, str):
        raise _Refused(f"numpy dtype from a {type(obj).__name__}: source files name dtypes by their type string")
    return _check_dtype(np.dtype(obj, align=bool(align), copy=bool(copy)))


def _bytearray(*args: Any) -> bytearray:
    if not args:
        return bytearray()
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytearray(args[0])
    if len(args) == 2 and isinstance(args[0], str) and args[1] in _LATIN1:
        return bytearray(args[0], args[1])
    raise _Refused("bytearray() called with a size or other arguments: only bytes held by the file may be copied")


def _encode(obj: Any, encoding: Any = "utf-8", errors: str = "strict") -> bytes:
    if not isinstance(obj, str) or encoding not in _LATIN1:
        raise _Refused(f"_codecs.encode with {encoding!r}: pickles spell bytes as latin1 text only")
    return obj.encode(encoding, errors)


# (module, name) -> object. Both numpy spellings map to the checked stand-ins above.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _encode,
}
for _mod in ("builtins", "__builtin__"):
    for _name in ("set", "frozenset", "complex"):
        _ALLOWED[(_mod, _name)] = getattr(builtins, _name)
    _ALLOWED[(_mod, "bytearray")] = _bytearray
_DTYPE_CLASSES = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")] if hasattr(np, "dtypes") else []
for _cls in _DTYPE_CLASSES:
    _ALLOWED[("numpy.dtypes", _cls.__name__)] = _cls

ALLOWED_GLOBALS: tuple[str, ...] = tuple(sorted(f"{m}.{n}" for m, n in _ALLOWED))


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh: Any, path: str) -> None:
        super().__init__(fh)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        obj = _ALLOWED.get((module, name))
        if obj is None:
            raise UnsafeSourceFile(
                self._path,
                f"refusing to unpickle {module}.{name}: not one of the classes source datasets use",
                "the file may be corrupt or crafted; nothing in it was run. Re-download it from the source",
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeSourceFile(self._path, "pickle uses persistent ids, which no source format needs")


def unpickle_bytes(data: bytes, path: str) -> Any:
    """Unpickle ``data`` (read from ``path``) with the allowlist and the size caps; errors name ``path``."""
    with _load_context(path, len(data)) as load:
        try:
            obj = _RestrictedUnpickler(io.BytesIO(data), path).load()
            return _plain(obj, _Walk(load.arrays)) if load.arrays else obj
        except SourceFileError:
            raise
        except _Refused as exc:
            raise UnsafeSourceFile(path, str(exc), "re-download it from the source") from None
        except RecursionError:
            raise SourceFileError(path, "pickle nests containers too deeply for any source format") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                MemoryError, OverflowError, UnicodeDecodeError) as exc:
            raise SourceFileError(path, f"malformed or truncated pickle: {type(exc).__name__}: {exc}") from None


class _load_context:
    """Set the budget of one load (PICKLE_BYTES_PER_BYTE per byte of ``size``) for the wrapped callables."""

    def __init__(self, path: str, size: int) -> None:
        self.load = _Load(path, PICKLE_BYTES_PER_BYTE * size + MIN_BUDGET_BYTES)

    def __enter__(self) -> _Load:
        self._token = _LOAD.set(self.load)
        return self.load

    def __exit__(self, *exc: Any) -> None:
        _LOAD.reset(self._token)


class _Walk:
    """State of one :func:`_plain` walk: objects seen, checked arrays still to find."""

    def __init__(self, arrays: int) -> None:
        self.memo: dict[int, Any] = {}
        self.left = arrays


def _plain(obj: Any, walk: _Walk) -> Any:
    """``obj`` with every checked array turned into a plain ndarray (containers walked, shared ones once;
    the walk ends as soon as every checked array the load made has been found)."""
    if walk.left <= 0:
        return obj
    key = id(obj)
    if key in walk.memo:
        return walk.memo[key]
    if isinstance(obj, _CheckedArray):
        arr = obj.view(np.ndarray)
        walk.memo[key] = arr
        walk.left -= 1
        if arr.dtype.hasobject and walk.left > 0:
            flat = arr.reshape(-1)
            for i in range(flat.size):
                flat[i] = _plain(flat[i], walk)
        return arr
    if isinstance(obj, dict):
        walk.memo[key] = obj
        for k in list(obj):
            obj[k] = _plain(obj[k], walk)
    elif isinstance(obj, list):
        walk.memo[key] = obj
        obj[:] = [_plain(x, walk) for x in obj]
    elif isinstance(obj, tuple):
        walk.memo[key] = obj
        walk.memo[key] = out = tuple(_plain(x, walk) for x in obj)
        return out
    return obj


def check_zip_size(zf: zipfile.ZipFile, file_size: int, path: str) -> None:
    """Refuse a zip whose members would unpack to more than MAX_INFLATION x its size (before inflating any)."""
    total = sum(max(0, int(i.file_size)) for i in zf.infolist())
    cap = max(ZIP_FLOOR_BYTES, MAX_INFLATION * file_size)
    if total > cap:
        raise UnsafeSourceFile(
            path,
            f"its members would unpack to {total:,} bytes, {total / max(file_size, 1):,.0f}x the file's {file_size:,} "
            f"bytes (limit {MAX_INFLATION}x or {ZIP_FLOOR_BYTES:,} bytes): a zip bomb or a corrupt file; nothing was "
            "unpacked",
            "re-download it from the source",
        )


def _read(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise SourceFileError(str(path), f"cannot read: {exc.strerror or exc}") from None


def load_pickle(path: str | os.PathLike) -> Any:
    """A ``.pkl`` file (e.g. the DGA release's ``object_pcds_nors.pkl``)."""
    return unpickle_bytes(_read(path), str(path))


def npy_from_bytes(data: bytes, path: str) -> np.ndarray:
    """One ``.npy`` payload; object arrays are unpickled with the allowlist, others never unpickle."""
    from numpy.lib import format as npformat

    fh = io.BytesIO(data)
    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        else:  # pragma: no cover - numpy rejects other versions in read_magic
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # noqa: BLE001 - numpy parses the header text itself (ValueError, SyntaxError, TokenError, ...)
        raise SourceFileError(path, f"not a valid .npy file: {type(exc).__name__}: {exc}") from None
    if dtype.hasobject:
        arr = unpickle_bytes(fh.read(), path)
        if not isinstance(arr, np.ndarray):
            raise SourceFileError(path, f"object .npy holds a {type(arr).__name__}, expected an array")
        if arr.shape != tuple(shape):
            raise SourceFileError(path, f"object array has shape {arr.shape}, header says {tuple(shape)}")
        return arr
    count = math.prod(shape)  # Python ints: a crafted shape cannot overflow to a small count
    need = count * dtype.itemsize
    raw = fh.read()
    if len(raw) < need:
        raise SourceFileError(path, f"truncated .npy: {len(raw)} of {need} data bytes present")
    arr = np.frombuffer(raw[:need], dtype=dtype, count=count)
    arr = arr.reshape(shape[::-1]).transpose() if fortran else arr.reshape(shape)
    return arr.copy()


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` file (DexGraspNet's per-object grasp arrays are object arrays of dicts)."""
    return npy_from_bytes(_read(path), str(path))


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every member of a ``.npz`` file as ``{name: array}`` (UniDexGrasp's per-grasp files, RealDex)."""
    data = _read(path)
    out: dict[str, np.ndarray] = {}
    with _zip_directory(data, str(path)) as zf:
        check_zip_size(zf, len(data), str(path))
        for info in zf.infolist():
            name = info.filename
            key = name[:-4] if name.endswith(".npy") else name
            try:
                raw = zf.read(info)
            except _ZIP_ERRORS as exc:  # a damaged member: bad CRC, broken deflate stream, unknown method
                raise SourceFileError(
                    str(path), f"unreadable .npz member {name!r}: {type(exc).__name__}: {exc}"
                ) from None
            out[key] = npy_from_bytes(raw, f"{path}[{name}]")
    return out


# What Python's zipfile raises for damaged archives (a directory, a header or a compressed stream).
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    EOFError,
    OSError,
    NotImplementedError,
    RuntimeError,
    ValueError,
    KeyError,
    IndexError,
    OverflowError,
    UnicodeDecodeError,
    lzma.LZMAError,
)


def _looks_like_zip(data: bytes) -> bool:
    """Whether ``data`` ends with a zip directory (a damaged one counts: it must not slip past the size check)."""
    try:
        return zipfile.is_zipfile(io.BytesIO(data))
    except _ZIP_ERRORS:
        return True


def _zip_directory(data: bytes, path: str) -> zipfile.ZipFile:
    """The zip's directory (nothing inflated), or SourceFileError when it cannot be read."""
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise SourceFileError(path, f"not a valid zip file (.npz / .pt): {type(exc).__name__}: {exc}") from None


def _torch_safe_globals() -> list[Any]:
    # The checked stand-ins, under every name numpy 1 and 2 writers use (torch maps a name to the object).
    entries: list[Any] = [(obj, f"{module}.{name}") for (module, name), obj in _ALLOWED.items()
                          if module.startswith("numpy")]
    entries += [*_DTYPE_CLASSES, _CheckedArray]  # _CheckedArray: torch builds (BUILD) only allowlisted types
    return entries


def load_torch(path: str | os.PathLike) -> Any:
    """A torch ``.pt`` file, via ``torch.load(weights_only=True)`` plus the numpy allowlist, on CPU."""
    import torch

    path = str(path)
    data = _read(path)
    if _looks_like_zip(data):  # the legacy (pre-1.6) format is one pickle stream: nothing to inflate
        with _zip_directory(data, path) as zf:
            check_zip_size(zf, len(data), path)
    with _load_context(path, len(data)) as load:
        try:
            with torch.serialization.safe_globals(_torch_safe_globals()):
                obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            return _plain(obj, _Walk(load.arrays)) if load.arrays else obj
        except _Refused as exc:
            raise UnsafeSourceFile(path, str(exc), "re-download it from the source") from None
        except pickle.UnpicklingError as exc:
            refused = _refusal(exc)
            if refused:
                raise UnsafeSourceFile(path, refused, "re-download it from the source") from None
            text = str(exc)
            m = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL|GLOBAL) ([\w.]+)", text)
            if m or "global" in text.lower():
                named = f" ({m.group(1)})" if m else ""
                raise UnsafeSourceFile(
                    path,
                    f"refusing to load: the file names a class outside the allowlist{named}",
                    "torch.load(weights_only=True) refused it; nothing in it was run. Re-download it from the source",
                ) from None
            raise SourceFileError(path, f"malformed torch file: {_first_line(text, exc)}") from None
        except RecursionError:
            raise SourceFileError(path, "pickle nests containers too deeply for any source format") from None
        except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile, OSError, TypeError, AttributeError,
                IndexError, OverflowError, MemoryError, UnicodeDecodeError) as exc:
            raise SourceFileError(path, f"malformed or truncated torch file: {_first_line(str(exc), exc)}") from None


def _refusal(exc: BaseException) -> str | None:
    """The message of a _Refused that torch's unpickler wrapped into its own error, if that is what this is."""
    seen = exc
    for _ in range(5):
        if isinstance(seen, _Refused):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
        if seen is None:
            break
    return None


def _first_line(text: str, exc: BaseException) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


LOADERS: dict[str, Callable[[str], Any]] = {".npy": load_npy, ".npz": load_npz, ".pkl": load_pickle, ".pt": load_torch}


# ---- chumpy model files (MANO) --------------------------------------------------------------------------
# MANO_RIGHT.pkl (a Python 2 pickle) stores some arrays as chumpy nodes: ``chumpy.ch.Ch`` holds its array
# in ``x``; ``chumpy.reordering.Select`` is ``a.ravel()[idxs].reshape(preferred_shape)``; J_regressor is
# a scipy CSC matrix. Those three names map to inert stand-ins that only record their pickled state; the
# state is turned into numpy / scipy arrays after loading. Every other class is refused, as above.


class _Standin:
    """Records the state a pickle gives a chumpy / scipy object; never runs anything of the original."""

    kind = ""

    def __init__(self) -> None:  # REDUCE with arguments (not how these classes pickle) fails here
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ChValue(_Standin):
    kind = "chumpy.ch.Ch"


class _ChSelect(_Standin):
    kind = "chumpy.reordering.Select"


class _Csc(_Standin):
    kind = "scipy.sparse.csc_matrix"


def _standin_reconstructor(cls: Any, base: Any, state: Any) -> _Standin:
    """``copy_reg._reconstructor`` (protocol 0/1 pickles), for the stand-ins only."""
    if not (isinstance(cls, type) and issubclass(cls, _Standin)) or base is not object or state is not None:
        raise pickle.UnpicklingError("copy_reg._reconstructor is only allowed for chumpy/scipy arrays")
    return cls.__new__(cls)


_CHUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    ("chumpy.ch", "Ch"): _ChValue,
    ("chumpy.reordering", "Select"): _ChSelect,
    ("scipy.sparse.csc", "csc_matrix"): _Csc,
    ("scipy.sparse._csc", "csc_matrix"): _Csc,
    ("copy_reg", "_reconstructor"): _standin_reconstructor,
    ("copyreg", "_reconstructor"): _standin_reconstructor,
    ("__builtin__", "object"): object,
    ("builtins", "object"): object,
}


class _ChumpyUnpickler(pickle.Unpickler):
    def __init__(self, fh: Any, path: str) -> None:
        super().__init__(fh, encoding="latin1")  # Python 2 str payloads (numpy buffers) as bytes-in-str
        self._path = path

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        obj = _CHUMPY_GLOBALS.get((module, name), _ALLOWED.get((module, name)))
        if obj is None:
            raise UnsafeSourceFile(
                self._path,
                f"refusing to unpickle {module}.{name}: not an array class of a MANO/chumpy model file",
                "the file may be corrupt or crafted; nothing in it was run",
            )
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeSourceFile(self._path, "pickle uses persistent ids, which no model file needs")


def _chumpy_plain(value: Any, path: str, depth: int = 0) -> Any:
    """A stand-in (or a container of them) as numpy / scipy arrays; everything else unchanged."""
    if depth > 8:
        raise SourceFileError(path, "chumpy nodes nested too deeply")
    if not isinstance(value, _Standin):
        return value
    st = getattr(value, "state", None)  # NEWOBJ creates instances without __init__; BUILD sets the state
    if not isinstance(st, dict):
        raise SourceFileError(path, f"{value.kind} without its state dictionary")
    try:
        if isinstance(value, _ChValue):
            return np.asarray(_chumpy_plain(st["x"], path, depth + 1))
        if isinstance(value, _ChSelect):
            a = np.asarray(_chumpy_plain(st["a"], path, depth + 1)).ravel()
            idxs = np.asarray(st["idxs"]).ravel()
            if idxs.dtype.kind not in "iu" or (idxs.size and (idxs.min() < 0 or idxs.max() >= a.size)):
                raise SourceFileError(path, "chumpy Select indexes outside its array")
            out = a[idxs]
            return out.reshape(tuple(int(n) for n in st["preferred_shape"])) if "preferred_shape" in st else out
        import scipy.sparse

        shape = tuple(int(n) for n in st.get("_shape", st.get("shape")))
        mat = scipy.sparse.csc_matrix((np.asarray(st["data"]), np.asarray(st["indices"]), np.asarray(st["indptr"])),
                                      shape=shape)
        mat.check_format(full_check=True)
        return mat
    except SourceFileError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise SourceFileError(path, f"malformed {value.kind} in the model file: {type(exc).__name__}: {exc}") from None


def _as_numpy(value: Any) -> Any:
    """A checked array as a plain ndarray (scipy matrices and plain values unchanged)."""
    return value.view(np.ndarray) if isinstance(value, _CheckedArray) else value


def load_chumpy_pickle(path: str | os.PathLike, max_bytes: int = 256 << 20) -> dict[str, Any]:
    """A chumpy-pickled model file (``MANO_RIGHT.pkl``) as ``{key: numpy array | scipy CSC | plain value}``."""
    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise SourceFileError(path, f"cannot read: {exc.strerror or exc}") from None
    if size > max_bytes:
        raise SourceFileError(path, f"{size} bytes is larger than a model file ({max_bytes} bytes allowed)")
    with _load_context(path, size):  # numpy arrays in it are size-checked like every other source file's
        try:
            data = _ChumpyUnpickler(io.BytesIO(_read(path)), path).load()
        except SourceFileError:
            raise
        except _Refused as exc:
            raise UnsafeSourceFile(
                path, str(exc), "the file may be corrupt or crafted; nothing in it was run"
            ) from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
                MemoryError, OverflowError, UnicodeDecodeError) as exc:
            raise SourceFileError(path, f"malformed or truncated pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise SourceFileError(path, f"model file holds a {type(data).__name__}, expected a dictionary")
    return {str(k): _as_numpy(_chumpy_plain(v, path)) for k, v in data.items()}
