import math

import numpy as np
import pytest
import torch

from dga_engine.hand import rotations as R
from dga_engine.hand.joints import dict_to_joints, joints_to_dict


@pytest.fixture
def rots():
    return R.random_rotations(64, torch.Generator().manual_seed(0), torch.float64)


def test_quat_round_trip(rots):
    q = R.matrix_to_quat(rots)
    assert (q[:, 0] >= 0).all()
    assert torch.allclose(R.quat_to_matrix(q), rots, atol=1e-10)


def test_quat_known_value():
    # 90 degrees about z: x -> y
    q = torch.tensor([math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)], dtype=torch.float64)
    m = R.quat_to_matrix(q)
    assert torch.allclose(
        m @ torch.tensor([1.0, 0, 0], dtype=torch.float64), torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12
    )


def test_rot6d_round_trip_and_unnormalised_input(rots):
    d6 = R.matrix_to_rot6d(rots)
    assert torch.allclose(d6[:, :3], rots[:, :, 0])
    assert torch.allclose(R.rot6d_to_matrix(d6), rots, atol=1e-10)
    assert torch.allclose(R.rot6d_to_matrix(d6 * 3.0), rots, atol=1e-10)


def test_axis_angle_round_trip(rots):
    aa = R.matrix_to_axis_angle(rots)
    assert (aa.norm(dim=-1) <= math.pi + 1e-9).all()
    assert torch.allclose(R.axis_angle_to_matrix(aa), rots, atol=1e-9)
    assert torch.allclose(
        R.axis_angle_to_matrix(torch.zeros(3, dtype=torch.float64)), torch.eye(3, dtype=torch.float64)
    )


def test_axis_angle_gradient_at_zero_is_finite():
    aa = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    R.axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()


def test_euler_sxyz_matches_definition_and_round_trips():
    a, b, c = 0.3, -0.4, 1.2
    m = R.euler_to_matrix(torch.tensor([a, b, c], dtype=torch.float64), "sxyz")
    expected = (
        R._rz(torch.tensor(c, dtype=torch.float64))
        @ R._ry(torch.tensor(b, dtype=torch.float64))
        @ R._rx(torch.tensor(a, dtype=torch.float64))
    )
    assert torch.allclose(m, expected)
    assert torch.allclose(R.matrix_to_euler_sxyz(m), torch.tensor([a, b, c], dtype=torch.float64), atol=1e-12)
    # rotating axes are the static ones in reverse order
    assert torch.allclose(R.euler_to_matrix(torch.tensor([c, b, a], dtype=torch.float64), "rzyx"), m, atol=1e-12)
    with pytest.raises(ValueError):
        R.euler_to_matrix(torch.zeros(3), "xyz")


def test_rotation_gradcheck():
    x = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(R.rot6d_to_matrix, (x,))
    q = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(R.quat_to_matrix, (q,))


def test_joint_dict_round_trip():
    v = np.linspace(-0.5, 0.5, 24)
    d = joints_to_dict(v, prefix="robot0:")
    assert list(d)[0] == "robot0:WRJ1" and list(d)[-1] == "robot0:THJ0"
    assert np.allclose(dict_to_joints(d), v)
    with pytest.raises(KeyError, match="missing"):
        dict_to_joints({k: v for k, v in list(d.items())[:-1]})
