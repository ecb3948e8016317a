"""A workspace Session that is killed and resumes: a short analysis builds
arrays step by step in a worker process of this demo, which is killed with
SIGKILL halfway; a new Session on the same folder resumes from the automatic
checkpoint and finishes. Then the same in an isolated worker whose run is
stopped by its timeout, and a manual checkpoint and restore. Last, the
workspace's library: a YAML tool (``wc``, run without a shell) and a saved
workflow that calls it, found by search and run from code in both executors.

    python examples/workspace_session_demo.py
"""

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from torpor.workspace import Session, SyncSession  # noqa: E402

STEPS = 8
SETUP = """
import numpy as np
rng = np.random.default_rng(0)
signal = rng.standard_normal(2_000_000).astype(np.float32)
smoothed = []            # one array per step
def smooth(x, width):
    kernel = np.ones(width, np.float32) / width
    return np.convolve(x, kernel, mode="same")
"""
STEP = "smoothed.append(smooth(signal, 2 * len(smoothed) + 3))\nlen(smoothed)"


def analysis(folder: str) -> None:
    """The child: runs the steps, slowly, until it is killed."""
    with SyncSession.from_base(folder) as s:
        if s.resumed is None:
            s.run(SETUP)
        while True:
            r = s.run(STEP)
            print(r.value, flush=True)
            time.sleep(0.1)


async def resume(folder: str) -> None:
    async with Session.from_base(folder) as s:
        names = sorted(s.resumed["variables"])
        print(f"  resumed from the automatic checkpoint: {', '.join(names)}")
        r = await s.run("len(smoothed)")
        print(f"  {r.value} steps survived the kill")
        while (await s.run("len(smoothed)")).value < STEPS:
            await s.run(STEP)
        r = await s.run("[round(float(a.std()), 4) for a in smoothed]")
        print(f"  finished {STEPS} steps; std of each: {r.value}")
        cp = await s.checkpoint("finished")
        print(f"  checkpoint 'finished': {len(cp['variables'])} variables, "
              f"{cp['bytes_written'] / 2**20:.1f} MiB written, "
              f"{cp['bytes_reused'] / 2**20:.1f} MiB already stored")
        await s.run("smoothed.clear()")
        await s.restore_checkpoint("finished")
        print(f"  restored 'finished': {(await s.run('len(smoothed)')).value} steps back")


async def isolated(folder: str) -> None:
    async with Session.subprocess(folder, timeout=2.0) as s:
        print(f"  worker capabilities: {sorted(s.supported_capabilities())}")
        await s.run("import numpy as np\nx = np.arange(1_000_000, dtype=np.float64)")
        r = await s.run("x[::250_000]")
        print(f"  value from the worker: {type(r.value).__name__} {r.value}")
        r = await s.run("import time\ntime.sleep(60)", timeout=0.5)
        print(f"  a run past its timeout: timed_out={r.timed_out}")
        r = await s.run("import os\nos.kill(os.getpid(), 9)")
        print(f"  a worker that dies: {r.error.strip().splitlines()[0]}")
        r = await s.run("float(x.sum())")
        print(f"  next run: restarted={r.restarted}, x.sum() = {r.value:.0f}")
        for note in r.notes:
            print(f"    note: {note}")


WC_TOOL = """\
name: wc
description: Count lines, words and bytes in text files
command: wc
timeout: 10
tags: [text, files]
schema:
  options:
    lines: {type: boolean, short: l, description: Count lines only}
  positional:
    - {name: paths, type: array, required: true, description: Files to count}
"""

EXPORT = '''
import os
import numpy as np

def run(name: str, folder: str) -> int:
    """Write an artifact's array as a CSV file and count its rows with the wc tool."""
    path = os.path.join(folder, name + ".csv")
    np.savetxt(path, artifacts.load(name), delimiter=",")
    return int(tools.wc(lines=True, paths=[path]).split()[0])
'''


async def library(folder: str) -> None:
    os.makedirs(os.path.join(folder, "tools"), exist_ok=True)
    with open(os.path.join(folder, "tools", "wc.yaml"), "w") as f:
        f.write(WC_TOOL)
    for make in (Session.from_base, Session.subprocess):
        async with make(folder, checkpoint=None) as s:
            if await s.get_workflow("export_csv") is None:
                await s.add_workflow("export_csv", EXPORT, "")
                print(f"  tools: {[t['name'] for t in await s.list_tools()]}; workflows: "
                      f"{[w['name'] for w in await s.list_workflows()]}")
                found = await s.search_workflows("save an array as comma separated values")
                print(f"  search_workflows('save an array as comma separated values'): "
                      f"{found[0]['name']}")
                found = await s.search_tools("count the lines of a file")
                print(f"  search_tools('count the lines of a file'): {found[0]['name']}")
            await s.save_artifact("table", np.arange(12.0).reshape(4, 3))
            r = await s.run(f"workflows.export_csv('table', {folder!r})")
            where = "a worker process" if s.supports("process_isolation") else "this process"
            if not r.is_ok:
                raise SystemExit(f"the workflow failed in {where}:\n{r.error}")
            print(f"  in {where}: workflows.export_csv('table') -> {r.value} rows")


def main() -> None:
    folder = tempfile.mkdtemp(prefix="torpor-session-demo-")
    print(f"workspace: {folder}")
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", folder],
                             stdout=subprocess.PIPE, text=True)
    done = 0
    while done < STEPS // 2:
        done = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    print(f"the analysis was killed with SIGKILL after step {done}")
    asyncio.run(resume(folder))
    print("an isolated worker:")
    asyncio.run(isolated(os.path.join(folder, "isolated")))
    print("the library: a tool and a workflow")
    asyncio.run(library(os.path.join(folder, "library")))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        analysis(sys.argv[2])
    else:
        main()
