"""dga-engine: builds and grows a DexGrasp-Anything-style dataset of ShadowHand grasps."""

__version__ = "0.1.0"
