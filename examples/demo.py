"""torpor's demo: save and restore two realistic application sessions, next to pickle.

    pip install . && python examples/demo.py [--mb 256] [--atoms 100000]

1. A Mosaic-like segmentation workspace (examples/segmentation.py): a smooth
   tomogram, point clouds with normals, fitted meshes sharing their clusters.
2. A molecular-viewer session (examples/viewer.py): structures with residues and
   atoms, a selection and a camera sharing the structures.

Each is saved with Session.save, restored into a fresh Session, checked equal
(values, dtypes, shapes, shared references), and compared with pickling the same
state managers. Then the session file is inspected without restoring it.
"""

import argparse
import io
import os
import pickle
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import segmentation  # noqa: E402
import viewer  # noqa: E402

import torpor  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def pickle_roundtrip(session, path):
    state = session.state_managers

    def save():
        with open(path, "wb") as f:
            pickle.dump(state, f, protocol=5)

    def load():
        with open(path, "rb") as f:
            return pickle.load(f)
    _, ts = timed(save)
    _, tl = timed(load)
    return ts, tl, os.path.getsize(path)


def run(name, build, check, app, folder, **save_kw):
    session, t_build = timed(build)
    path = os.path.join(folder, f"{name}.torpor")
    n, t_save = timed(lambda: session.save(path, **save_kw))
    fresh = torpor.Session(app)
    _, t_load = timed(lambda: fresh.restore(path))
    check(session, fresh)
    p_save, p_load, p_size = pickle_roundtrip(session, os.path.join(folder, f"{name}.pkl"))
    size = os.path.getsize(path)
    print(f"\n{name}: built in {t_build:.2f} s; {len(session.state_managers)} state managers, "
          f"{n} named objects")
    print(f"  {'':<8}{'save s':>9}{'restore s':>11}{'file MiB':>10}")
    print(f"  {'torpor':<8}{t_save:>9.2f}{t_load:>11.2f}{size / 2**20:>10.1f}")
    print(f"  {'pickle':<8}{p_save:>9.2f}{p_load:>11.2f}{p_size / 2**20:>10.1f}")
    print("  restored into a fresh session: equal values, dtypes and shapes; shared "
          "references shared again")
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="size of the segmentation workspace")
    ap.add_argument("--atoms", type=int, default=100_000, help="atoms in the viewer session")
    a = ap.parse_args(argv)
    print(f"torpor {torpor.__version__} ({torpor.implementation} walker)")
    folder = tempfile.mkdtemp(prefix="torpor-demo-")
    seg = run("segmentation", lambda: segmentation.build(a.mb), segmentation.check_equal,
              "segmentation", folder, include_maps=True)
    run("viewer", lambda: viewer.build(a.atoms), viewer.check_equal, "viewer", folder)

    print(f"\nchecksums verified: {torpor.verify(seg)} sections of {seg}")
    tree = torpor.open_session(seg)
    print(f"open_session (nothing restored, no application class needed): "
          f"{len(tree['objects'])} named objects, managers {list(tree['managers'])}, "
          f"created {tree['metadata']['created']}")
    text = io.StringIO()
    torpor.session.sdump(None, seg, output=text)
    lines = text.getvalue().splitlines()
    print("torpor dump (first lines):")
    print("\n".join("  " + ln for ln in lines[:14]))
    print(f"  ... ({len(lines) - 14} more lines)")


if __name__ == "__main__":
    main()
