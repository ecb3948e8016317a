"""The workspace demo (examples/workspace_demo.py) runs, on a local folder and on
a private redis-server it starts with the same code as the tests' fixture."""

import os
import subprocess
import sys

DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "workspace_demo.py")


def test_workspace_demo_runs_on_files_and_redis(walker_env):
    out = subprocess.run([sys.executable, DEMO], env=walker_env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert "FileStorage in" in out.stdout
    assert "RedisStorage on a private redis-server at redis://127.0.0.1:" in out.stdout, out.stdout
    assert out.stdout.count("versions of results/grid: [1, 2]") == 2
    assert out.stdout.count("notes.md") == 2


SESSION_DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                            "workspace_session_demo.py")


def test_workspace_session_demo_resumes_after_a_kill(walker_env):
    out = subprocess.run([sys.executable, SESSION_DEMO], env=walker_env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "the analysis was killed with SIGKILL after step 4" in out.stdout
    assert "4 steps survived the kill" in out.stdout
    assert "finished 8 steps" in out.stdout and "restored 'finished': 8 steps back" in out.stdout
    assert "timed_out=True" in out.stdout and "restarted=True" in out.stdout, out.stdout
    # the library: a YAML tool and a workflow that calls it, found by search, in both executors
    assert "tools: ['wc']; workflows: ['export_csv']" in out.stdout
    assert "comma separated values'): export_csv" in out.stdout
    assert "count the lines of a file'): wc" in out.stdout
    assert "in this process: workflows.export_csv('table') -> 4 rows" in out.stdout
    assert "in a worker process: workflows.export_csv('table') -> 4 rows" in out.stdout
