"""The ShadowHand: MJCF from gymnasium-robotics, torch kinematics, point sets, rotation conversions."""

from dga_engine.hand.joints import dict_to_joints, joints_to_dict
from dga_engine.hand.mjcf import JOINT_NAMES
from dga_engine.hand.model import POSE_CONVENTION, HandFK, HandModel, default_hand

__all__ = ["JOINT_NAMES", "POSE_CONVENTION", "HandFK", "HandModel", "default_hand", "joints_to_dict", "dict_to_joints"]
