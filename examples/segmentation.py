"""A Mosaic-like segmentation workspace built on torpor's State API.

State managers (as Mosaic's session holds them):
  data    DataContainer of clusters: point clouds with normals picked from a
          tomogram segmentation
  models  DataContainer of fitted models: meshes (vertices, faces) with the
          point cloud they were fitted to (a shared reference into ``data``)
  volume  Volume: the tomogram the workspace segments (a smooth float32 map) and
          its pixel size

Each Geometry has an integer ``uid``, its arrays, visibility, colour and free-form
metadata. On a combined restore, geometries whose uid collides with one already
in the workspace get fresh uids (the manager renumbers them, as the session's
``restore_options`` ask).
"""

import numpy as np

import torpor


class Geometry(torpor.State):
    """One object of the object browser: points (float32, n x 3), optional
    normals, an optional mesh, visibility, RGBA colour and metadata."""

    def __init__(self, uid, name, points, normals=None, vertices=None, faces=None,
                 visible=True, color=(0.7, 0.7, 0.7, 1.0), source=None, meta=None):
        self.uid = uid
        self.name = name
        self.points = points
        self.normals = normals
        self.vertices = vertices
        self.faces = faces
        self.visible = visible
        self.color = tuple(color)
        self.source = source        # the Geometry a model was fitted to (shared)
        self.meta = dict(meta or {})
    # the default take_snapshot / restore_snapshot (a copy of the instance dict,
    # arrays and the shared ``source`` not copied) are exactly right here


class DataContainer(torpor.StateManager):
    def __init__(self, geometries=()):
        self.geometries = list(geometries)

    def next_uid(self):
        return max((g.uid for g in self.geometries), default=0) + 1

    def add(self, g):
        self.geometries.append(g)
        return g

    def take_snapshot(self, session, flags):
        return {"geometries": list(self.geometries)}

    @classmethod
    def restore_snapshot(cls, session, data):
        return cls(data["geometries"])

    def reset_state(self, session):
        self.geometries = []


def _combining(tag):
    """restore_snapshot for a DataContainer under ``tag``: merges into the
    current one on a combined restore, renumbering uids that collide."""
    def restore(cls, session, data):
        incoming = data["geometries"]
        current = session.get_state_manager(tag)
        if not session.restore_options.get("combine") or current is None:
            return cls(incoming)
        taken = {g.uid for g in current.geometries}
        uid = max(taken, default=0)
        for g in incoming:
            if g.uid in taken:
                uid += 1
                while uid in taken:
                    uid += 1
                g.meta["renumbered_from"] = g.uid
                g.uid = uid
            taken.add(g.uid)
        return cls(current.geometries + incoming)
    return classmethod(restore)


class Clusters(DataContainer):
    restore_snapshot = _combining("data")


class Models(DataContainer):
    restore_snapshot = _combining("models")


class Volume(torpor.StateManager):
    def __init__(self, data=None, pixel_size=1.0):
        self.data = data
        self.pixel_size = pixel_size

    def take_snapshot(self, session, flags):
        # the map is large: only with State.INCLUDE_MAPS, as ChimeraX does
        return {"data": self.data if flags & torpor.State.INCLUDE_MAPS else None,
                "shape": None if self.data is None else self.data.shape,
                "pixel_size": self.pixel_size}

    @classmethod
    def restore_snapshot(cls, session, data):
        return cls(data["data"], data["pixel_size"])

    def reset_state(self, session):
        self.data = None
        self.pixel_size = 1.0


def _sphere_cloud(rng, m, center, radius, pixel):
    theta = rng.uniform(0, np.pi, m)
    phi = rng.uniform(0, 2 * np.pi, m)
    r = radius + rng.normal(0, 0.5, m)
    unit = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], 1)
    pts = np.round((unit * r[:, None] + center) / pixel) * pixel     # on the voxel grid
    return pts.astype(np.float32), unit.astype(np.float32)


