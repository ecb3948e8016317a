"""A real S3 API for the tests: moto's server mode (``python -m moto.server``, from
``moto[server]``) in its own process on 127.0.0.1 and a free port, with one
bucket; s3fs talks to it over HTTP exactly as to AWS. Nothing is mocked inside
this process.

    s3_server                  {"endpoint_url", "bucket", "storage_options"}; session-wide
    s3_storage_factory         make(**kw) -> FileStorage("s3://<bucket>/<unique prefix>", ...)
    memory_storage_factory     make(**kw) -> FileStorage("memory://<unique>")
"""

import os
import re
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from torpor.workspace import FileStorage

BUCKET = "torpor-tests"
_READY = re.compile(rb"Running on http://127\.0\.0\.1:(\d+)")


def storage_options(endpoint_url):
    """What s3fs needs to reach the server: its address, and credentials moto
    accepts (passed explicitly, so no real AWS credentials are ever looked up)."""
    return {"key": "testing", "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint_url, "region_name": "us-east-1"}}


def start_moto(timeout=30.0):
    """Start moto's server on a port the OS picks; (process, endpoint URL, log path)."""
    log = tempfile.NamedTemporaryFile(prefix="moto-server.", suffix=".log", delete=False)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env)
    log.close()
    deadline = time.monotonic() + timeout
    while True:
        with open(log.name, "rb") as f:
            m = _READY.search(f.read())
        if m:
            return proc, f"http://127.0.0.1:{int(m.group(1))}", log.name
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            with open(log.name, "rb") as f:
                out = f.read().decode(errors="replace")
            os.unlink(log.name)
            raise RuntimeError(f"moto's server did not start (is moto[server] installed? "
                               f"pip install 'moto[server]'):\n{out[-2000:]}")
        time.sleep(0.05)


def make_bucket(endpoint_url, bucket):
    import boto3
    client = boto3.client("s3", endpoint_url=endpoint_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing", region_name="us-east-1")
    client.create_bucket(Bucket=bucket)


@pytest.fixture(scope="session")
def s3_server():
    proc, url, log = start_moto()
    try:
        make_bucket(url, BUCKET)
        yield {"endpoint_url": url, "bucket": BUCKET, "storage_options": storage_options(url)}
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.unlink(log)


@pytest.fixture
def s3_storage_factory(s3_server):
    url = f"s3://{s3_server['bucket']}/{uuid.uuid4().hex}"

    def make(**kw):
        kw.setdefault("storage_options", s3_server["storage_options"])
        return FileStorage(url, **kw)
    return make


@pytest.fixture
def memory_storage_factory():
    url = f"memory://torpor-{uuid.uuid4().hex}"

    def make(**kw):
        return FileStorage(url, **kw)
    yield make
    import fsspec
    fs = fsspec.filesystem("memory")
    root = url[len("memory:/"):]
    if fs.exists(root):
        fs.rm(root, recursive=True)
