"""MultiDex (GenDexGrasp), ShadowHand subset, as downloaded.

Layout under the source root (``<root>/sources/multidex``)::

    [MultiDex/]shadowhand/shadowhand.pt   torch.save {'info': {..., 'num_per_object'},
                                          'metadata': [(q tensor[33], object_name, robot_name), ...]}
    [data/]object/{contactdb,ycb}/<name>/<name>.stl   metric object meshes; object_name is 'contactdb+<name>'

``q`` = translation (3) + 6D rotation (first two columns of R, not normalised; decoded the way the
source's model decodes it) + 24 joints in pytorch_kinematics order of the sr_grasp_description URDF
(root link ``forearm``): ``p_object = R @ p_forearm + t``. The DGA variant ``MultiDex_UR``
(``(q[33], object_rot_mat, object_name)``, object rotated by ``object_rot_mat``) is read as well.
Split: GenDexGrasp's 48 training / 10 test objects (the test list below; every other object is train).
"""

from __future__ import annotations

from pathlib import Path

from dga_engine.sources.base import SourceObject, UnitResult, find_mesh, label_from_key, rel
from dga_engine.sources.dga import HAND_MODEL, batches_from_decoded, decode_records, load_release_file, release_files

# The objects GenDexGrasp (and the DGA code) hold out for testing.
TEST_OBJECTS = frozenset({
    "contactdb+apple", "contactdb+camera", "contactdb+cylinder_medium", "contactdb+rubber_duck",
    "contactdb+door_knob", "contactdb+water_bottle", "ycb+baseball", "ycb+pear", "ycb+potted_meat_can",
    "ycb+tomato_soup_can",
})  # fmt: skip


class MultiDexLoader:
    name = "multidex"
    licence = "see MultiDex/GenDexGrasp (object meshes: ContactDB, YCB)"
    hand_model = HAND_MODEL

    def __init__(self, root: Path, verify: int = 64, mesh_dirs: tuple[Path, ...] = ()) -> None:
        self.root = Path(root)
        self.verify = verify
        self.mesh_dirs = tuple(Path(p) for p in mesh_dirs)

    def units(self) -> list[str]:
        return [rel(self.root, p) for p in release_files(self.root, ("shadowhand*.pt",))]

    def object(self, key: str) -> SourceObject:
        search = [self.root, self.root / "MultiDex", *self.mesh_dirs]
        mesh = find_mesh(key, search)
        dataset = key.split("+", 1)[0] if "+" in key else ""
        return SourceObject(key=key, label=label_from_key(key), mesh_path=str(mesh) if mesh else None,
                            split="test" if key in TEST_OBJECTS else "train",
                            extra={"dataset": "MultiDex", "mesh_dataset": dataset})

    def load_unit(self, unit: str) -> UnitResult:
        path = self.root / unit
        result = UnitResult(unit)
        batches_from_decoded(decode_records(load_release_file(path), str(path), "none"), unit, result, self.verify)
        return result
