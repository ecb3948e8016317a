"""Runs every fuzz target (tests/fuzz/targets.py) on both walkers.

    python tests/fuzz/run.py --seconds 20            # what .ci/run does
    python tests/fuzz/run.py --seconds 3600 --native # a long run, Cython instrumented

Each target runs for ``--seconds`` per walker with libFuzzer's ``-timeout`` (a
slow input is a finding) and ``-rss_limit_mb``, from a seed corpus written by
make_corpus.py. ``--native`` first builds the extensions with clang and
``-fsanitize=fuzzer-no-link`` into a scratch copy of the package, so the Cython
code gets coverage feedback too (``--asan`` adds AddressSanitizer; it needs
clang's ASan runtime preloaded, which the script does). Findings (crash-*,
timeout-*, oom-* inputs) are copied to tests/fuzz/regressions/ (or --findings)
for test_regressions.py to replay forever; the exit status is 1 if there was one.
A timeout is replayed without coverage instrumentation first: one that then
runs within ``--timeout`` is only reported (slow instrumentation, not a finding).
libFuzzer stops at its first finding: ``--keep-going`` starts it again until the
target's time is used up. Prints the inputs executed per target.
"""

import argparse
import glob
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TARGETS = ["loads", "info", "pipe", "decoder", "select"]


def build_native(where, asan):
    """A copy of the package with its extensions built by clang for coverage."""
    src = where / "src"
    shutil.copytree(ROOT / "src" / "torpor", src / "torpor",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    flags = "-fsanitize=fuzzer-no-link" + (",address" if asan else "")
    env = dict(os.environ, CC="clang", LDSHARED="clang -shared", CFLAGS=f"{flags} -g -O1",
               LDFLAGS=flags)
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(src),
                    "--build-temp", str(where / "tmp")], cwd=ROOT, env=env, check=True)
    return src


def build_libfuzzer(where):
    """clang's libFuzzer (without main) as a shared library to preload."""
    archive = subprocess.run(["clang", "-print-file-name=libclang_rt.fuzzer_no_main-x86_64.a"],
                             capture_output=True, text=True).stdout.strip()
    if not os.path.exists(archive):
        sys.exit("--native needs clang's libFuzzer (Debian: clang)")
    out = where / "libfuzzer.so"
    subprocess.run(["clang++", "-shared", "-o", str(out), "-Wl,--whole-archive", archive,
                    "-Wl,--no-whole-archive", "-lpthread"], check=True)
    return str(out)


def custom_mutator_library():
    """atheris's shared library that defines LLVMFuzzerCustomMutator. A libFuzzer
    preloaded ahead of Python binds its custom-mutator hook when it loads, so
    without this library preloaded before it, the structure-aware mutators
    (targets.py) are silently never called and only byte flips are made."""
    out = subprocess.run([sys.executable, "-c", "import atheris.custom_mutator as m; print(m.__file__)"],
                         capture_output=True, text=True)
    path = out.stdout.strip()
    if out.returncode or not os.path.exists(path):
        sys.exit("--native needs atheris's custom_mutator library (atheris >= 2.3)")
    return path


def asan_runtime():
    out = subprocess.run(["clang", "-print-file-name=libclang_rt.asan-x86_64.so"],
                         capture_output=True, text=True)
    path = out.stdout.strip()
    return path if os.path.exists(path) else None