def _sphere_mesh(n, center, radius):
    """A UV sphere: (n*n, 3) float32 vertices, (2*n*(n-1), 3) int32 faces."""
    u = np.linspace(0, np.pi, n)
    v = np.linspace(0, 2 * np.pi, n, endpoint=False)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    verts = np.stack([np.sin(uu) * np.cos(vv), np.sin(uu) * np.sin(vv), np.cos(uu)], -1)
    verts = (verts.reshape(-1, 3) * radius + center).astype(np.float32)
    i, j = np.meshgrid(np.arange(n - 1), np.arange(n), indexing="ij")
    a = i * n + j
    b = i * n + (j + 1) % n
    c = (i + 1) * n + j
    d = (i + 1) * n + (j + 1) % n
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                            np.stack([b, d, c], -1).reshape(-1, 3)]).astype(np.int32)
    return verts, faces


def _smooth_volume(rng, n):
    ax = np.linspace(-1, 1, n, dtype=np.float32)
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij", sparse=True)
    vol = np.zeros((n, n, n), np.float32)
    for _ in range(6):
        c = rng.uniform(-0.7, 0.7, 3).astype(np.float32)
        w = np.float32(rng.uniform(0.08, 0.3))
        vol += np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * w * w))
    return vol


def build(total_mb=256, seed=0):
    """A workspace of about ``total_mb`` MiB: a volume (a quarter of it), then
    clusters and fitted meshes sharing the rest."""
    rng = np.random.default_rng(seed)
    session = torpor.Session("segmentation")
    session.data = Clusters()
    session.models = Models()
    pixel = 13.48
    n = int(round(((total_mb << 20) // 4 // 4) ** (1 / 3)))
    session.volume = Volume(_smooth_volume(rng, max(8, n)), pixel_size=pixel)
    budget = (total_mb << 20) - session.volume.data.nbytes
    per = max(2000, min(1_000_000, budget // 40 // 24))
    used = 0
    while used < budget:
        center = rng.uniform(500, 5000, 3)
        radius = rng.uniform(200, 800)
        pts, normals = _sphere_cloud(rng, per, center, radius, pixel)
        g = session.data.add(Geometry(session.data.next_uid(), f"membrane {len(session.data.geometries)}",
                                      pts, normals, color=tuple(rng.uniform(0, 1, 3)) + (1.0,),
                                      meta={"picked_by": "template matching", "score": float(rng.uniform())}))
        verts, faces = _sphere_mesh(int(np.sqrt(per / 8)) + 2, center, radius)
        session.models.add(Geometry(session.models.next_uid(), f"fit of {g.name}", verts,
                                    vertices=verts, faces=faces, source=g,
                                    visible=bool(rng.integers(0, 2)),
                                    meta={"method": "sphere", "radius": float(radius)}))
        used += pts.nbytes + normals.nbytes + verts.nbytes + faces.nbytes
    session.metadata["description"] = "segmentation example"
    return session


def check_equal(a, b, include_maps=True):
    """Assert that session ``b`` restores session ``a`` exactly."""
    for tag in ("data", "models"):
        ga, gb = getattr(a, tag).geometries, getattr(b, tag).geometries
        assert len(ga) == len(gb), (tag, len(ga), len(gb))
        for x, y in zip(ga, gb):
            assert type(y) is Geometry and (x.uid, x.name, x.visible, x.color, x.meta) == \
                (y.uid, y.name, y.visible, y.color, y.meta)
            for k in ("points", "normals", "vertices", "faces"):
                u, v = getattr(x, k), getattr(y, k)
                assert (u is None) == (v is None), k
                if u is not None:
                    assert u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v), k
    # a model's source is the very cluster object in ``data``, and a model whose
    # points are its vertices still shares them
    for m in b.models.geometries:
        assert any(m.source is g for g in b.data.geometries)
        assert m.points is m.vertices
    if include_maps:
        assert np.array_equal(a.volume.data, b.volume.data) and b.volume.data.dtype == np.float32
    assert b.volume.pixel_size == a.volume.pixel_size
