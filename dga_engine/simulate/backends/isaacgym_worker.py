"""Isaac Gym Preview 4 half of the ``isaacgym`` backend: a standalone script (Python 3.6-3.8 syntax).

NOT RUN IN DGA-ENGINE'S TEST ENVIRONMENT: written against the documented Preview 4 API (gymapi,
gymtorch) without an Isaac Gym install to test it on. It imports nothing from dga_engine, because Isaac
Gym runs only on Python <= 3.8 while dga-engine needs >= 3.11: the backend
(:mod:`dga_engine.simulate.backends.isaacgym_backend`) prepares a job folder and runs this file with the
interpreter named by ``$DGA_ISAACGYM_PYTHON`` (or imports it directly where ``isaacgym`` imports).

Job folder (written by the backend)::

    job.json    settings (below), the hand MJCF and object URDF file names
    hand.xml    the filter's ShadowHand MJCF (the scene's hand: servos removed, meshes absolute)
    object.urdf one link, one <collision>/<visual> per convex part (parts/part_###.obj, already scaled)
    grasps.npz  obj_pos (N,3), obj_quat_xyzw (N,4), joints (N,24), targets (N,24), dirs (N,6,3), dof_names (24,)

Output: ``result.npz`` with displacement (N,6) metres, closed_qpos (N,24) joint positions after closing,
closed_obj (N,7) object pose after closing (pos, quat xyzw), error (N,) bool.

Protocol (as the MuJoCo backend): one env per grasp; the hand actor fixed at the origin with PD DOF
targets; the object actor free at the inverse root pose with ``linear_damping`` / ``angular_damping``
(PhysX's own rigid-body damping, as the reference); gravity off; closing ``close_steps`` with the
targets; then per direction a constant force ``force`` N on the object, re-applied every step, at its
centre of mass (``apply_rigid_body_force_tensors``) or, with ``push_point`` "origin", at the body's
position (``apply_rigid_body_force_at_pos_tensors``, as the reference), for ``push_steps``, from the
closed state (restored through the state tensors) or, with ``sequential``, one after the other;
displacement = distance of the object root from the start of the push, its maximum over the push
(``displacement`` "max") or at its end ("end", as the reference).
"""

import json
import os
import sys

import numpy as np


