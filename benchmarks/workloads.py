"""Seeded generators of the benchmark workloads.

array_heavy: a segmentation-workspace-like container of point clouds, normals,
meshes and smooth volumes (float32/float64/int32), inside dicts and small objects.
object_heavy: a molecular model set: residues and atoms with a name, serial,
coordinate tuple and a back-reference to their shared residue.
"""

import numpy as np


class Geometry:
    def __init__(self, name, points, normals, color, visible=True):
        self.name = name
        self.points = points
        self.normals = normals
        self.color = color
        self.visible = visible


class Mesh:
    def __init__(self, vertices, faces):
        self.vertices = vertices
        self.faces = faces


class Residue:
    def __init__(self, name, number, chain):
        self.name = name
        self.number = number
        self.chain = chain
        self.atoms = []


class Atom:
    def __init__(self, name, serial, coord, residue):
        self.name = name
        self.serial = serial
        self.coord = coord
        self.residue = residue


def _smooth_volume(rng, n, dtype):
    # a smooth field: a few gaussian blobs on a grid (like a filtered density map)
    ax = np.linspace(-1, 1, n, dtype=np.float32)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij", sparse=True)
    v = np.zeros((n, n, n), dtype=np.float32)
    for _ in range(4):
        c = rng.uniform(-0.6, 0.6, 3).astype(np.float32)
        w = np.float32(rng.uniform(0.1, 0.4))
        v += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * w * w))
    return v.astype(dtype)


def array_heavy(total_mb=1024, seed=0):
    """About ``total_mb`` MiB of arrays in a few hundred arrays."""
    rng = np.random.default_rng(seed)
    budget = total_mb << 20
    ws = {"volumes": {}, "geometries": [], "meshes": [], "meta": {"pixel_size": 13.48, "seed": seed}}
    used = 0
    i = 0
    while used < budget:
        kind = i % 4
        if kind == 0:
            n = int(min(160, max(24, round((budget // 12) ** (1 / 3) * 0.9))))
            vol = _smooth_volume(rng, n, np.float32)
            ws["volumes"][f"tomogram_{i}"] = vol
            used += vol.nbytes
        elif kind in (1, 2):
            m = int(min(2_000_000, max(1000, budget // 300 // 24)))
            center = rng.uniform(0, 500, 3)
            theta = rng.uniform(0, np.pi, m)
            phi = rng.uniform(0, 2 * np.pi, m)
            r = 50 + rng.normal(0, 0.5, m)
            pts = np.stack([r * np.sin(theta) * np.cos(phi), r * np.sin(theta) * np.sin(phi),
                            r * np.cos(theta)], axis=1) + center
            pts = np.round(pts, 2)          # coordinates on a pixel grid, as picked
            normals = (pts - center) / r[:, None]
            g = Geometry(f"membrane_{i}", pts.astype(np.float32), normals.astype(np.float32),
                         (0.3, 0.5, 0.9, 1.0))
            ws["geometries"].append(g)
            used += g.points.nbytes + g.normals.nbytes
        else:
            nv = int(min(1_000_000, max(1000, budget // 300 // 24)))
            verts = rng.uniform(0, 500, (nv, 3)).astype(np.float64).round(1)
            faces = np.sort(rng.integers(0, nv, (2 * nv, 3)), axis=1).astype(np.int32)
            ws["meshes"].append(Mesh(verts, faces))
            used += verts.nbytes + faces.nbytes
        i += 1
    return ws


def object_heavy(n_atoms=500_000, seed=0):
    rng = np.random.default_rng(seed)
    names = ["N", "CA", "C", "O", "CB"]
    resnames = ["ALA", "GLY", "SER", "LEU", "LYS"]
    coords = rng.uniform(-50, 50, (n_atoms, 3)).round(3).tolist()
    residues, atoms = [], []
    res = None
    for k in range(n_atoms):
        if k % 5 == 0:
            res = Residue(resnames[(k // 5) % 5], k // 5, "A")
            residues.append(res)
        c = coords[k]
        a = Atom(names[k % 5], k, (c[0], c[1], c[2]), res)
        res.atoms.append(a)
        atoms.append(a)
    return {"structure": {"name": "1abc", "residues": residues, "atoms": atoms}}


WORKLOAD_CLASSES = ["benchmarks.workloads.*"]


def mixed(n_entries=20_000, seed=0):
    """An experiment log: a list of dicts of small arrays, strings and numbers,
    with a shared config dict referenced from every run."""
    rng = np.random.default_rng(seed)
    config = {"lr": 1e-3, "batch": 64, "optimizer": "adam", "tags": ["baseline", "v2"]}
    runs = []
    for i in range(n_entries):
        runs.append({
            "run": i, "name": f"run-{i:06d}", "status": ("ok", "failed", "killed")[i % 3],
            "loss": rng.standard_normal(32).astype(np.float32).cumsum(),
            "metrics": {"acc": float(rng.uniform()), "f1": float(rng.uniform()), "steps": int(rng.integers(1e6))},
            "hist": rng.integers(0, 100, 16, dtype=np.int32),
            "notes": "" if i % 5 else f"checkpoint at step {i * 100}",
            "config": config,
        })
    return {"config": config, "runs": runs, "summary": {"n": n_entries, "seed": seed}}


def incompressible(total_mb=256, seed=0):
    """Random float64 arrays: compression cannot win here."""
    rng = np.random.default_rng(seed)
    n = max(1, total_mb // 16)
    per = (total_mb << 20) // n // 8
    return {f"sample_{i}": rng.standard_normal(per) for i in range(n)}