def replay_plain(target, path, env, timeout):
    """Seconds ``target`` takes on the input at ``path`` without coverage
    instrumentation (which makes torpor's Python code several times slower),
    or None if it still takes over ``timeout`` or fails."""
    code = ("import sys, time; sys.argv = ['targets.py']; import targets; "
            f"data = open({str(path)!r}, 'rb').read(); t = time.perf_counter(); "
            f"targets.TARGETS[{target!r}](data); print(time.perf_counter() - t)")
    env = dict(env, TORPOR_FUZZ_PLAIN="1",
               PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]))
    try:
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                           timeout=2 * timeout + 10)         # the interpreter starting, too
        seconds = float(r.stdout.split()[-1]) if r.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError, IndexError):
        return None
    return seconds if seconds is not None and seconds <= timeout else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=20, help="per target and walker")
    ap.add_argument("--targets", default=",".join(TARGETS))
    ap.add_argument("--walkers", default="cython,python")
    ap.add_argument("--native", action="store_true", help="clang-instrumented extensions")
    ap.add_argument("--asan", action="store_true", help="with AddressSanitizer (implies --native)")
    ap.add_argument("--findings", default=str(HERE / "regressions"))
    ap.add_argument("--timeout", type=int, default=5, help="seconds an input may take")
    ap.add_argument("--keep-going", action="store_true",
                    help="after a finding, fuzz the target again until its time is used up")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="torpor-fuzz-"))
    env = dict(os.environ)
    pythonpath = [str(ROOT / "tests")]
    if args.native or args.asan:
        pythonpath.insert(0, str(build_native(work, args.asan)))
        # The instrumented extensions resolve their coverage callbacks against a
        # libFuzzer loaded first, globally: clang's, made a shared library here.
        preload = [custom_mutator_library(), build_libfuzzer(work)]
        if args.asan:
            rt = asan_runtime()
            if rt is None:
                sys.exit("--asan needs clang's ASan runtime (Debian: clang)")
            preload.insert(0, rt)
            env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=1"
        env["LD_PRELOAD"] = " ".join(preload)
    env["PYTHONPATH"] = os.pathsep.join(pythonpath + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    subprocess.run([sys.executable, str(HERE / "make_corpus.py"), str(work / "seeds")], env=env,
                   check=True)
    findings = 0
    total = 0
    for walker in args.walkers.split(","):
        wenv = dict(env)
        wenv.pop("TORPOR_PUREPYTHON", None)
        if walker == "python":
            wenv["TORPOR_PUREPYTHON"] = "1"
            wenv.pop("TORPOR_REQUIRE_EXTENSION", None)
            if args.asan:
                # nothing native to sanitize, and atheris's Python coverage is not
                # seen through the preloaded ASan runtime: run it plainly
                wenv.pop("LD_PRELOAD", None)
                wenv.pop("ASAN_OPTIONS", None)
        else:
            wenv["TORPOR_REQUIRE_EXTENSION"] = "1"     # never fuzz the twin by mistake
        for target in args.targets.split(","):
            corpus = work / f"corpus-{walker}-{target}"
            corpus.mkdir()
            out = work / f"out-{walker}-{target}"
            out.mkdir()
            seeds = work / "seeds" / ("streams" if target == "decoder" else "files")
            deadline = time.monotonic() + args.seconds
            n, found, rounds = 0, [], 0
            # libFuzzer stops at its first finding; --keep-going starts it again
            # (on the corpus grown so far) until the time is used up
            while True:
                left = int(deadline - time.monotonic())
                if rounds and (left < 10 or not args.keep_going):
                    break
                rounds += 1
                before = set(glob.glob(str(out / "*")))
                cmd = [sys.executable, str(HERE / "targets.py"), target, str(corpus), str(seeds),
                       f"-max_total_time={max(left, 1)}", f"-timeout={args.timeout}",
                       "-rss_limit_mb=3072", "-max_len=1048576", f"-artifact_prefix={out}/",
                       "-print_final_stats=1"]
                r = subprocess.run(cmd, env=wenv, capture_output=True, text=True)
                if "LLVMFuzzerCustomMutator" not in r.stderr:
                    print(f"{walker:7s} {target:8s} the custom mutator was not used:\n{r.stderr[-3000:]}")
                    findings += 1
                runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", r.stderr)
                n += int(runs[-1]) if runs else 0
                new = sorted(set(glob.glob(str(out / "*"))) - before)
                found += new
                if r.returncode not in (0,) and not new:
                    print(r.stderr[-3000:])
                    findings += 1
                    break
                if not new:
                    break
            total += n
            print(f"{walker:7s} {target:8s} {n:9d} inputs in {args.seconds} s, {len(found)} findings")
            for f in found:
                name = f"{walker}-{target}-{os.path.basename(f)}"
                if target == "decoder":
                    name += ".stream"        # test_regressions.py replays it by the decoder
                if os.path.basename(f).startswith("timeout-"):
                    plain = replay_plain(target, f, wenv, args.timeout)
                    if plain is not None:
                        print(f"  slow only when instrumented ({plain:.1f} s without): {name}")
                        continue
                findings += 1
                shutil.copy(f, pathlib.Path(args.findings) / name)
                print(f"  finding: {name}")
    print(f"{total} inputs executed in all, {findings} findings")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
