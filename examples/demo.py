"""torpor's demo: save and restore two realistic application sessions, next to pickle.

    pip install . && python examples/demo.py [--mb 256] [--atoms 100000]

1. A Mosaic-like segmentation workspace (examples/segmentation.py): a smooth
   tomogram, point clouds with normals, meshes fitted to them that share their
   point clouds.
2. A molecular-viewer session (examples/viewer.py): structures with residues and
   atoms, a selection and a camera that refer to the same structures.

Each is saved with Session.save, restored into a fresh Session, checked equal to
the original (values, dtypes, shapes, shared objects still shared), and compared
with pickling the same state. Where torpor is slower than pickle in this run the
demo says why, with the figures that show it. Finally the saved workspace is
checked and read back without its application's code.

Everything the demo writes goes into one temporary folder, removed at the end,
also after an error or Ctrl-C. Sizes are in MB of 2**20 bytes, as --mb counts them.
The exit status is 0 when every check passed, 1 when one failed, 130 on Ctrl-C
(2 for a wrong option).
"""

import argparse
import contextlib
import os
import pickle
import signal
import sys
import tempfile
import textwrap
import threading
import time
import traceback

sys.dont_write_bytecode = True     # no __pycache__ left next to the examples
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import segmentation  # noqa: E402
import viewer  # noqa: E402

import torpor  # noqa: E402

MB = 2**20


class CheckFailed(Exception):
    """The restored session is not the one saved."""


# --- words for figures ------------------------------------------------------------

def secs(t):
    return f"{t:.2f} s" if t >= 0.1 else f"{t:.3f} s"


def mb(n):
    return f"{n / MB:.1f} MB" if n >= MB else f"{n / MB:.2f} MB"


SAME = 1.05     # figures within 5% of each other count as the same,
NOISE = 0.005   # and so do times within 5 ms (a busy machine's jitter)


def worse(ours, theirs, noise=NOISE):
    """Whether torpor's time (or, with noise=0, size) ``ours`` is clearly above
    pickle's ``theirs``."""
    return ours >= theirs * SAME and ours - theirs >= noise


def compare(ours, theirs, than="", size=False):
    """'1.9x slower' / '1.5x faster' / 'as fast as pickle' (or for sizes '1.4x
    smaller' ...): torpor's figure against pickle's. ``than`` (' than pickle')
    ends the first two."""
    faster, slower = ("smaller", "larger") if size else ("faster", "slower")
    noise = 0 if size else NOISE
    if ours <= 0 or theirs <= 0:
        return "not measurable"
    if worse(ours, theirs, noise):
        return f"{ours / theirs:.1f}x {slower}{than}"
    if worse(theirs, ours, noise):
        return f"{theirs / ours:.1f}x {faster}{than}"
    if size:
        return "the same size as pickle's"
    return "as fast as pickle" if max(ours, theirs) >= min(ours, theirs) * SAME \
        else "as fast as pickle (within 5 ms)"


def say(text, indent="   ", first=None):
    print(textwrap.fill(text, 88, initial_indent=indent if first is None else first,
                        subsequent_indent=indent + ("  " if first else ""),
                        break_long_words=False, break_on_hyphens=False))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def best(fn, times=3):
    """The shortest of ``times`` runs of ``fn`` (the least disturbed by whatever
    else the machine is doing), and the last result."""
    shortest = float("inf")
    for _ in range(times):
        out = None      # the previous result is freed before the next run
        out, t = timed(fn)
        shortest = min(shortest, t)
    return out, shortest


# --- the two sessions, described ---------------------------------------------------

def describe_segmentation(s):
    vol = s.volume.data
    clouds = s.data.geometries
    meshes = s.models.geometries
    cloud_bytes = sum(g.points.nbytes + g.normals.nbytes for g in clouds)
    mesh_bytes = sum(g.vertices.nbytes + g.faces.nbytes for g in meshes)
    total = vol.nbytes + cloud_bytes + mesh_bytes
    return (f"{mb(total)} of arrays: a tomogram of {' x '.join(map(str, vol.shape))} "
            f"{vol.dtype} values ({mb(vol.nbytes)}), {len(clouds)} point clouds with "
            f"normals ({mb(cloud_bytes)}) and {len(meshes)} meshes fitted to them "
            f"({mb(mesh_bytes)}).")


def shared_segmentation(restored):
    clouds, meshes = restored.data.geometries, restored.models.geometries
    kept = sum(m.source is c for m, c in zip(meshes, clouds))
    if kept != len(meshes):
        raise CheckFailed(f"only {kept} of the {len(meshes)} restored meshes refer to their "
                          f"own restored point cloud; the others point to copies")
    return (f"its {len(meshes)} meshes still refer to the very point clouds they were "
            f"fitted to (the same objects, not copies)")


