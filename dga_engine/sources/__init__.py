"""Source datasets (DexGraspNet, UniDexGrasp, MultiDex, RealDex, the DGA release, GRAB) read as they ship.

- :mod:`~dga_engine.sources.safeload`: loading their pickles (npy/npz/pkl/pt) through an allowlist;
- :mod:`~dga_engine.sources.kinematics`: their hand models (data tables + numpy FK) and the FK-checked
  conversion of their poses into the engine's convention;
- one loader module per format (:mod:`.dexgraspnet`, :mod:`.unidexgrasp`, :mod:`.multidex`, :mod:`.realdex`,
  :mod:`.dga`, :mod:`.grab`), each yielding :class:`~dga_engine.sources.base.GraspBatch` es in the engine's convention;
- :mod:`~dga_engine.sources.curate`: the ``curate`` stage (objects ingested, grasps written as candidates).
"""

from dga_engine.sources.base import GraspBatch, SourceObject, UnitResult
from dga_engine.sources.curate import SOURCES, CurateConfig, CurateError, CurateReport, curate, make_loader
from dga_engine.sources.kinematics import PoseConverter, SourceHand, converter, source_hand
from dga_engine.sources.safeload import SourceFileError, UnsafeSourceFile

__all__ = [
    "SOURCES", "CurateConfig", "CurateError", "CurateReport", "curate", "make_loader",
    "GraspBatch", "SourceObject", "UnitResult",
    "PoseConverter", "SourceHand", "converter", "source_hand",
    "SourceFileError", "UnsafeSourceFile",
]  # fmt: skip
