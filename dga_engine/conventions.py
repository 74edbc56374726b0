"""The pose convention of every grasp record, in one torch-free place (the dataset metadata embeds it).

- the **root frame** is the MJCF body ``robot0:forearm`` of the gymnasium-robotics ShadowHand (the wrist
  joints WRJ1/WRJ0 come after it); a grasp's translation ``t`` (metres) and rotation ``R`` place that frame
  in the object frame: ``p_object = R @ p_forearm + t``;
- rotations are stored as unit quaternions **wxyz** (scalar first) with ``w >= 0``;
- the 24 joint angles are radians in :data:`JOINT_NAMES` order, with that MJCF's signs and zeros
  (fingers flex toward the forearm frame's ``-y``).
"""

from __future__ import annotations

# The 24 hinge joints, in the order every grasp record stores them.
JOINT_NAMES: tuple[str, ...] = (
    "WRJ1", "WRJ0",
    "FFJ3", "FFJ2", "FFJ1", "FFJ0",
    "MFJ3", "MFJ2", "MFJ1", "MFJ0",
    "RFJ3", "RFJ2", "RFJ1", "RFJ0",
    "LFJ4", "LFJ3", "LFJ2", "LFJ1", "LFJ0",
    "THJ4", "THJ3", "THJ2", "THJ1", "THJ0",
)  # fmt: skip

POSE_CONVENTION = {
    "hand": "ShadowHand, gymnasium-robotics MJCF (envs/assets/hand/robot.xml)",
    "root_frame": "robot0:forearm body frame; p_object = R @ p_forearm + t",
    "translation_units": "metres",
    "rotation_encoding": "quaternion wxyz (scalar first), unit, w >= 0",
    "joint_units": "radians",
    "joint_order": list(JOINT_NAMES),
    "object_frame": "object mesh frame as stored under objects/<id>/ (metres), times object_scale",
}