def describe_viewer(s):
    structures = s.models.structures
    atoms = sum(len(x.atoms) for x in structures)
    residues = sum(len(x.residues) for x in structures)
    picked = sum(len(i) for i in s.selection.picked.values())
    return (f"{len(structures)} structures with {atoms:,} atoms in {residues:,} residues "
            f"(coordinates, names, B-factors), a selection of {picked} atoms and a camera.")


def shared_viewer(restored):
    structures = restored.models.structures
    picked = list(restored.selection.picked)
    if not all(any(p is x for x in structures) for p in picked) \
            or not any(restored.view.center_of is x for x in structures):
        raise CheckFailed("the restored selection or camera refers to copies of the "
                          "structures, not to the structures in the model list")
    atoms = sum(len(x.atoms) for x in structures)
    return (f"the selection and the camera still refer to the very structures in the "
            f"model list (not copies), whose {atoms:,} atoms again know their residue and "
            f"structure")


VIEWER_NOTE = ("pickle saves the live objects, every atom and residue one by one; torpor "
               "saves what the viewer's take_snapshot returns, the atoms as a few arrays "
               "of columns, from which the viewer rebuilds its objects when restoring.")


# --- measuring ----------------------------------------------------------------------

def pickle_times(state, path, fsync=False):
    """pickle's save and load times (best of 3) and its file size."""
    def save():
        with open(path, "wb") as f:
            pickle.dump(state, f, protocol=5)
            if fsync:
                f.flush()
                os.fsync(f.fileno())

    def load():
        with open(path, "rb") as f:
            return pickle.load(f)
    _, t_save = best(save)
    size = os.path.getsize(path)
    _, t_load = best(load)
    os.remove(path)
    return t_save, t_load, size


def restore(app, path):
    session = torpor.Session(app)
    session.restore(path)
    return session


def check(check_equal, original, restored, what):
    """check_equal's asserts, as a CheckFailed naming the failed assertion."""
    try:
        check_equal(original, restored)
    except AssertionError as e:
        where = traceback.extract_tb(e.__traceback__)[-1]
        source = f": {where.line}" if where.line else ""
        detail = f" ({e})" if str(e) else ""
        raise CheckFailed(f"the restored {what} differs from the original: "
                          f"{os.path.basename(where.filename)} line {where.lineno}"
                          f"{source}{detail}") from None


def run(number, title, what, build, check_equal, shared, describe, app, folder, note=None,
        **save_kw):
    """Build, describe, save, restore, check and compare one session with pickle;
    returns the path of its torpor file."""
    session, t_build = timed(build)
    print(f"\n{number}. {title}, built in {secs(t_build)}:")
    say(describe(session))
    if note:
        say(note)
    path = os.path.join(folder, f"{app}.torpor")
    _, t_save = best(lambda: session.save(path, **save_kw))
    size = os.path.getsize(path)
    fresh, t_load = best(lambda: restore(app, path))
    check(check_equal, session, fresh, what)
    sharing = shared(fresh)
    fresh = None    # pickle's turn: the same memory in use as for torpor's
    p_save, p_load, p_size = pickle_times(session.state_managers,
                                          os.path.join(folder, f"{app}.pkl"))

    print()
    print(f"   {'':<12}{'torpor':>10}{'pickle':>12}   torpor was")
    print(f"   {'save':<12}{secs(t_save):>10}{secs(p_save):>12}   {compare(t_save, p_save)}")
    print(f"   {'restore':<12}{secs(t_load):>10}{secs(p_load):>12}   {compare(t_load, p_load)}")
    print(f"   {'file size':<12}{mb(size):>10}{mb(p_size):>12}   "
          f"{compare(size, p_size, size=True)}")
    print()
    say(f"Checked: the restored {what} equals the original (every value, dtype and "
        f"shape), and {sharing}.")
    slower = explain(session, app, folder, save_kw, t_save, t_load, size, p_save, p_load, p_size)
    if slower:
        say("Where torpor was slower, and why:")
        for text in slower:
            say(text, first="   - ")
        if torpor.implementation != "cython":
            say("This run uses torpor's pure-Python engine (TORPOR_PUREPYTHON=1, or no "
                "compiled extension): its compression filters and the code that goes through "
                "the objects run as Python code, much slower than the compiled ones.")
    else:
        say("torpor was not slower than pickle on anything here.")
    return path


