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
"""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import re
import zipfile
from typing import Any, Callable

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

# (module, name) -> object. Both numpy spellings map to the installed implementation.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _ma._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _ma._reconstruct,
    ("numpy.core.multiarray", "scalar"): _ma.scalar,
    ("numpy._core.multiarray", "scalar"): _ma.scalar,
    ("numpy.core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numeric._frombuffer,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): __import__("_codecs").encode,
}
for _mod in ("builtins", "__builtin__"):
    for _name in ("set", "frozenset", "complex", "bytearray"):
        _ALLOWED[(_mod, _name)] = getattr(builtins, _name)
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
    """Unpickle ``data`` (read from ``path``) with the allowlist; errors name ``path``."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), path).load()
    except SourceFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, UnicodeDecodeError) as exc:
        raise SourceFileError(path, f"malformed or truncated pickle: {type(exc).__name__}: {exc}") from None


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
    except (ValueError, EOFError, SyntaxError) as exc:
        raise SourceFileError(path, f"not a valid .npy file: {exc}") from None
    if dtype.hasobject:
        arr = unpickle_bytes(fh.read(), path)
        if not isinstance(arr, np.ndarray):
            raise SourceFileError(path, f"object .npy holds a {type(arr).__name__}, expected an array")
        if arr.shape != tuple(shape):
            raise SourceFileError(path, f"object array has shape {arr.shape}, header says {tuple(shape)}")
        return arr
    count = int(np.prod(shape, dtype=np.int64))
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
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist():
                name = info.filename
                key = name[:-4] if name.endswith(".npy") else name
                out[key] = npy_from_bytes(zf.read(info), f"{path}[{name}]")
    except zipfile.BadZipFile as exc:
        raise SourceFileError(str(path), f"not a valid .npz (zip) file: {exc}") from None
    except (zipfile.LargeZipFile, EOFError, OSError) as exc:
        raise SourceFileError(str(path), f"unreadable .npz member: {exc}") from None
    return out


def _torch_safe_globals() -> list[Any]:
    entries: list[Any] = [np.ndarray, np.dtype, _ma._reconstruct, _ma.scalar, *_DTYPE_CLASSES]
    # numpy 1 writers spell the functions under numpy.core; tell torch that name too.
    entries += [(_ma._reconstruct, "numpy.core.multiarray._reconstruct"), (_ma.scalar, "numpy.core.multiarray.scalar"),
                _numeric._frombuffer, (_numeric._frombuffer, "numpy.core.numeric._frombuffer")]
    return entries


def load_torch(path: str | os.PathLike) -> Any:
    """A torch ``.pt`` file, via ``torch.load(weights_only=True)`` plus the numpy allowlist, on CPU."""
    import torch

    path = str(path)
    data = _read(path)
    try:
        with torch.serialization.safe_globals(_torch_safe_globals()):
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
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
    except (RuntimeError, EOFError, ValueError, KeyError, zipfile.BadZipFile, OSError, TypeError, AttributeError) as exc:
        raise SourceFileError(path, f"malformed or truncated torch file: {_first_line(str(exc), exc)}") from None


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
            raise UnsafeSourceFile(self._path, f"refusing to unpickle {module}.{name}: not an array class of a "
                                   "MANO/chumpy model file", "the file may be corrupt or crafted; nothing in it was run")
        return obj

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeSourceFile(self._path, "pickle uses persistent ids, which no model file needs")


def _plain(value: Any, path: str, depth: int = 0) -> Any:
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
            return np.asarray(_plain(st["x"], path, depth + 1))
        if isinstance(value, _ChSelect):
            a = np.asarray(_plain(st["a"], path, depth + 1)).ravel()
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


def load_chumpy_pickle(path: str | os.PathLike, max_bytes: int = 256 << 20) -> dict[str, Any]:
    """A chumpy-pickled model file (``MANO_RIGHT.pkl``) as ``{key: numpy array | scipy CSC | plain value}``."""
    path = str(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise SourceFileError(path, f"cannot read: {exc.strerror or exc}") from None
    if size > max_bytes:
        raise SourceFileError(path, f"{size} bytes is larger than a model file ({max_bytes} bytes allowed)")
    try:
        data = _ChumpyUnpickler(io.BytesIO(_read(path)), path).load()
    except SourceFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OverflowError, UnicodeDecodeError) as exc:
        raise SourceFileError(path, f"malformed or truncated pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise SourceFileError(path, f"model file holds a {type(data).__name__}, expected a dictionary")
    return {str(k): _plain(v, path) for k, v in data.items()}
