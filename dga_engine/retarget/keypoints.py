"""The 21 hand keypoints retargeting works on, and where each sits on the human and on the robot hand.

Keypoints are in MediaPipe order (what hand trackers, DexYCB and HOI4D give, and what dex-retargeting
indexes): 0 wrist; 1-4 thumb (CMC, MCP, IP, tip); 5-8 index (MCP, PIP, DIP, tip); 9-12 middle;
13-16 ring; 17-20 little. From MANO they are its 16 joints (J_regressor) reordered, plus the fingertip
vertices 744 (thumb), 320 (index), 443 (middle), 554 (ring), 671 (little).
"""

from __future__ import annotations

N_KEYPOINTS = 21

# MANO joints: 0 wrist, 1-3 index, 4-6 middle, 7-9 little, 10-12 ring, 13-15 thumb; 16-20 the fingertip
# vertices below in their order. MANO_TO_MEDIAPIPE[k] is the MANO index of keypoint k.
FINGERTIP_VERTICES: tuple[int, ...] = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, little
MANO_TO_MEDIAPIPE: tuple[int, ...] = (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20)

# The robot point of each keypoint: a link origin of the generated URDF (= the MJCF body) or a fingertip
# site. The finger's first keypoint (MCP) is the knuckle/proximal origin; the human wrist is the palm
# origin (the WRJ0 axis), the thumb CMC the thumb base.
ROBOT_KEYPOINT_LINKS: tuple[str, ...] = (
    "palm",
    "thbase", "thmiddle", "thdistal", "thtip",
    "ffproximal", "ffmiddle", "ffdistal", "fftip",
    "mfproximal", "mfmiddle", "mfdistal", "mftip",
    "rfproximal", "rfmiddle", "rfdistal", "rftip",
    "lfproximal", "lfmiddle", "lfdistal", "lftip",
)  # fmt: skip

# AnyTeleop's position retargeting of the ShadowHand (dex-retargeting's shadow_hand_right config): the
# five fingertips and the five middle phalanges follow these keypoints.
TARGET_LINKS: tuple[str, ...] = (
    "thtip",
    "fftip",
    "mftip",
    "rftip",
    "lftip",
    "thmiddle",
    "ffmiddle",
    "mfmiddle",
    "rfmiddle",
    "lfmiddle",
)
TARGET_HUMAN_INDICES: tuple[int, ...] = (4, 8, 12, 16, 20, 2, 6, 10, 14, 18)

# Fingertip error is reported per finger in this order, as the engine orders fingertips.
TIP_NAMES: tuple[str, ...] = ("ff", "mf", "rf", "lf", "th")
TIP_KEYPOINTS: tuple[int, ...] = (8, 12, 16, 20, 4)

# Rigid in the human hand's wrist frame (MANO's MCP joints and thumb CMC hang off the wrist joint), so a
# frame fitted to them is the wrist pose: the root's warm start aligns these with the robot's.
PALM_KEYPOINTS: tuple[int, ...] = (0, 1, 5, 9, 13, 17)