def explain(session, app, folder, save_kw, t_save, t_load, size, p_save, p_load, p_size):
    """Why torpor was slower than pickle where it was, with the further figures
    that show it (measured only when needed): one paragraph each."""
    out = []
    if worse(t_save, p_save) or worse(t_load, p_load):
        # the same session without compression: what compressing costs here
        raw = os.path.join(folder, f"{app}-uncompressed.torpor")
        _, r_save = best(lambda: session.save(raw, compress=None, **save_kw))
        _, r_load = best(lambda: restore(app, raw))
        os.remove(raw)
    if worse(t_save, p_save):
        # pickle with the guarantee torpor gives: the file forced to disk
        f_save, _, _ = pickle_times(session.state_managers,
                                    os.path.join(folder, f"{app}-fsync.pkl"), fsync=True)
        smaller = compare(size, p_size, than=" than pickle's", size=True)
        out.append(
            f"saving ({compare(t_save, p_save)}): torpor compresses the arrays (here to a "
            f"file {smaller}) and forces the file onto the disk (fsync) before it replaces "
            f"any older one, so a crash or a power cut cannot lose the session or leave "
            f"half of it; pickle writes uncompressed and leaves the writing to the disk to "
            f"the operating system, for later. Measured just now with both files forced to "
            f"disk: pickle followed by an fsync took {secs(f_save)}, and torpor with "
            f"compress=None (no compression) {secs(r_save)}, "
            f"{compare(r_save, f_save, than=' than that')}. compress=None trades the "
            f"smaller file for the time compression takes.")
    if worse(t_load, p_load):
        not_it = "" if worse(t_load, r_load) else \
            ", so decompressing is not what takes the time here"
        out.append(
            f"restoring ({compare(t_load, p_load)}): torpor decompresses the arrays and "
            f"checks the checksum of every one, so a damaged file is reported instead of "
            f"restored with wrong numbers; pickle copies the bytes as they are, and right "
            f"after saving both files are still in the operating system's memory, so "
            f"reading pickle's bigger file costs it little. Measured just now: the session "
            f"saved with compress=None restored in {secs(r_load)}, "
            f"{compare(r_load, p_load, than=' than pickle')}{not_it}.")
    if worse(size, p_size, noise=0):
        out.append(
            f"file size ({compare(size, p_size, size=True)}): torpor's file holds, "
            f"besides the data, a header, an index of where each array is and checksums; "
            f"here compression did not save enough to make up for them.")
    return out


def read_back(path):
    torpor.verify(path)
    print("\n3. The saved segmentation workspace, read back without restoring it:")
    say("torpor.verify read the whole file and every checksum in it matches: nothing was "
        "damaged on the way to the disk and back (`torpor verify FILE` on the command line).")
    tree = torpor.open_session(path)
    meta, v = tree["metadata"], tree["versions"]
    volume = tree["managers"]["volume"].data
    say(f"torpor.open_session reads the file as plain data, without the segmentation code "
        f"and without running anything from the file (safe on files from others): written "
        f"by the {tree['app']!r} application at {meta.get('created')} by "
        f"{meta.get('creator')}, with torpor {v['torpor']}, Python {v['python']} and numpy "
        f"{v['numpy']}; its parts (the session's state managers) are "
        f"{', '.join(tree['managers'])}, and the tomogram's shape is "
        f"{' x '.join(map(str, volume['shape']))}. `torpor dump FILE` prints all of it "
        f"as text.")


# --- the temporary folder ----------------------------------------------------------------

@contextlib.contextmanager
def scratch_folder():
    """A temporary folder for everything the demo writes, removed on the way out,
    also on an error or Ctrl-C; a second Ctrl-C cannot stop the removal halfway."""
    tmp = tempfile.TemporaryDirectory(prefix="torpor-demo-")
    try:
        yield tmp.name
    finally:
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
        try:
            tmp.cleanup()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)


def _terminated(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256,
                    help="size of the segmentation workspace's arrays in MB (default 256)")
    ap.add_argument("--atoms", type=int, default=100_000,
                    help="atoms in the viewer session (default 100000)")
    a = ap.parse_args(argv)
    if not __debug__:
        print("demo.py: run it without -O: its checks are assert statements", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminated)      # `kill` cleans up as Ctrl-C does
    engine = "compiled (Cython)" if torpor.implementation == "cython" else "pure-Python"
    say(f"torpor {torpor.__version__}, {engine} engine, on {os.cpu_count()} CPU cores. "
        f"Each time below is the best of 3 runs.", indent="")
    folder = None
    try:
        with scratch_folder() as folder:
            print(f"The files are written to {folder}, removed at the end.")
            seg = run(1, "A segmentation workspace (examples/segmentation.py)", "workspace",
                      lambda: segmentation.build(a.mb), segmentation.check_equal,
                      shared_segmentation, describe_segmentation, "segmentation", folder,
                      include_maps=True)
            run(2, "A molecular-viewer session (examples/viewer.py)", "viewer session",
                lambda: viewer.build(a.atoms), viewer.check_equal, shared_viewer,
                describe_viewer, "viewer", folder, note=VIEWER_NOTE)
            read_back(seg)
    except KeyboardInterrupt:
        done = f"removed {folder}" if folder else "nothing was written"
        print(f"\ndemo.py: interrupted; {done}", file=sys.stderr)
        return 130
    except CheckFailed as e:
        print(f"\ndemo.py: CHECK FAILED: {e}", file=sys.stderr)
        return 1
    if os.path.exists(folder):
        print(f"\ndemo.py: could not remove {folder}", file=sys.stderr)
        return 1
    print(f"\nRemoved {folder}: the demo leaves no files behind.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
