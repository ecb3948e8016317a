"""A private redis-server for the tests, the benchmarks and the demos: on
127.0.0.1, a free port, no persistence (``--save ""``, ``--appendonly no``), its
working folder a new temporary one; stopped (and the folder removed) by ``stop``.

    with start_redis_server() as server:
        storage = RedisStorage(server.url)

The pytest fixture ``redis_server`` (tests/workspace/redis_server.py) and
``benchmarks/workspace_redis.py`` both start their server here. It talks to the
server with a raw socket (PING), so it needs nothing but the redis-server binary.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Optional

MISSING = ("redis-server is not installed (it is not on PATH). The Redis tests and "
           "benchmarks run a private server: install Debian's package "
           "(sudo apt-get install redis-server); `bash .ci/run` installs it")


class RedisServerError(RuntimeError):
    """redis-server is missing, or did not start."""


class RedisServer:
    """A running private redis-server; ``url`` reaches its database 0."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, folder: str) -> None:
        self.process = process
        self.host = "127.0.0.1"
        self.port = port
        self.folder = folder
        self.url = f"redis://127.0.0.1:{port}/0"

    def __repr__(self) -> str:
        return f"<redis-server pid {self.process.pid} at {self.url}>"

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.stop()

    def stop(self) -> None:
        """Terminate the server, wait for it, remove its folder."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(executable: str = "redis-server", timeout: float = 20.0) -> RedisServer:
    """Start a private redis-server and return once it answers PING.
    RedisServerError if it is not installed or does not come up."""
    path = shutil.which(executable)
    if path is None:
        raise RedisServerError(MISSING)
    last = ""
    for _ in range(5):                    # another process may take the free port first
        port = _free_port()
        folder = tempfile.mkdtemp(prefix="torpor-redis-")
        log = os.path.join(folder, "redis.log")
        proc = subprocess.Popen(
            [path, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly",
             "no", "--dir", folder, "--daemonize", "no", "--logfile", log, "--loglevel",
             "warning", "--protected-mode", "yes"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = RedisServer(proc, port, folder)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if _pings(port):
                return server
            time.sleep(0.02)
        try:
            with open(log, errors="replace") as f:
                out = f.read().strip()[-500:]
        except OSError:
            out = ""
        server.stop()
        last = out or f"no answer to PING within {timeout} s"
    raise RedisServerError(f"{path} did not start on 127.0.0.1: {last}")


if __name__ == "__main__":          # a server for trying things by hand
    with start_redis_server() as srv:
        print(f"{srv.url} (pid {srv.process.pid}); Ctrl-C stops it", flush=True)
        try:
            srv.process.wait()
        except KeyboardInterrupt:
            pass
