"""Human hands to the ShadowHand: MANO read safely, 21 keypoints, AnyTeleop position retargeting.

- :mod:`~dga_engine.retarget.keypoints`: the 21-keypoint layout and where each keypoint sits on MANO and on the robot;
- :mod:`~dga_engine.retarget.mano`: the user's licensed ``MANO_RIGHT.pkl``, read by the restricted unpickler and
  posed by ``smplx``;
- :mod:`~dga_engine.retarget.urdf`: a kinematics-only URDF of the engine's hand, generated from the MJCF;
- :mod:`~dga_engine.retarget.engine`: ``dex-retargeting``'s position retargeting on it, in worker processes.

Heavy imports (torch, smplx, dex-retargeting, pinocchio) happen inside the functions that need them.
"""

from dga_engine.retarget.engine import RetargetConfig, Retargeter, RetargetError, RetargetResult, retarget

__all__ = ["RetargetConfig", "RetargetError", "RetargetResult", "Retargeter", "retarget"]
