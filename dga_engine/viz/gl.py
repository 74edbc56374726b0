"""An offscreen OpenGL context for MuJoCo's renderer, chosen by ``$MUJOCO_GL`` (headless by default).

MuJoCo's Python bindings pick their GL backend once, when ``mujoco`` is first imported, from ``$MUJOCO_GL``;
by then the engine has usually imported ``mujoco`` for other reasons. So the renderer here makes its own
context from the backend modules directly:

- ``osmesa`` (the default): Mesa's software rasteriser, CPU only; needs Debian's ``libosmesa6``;
- ``egl``: EGL, on a GPU when the machine has one, else Mesa's software EGL (``libegl1``, ``libegl-mesa0``);
- ``glfw``: a window-system context (needs a display).

PyOpenGL binds one platform per process, so a process renders with one backend only.
"""

from __future__ import annotations

import functools
import os

BACKENDS = ("osmesa", "egl", "glfw")
DEFAULT_BACKEND = "osmesa"

_INSTALL_HINT = {
    "osmesa": "install Debian's libosmesa6 (apt-get install -y libosmesa6), or set MUJOCO_GL=egl",
    "egl": "install Debian's libegl1 and libegl-mesa0 (or a GPU driver with EGL), or set MUJOCO_GL=osmesa",
    "glfw": "glfw needs a display; on a headless machine set MUJOCO_GL=osmesa or egl",
}


class RenderBackendError(RuntimeError):
    """No offscreen GL context could be made; the message says what to install."""


def backend() -> str:
    """The backend ``$MUJOCO_GL`` names (osmesa when unset)."""
    name = os.environ.get("MUJOCO_GL", "").strip().lower() or DEFAULT_BACKEND
    if name not in BACKENDS:
        raise RenderBackendError(f"MUJOCO_GL={name!r} cannot render offscreen here; use one of {', '.join(BACKENDS)}")
    return name


@functools.lru_cache(maxsize=1)
def _context_class(name: str):
    try:
        if name == "osmesa":
            from mujoco.osmesa import GLContext
        elif name == "egl":
            from mujoco.egl import GLContext
        else:
            from mujoco.glfw import GLContext
    except Exception as exc:  # ImportError, or PyOpenGL failing to load the platform library
        raise RenderBackendError(f"the {name} GL backend is unavailable ({type(exc).__name__}: {exc}); "
                                 f"{_INSTALL_HINT[name]}") from exc
    return GLContext


def make_context(width: int, height: int):
    """A current GL context able to render ``width`` x ``height`` offscreen."""
    name = backend()
    cls = _context_class(name)
    try:
        ctx = cls(width, height)
        ctx.make_current()
    except Exception as exc:
        raise RenderBackendError(f"could not create a {name} GL context ({type(exc).__name__}: {exc}); "
                                 f"{_INSTALL_HINT[name]}") from exc
    return ctx