def run_job(job_dir):
    import torch
    from isaacgym import gymapi, gymtorch  # noqa: F401 - isaacgym must be imported before torch

    with open(os.path.join(job_dir, "job.json")) as fh:
        job = json.load(fh)
    g = np.load(os.path.join(job_dir, "grasps.npz"))
    n = int(g["joints"].shape[0])
    device = job.get("device", "cuda:0")

    gym = gymapi.acquire_gym()
    sp = gymapi.SimParams()
    sp.dt = float(job["dt"])
    sp.substeps = 1
    sp.up_axis = gymapi.UP_AXIS_Z
    sp.gravity = gymapi.Vec3(0.0, 0.0, 0.0)
    sp.use_gpu_pipeline = device.startswith("cuda")
    sp.physx.solver_type = 1  # TGS, as the reference
    sp.physx.num_position_iterations = int(job["position_iterations"])
    sp.physx.num_velocity_iterations = int(job["velocity_iterations"])
    sp.physx.contact_offset = 0.002
    sp.physx.rest_offset = 0.0
    sp.physx.bounce_threshold_velocity = 0.2
    sp.physx.max_depenetration_velocity = 1000.0
    sp.physx.use_gpu = sp.use_gpu_pipeline
    sp.physx.num_threads = 1
    gpu = int(device.split(":")[1]) if ":" in device else 0
    sim = gym.create_sim(gpu, -1, gymapi.SIM_PHYSX, sp)
    if sim is None:
        raise RuntimeError("Isaac Gym could not create a PhysX simulation (GPU/driver?)")

    ho = gymapi.AssetOptions()
    ho.fix_base_link = True
    ho.disable_gravity = True
    ho.collapse_fixed_joints = False
    ho.default_dof_drive_mode = int(gymapi.DOF_MODE_POS)
    ho.thickness = 0.0
    hand_asset = gym.load_asset(sim, job_dir, job["hand_file"], ho)
    oo = gymapi.AssetOptions()
    oo.density = float(job["density"])
    oo.override_com = True
    oo.override_inertia = True
    oo.vhacd_enabled = False  # the parts are already convex
    oo.disable_gravity = True
    oo.linear_damping = float(job.get("linear_damping", 0.0))
    oo.angular_damping = float(job.get("angular_damping", 0.0))
    obj_asset = gym.load_asset(sim, job_dir, job["object_file"], oo)

    dof_names = list(gym.get_asset_dof_names(hand_asset))
    order = [dof_names.index(str(name)) for name in g["dof_names"]]  # our joint k -> Isaac DOF index
    n_dof = len(dof_names)
    props = gym.get_asset_dof_properties(hand_asset)
    props["driveMode"][:] = gymapi.DOF_MODE_POS
    props["stiffness"][:] = float(job["kp"])
    props["damping"][:] = float(job["kd"])
    if job["force_limit"] > 0:
        props["effort"][:] = float(job["force_limit"])

    spacing = 1.0
    lower, upper = gymapi.Vec3(-spacing, -spacing, -spacing), gymapi.Vec3(spacing, spacing, spacing)
    per_row = int(np.ceil(np.sqrt(n)))
    hand_bodies = gym.get_asset_rigid_body_count(hand_asset)
    obj_body_in_env = hand_bodies  # the object actor is created after the hand: its body comes next
    for i in range(n):
        env = gym.create_env(sim, lower, upper, per_row)
        # group i, filter 0: self-collision on
        hand = gym.create_actor(env, hand_asset, gymapi.Transform(), "hand", i, 0)
        gym.set_actor_dof_properties(env, hand, props)
        pose = gymapi.Transform()
        pose.p = gymapi.Vec3(*[float(x) for x in g["obj_pos"][i]])
        pose.r = gymapi.Quat(*[float(x) for x in g["obj_quat_xyzw"][i]])
        obj = gym.create_actor(env, obj_asset, pose, "object", i, 0)
        shapes = gym.get_actor_rigid_shape_properties(env, obj)
        for s in shapes:
            s.friction = float(job["friction"])
        gym.set_actor_rigid_shape_properties(env, obj, shapes)
    gym.prepare_sim(sim)

    root = gymtorch.wrap_tensor(gym.acquire_actor_root_state_tensor(sim)).view(n, 2, 13)
    dofs = gymtorch.wrap_tensor(gym.acquire_dof_state_tensor(sim)).view(n, n_dof, 2)
    bodies_per_env = hand_bodies + gym.get_asset_rigid_body_count(obj_asset)

    joints = torch.tensor(g["joints"], dtype=torch.float32, device=root.device)
    targets = torch.tensor(g["targets"], dtype=torch.float32, device=root.device)
    q0 = torch.zeros((n, n_dof), device=root.device)
    tgt = torch.zeros((n, n_dof), device=root.device)
    q0[:, order] = joints
    tgt[:, order] = targets
    dofs[:, :, 0] = q0
    dofs[:, :, 1] = 0.0
    root[:, 1, 0:3] = torch.tensor(g["obj_pos"], dtype=torch.float32, device=root.device)
    root[:, 1, 3:7] = torch.tensor(g["obj_quat_xyzw"], dtype=torch.float32, device=root.device)
    root[:, 1, 7:13] = 0.0
    gym.set_dof_state_tensor(sim, gymtorch.unwrap_tensor(dofs))
    gym.set_actor_root_state_tensor(sim, gymtorch.unwrap_tensor(root))
    gym.set_dof_position_target_tensor(sim, gymtorch.unwrap_tensor(tgt.contiguous()))

    bodies = gymtorch.wrap_tensor(gym.acquire_rigid_body_state_tensor(sim))  # (n * bodies_per_env, 13)
    at_origin = job.get("push_point", "com") == "origin"

    def step(forces=None):
        if forces is not None:
            if at_origin:
                gym.refresh_rigid_body_state_tensor(sim)
                where = bodies[:, 0:3].contiguous()
                gym.apply_rigid_body_force_at_pos_tensors(
                    sim, gymtorch.unwrap_tensor(forces), gymtorch.unwrap_tensor(where), gymapi.ENV_SPACE
                )
            else:
                gym.apply_rigid_body_force_tensors(sim, gymtorch.unwrap_tensor(forces), None, gymapi.ENV_SPACE)
        gym.simulate(sim)
        gym.fetch_results(sim, True)
        gym.refresh_actor_root_state_tensor(sim)
        gym.refresh_dof_state_tensor(sim)

    for _ in range(int(job["close_steps"])):
        step()
    closed_root = root.clone()
    closed_dofs = dofs.clone()
    error = ~torch.isfinite(closed_root.reshape(n, -1)).all(dim=1)

    dirs = torch.tensor(g["dirs"], dtype=torch.float32, device=root.device)
    disp = torch.zeros((n, 6), device=root.device)
    for k in range(6):
        if not job["sequential"]:
            root[:] = closed_root
            dofs[:] = closed_dofs
            gym.set_actor_root_state_tensor(sim, gymtorch.unwrap_tensor(root))
            gym.set_dof_state_tensor(sim, gymtorch.unwrap_tensor(dofs))
        start = root[:, 1, 0:3].clone()
        forces = torch.zeros((n, bodies_per_env, 3), device=root.device)
        forces[:, obj_body_in_env, :] = float(job["force"]) * dirs[:, k, :]
        forces = forces.reshape(-1, 3).contiguous()
        best = torch.zeros(n, device=root.device)
        for _ in range(int(job["push_steps"])):
            step(forces)
            best = torch.maximum(best, (root[:, 1, 0:3] - start).norm(dim=1))
        end = (root[:, 1, 0:3] - start).norm(dim=1)
        disp[:, k] = end if job.get("displacement", "max") == "end" else best
    error |= ~torch.isfinite(disp).all(dim=1)

    np.savez(
        os.path.join(job_dir, "result.npz"),
        displacement=disp.cpu().numpy().astype(np.float64),
        closed_qpos=closed_dofs[:, order, 0].cpu().numpy().astype(np.float64),
        closed_obj=closed_root[:, 1, 0:7].cpu().numpy().astype(np.float64),
        error=error.cpu().numpy(),
    )
    gym.destroy_sim(sim)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python isaacgym_worker.py JOB_DIR")
    run_job(sys.argv[1])
