"""Shared fixtures: a real S3 endpoint over HTTP on loopback (moto), and small real JPEG samples.

def test_x(moto_s3):
    url = moto_s3.bucket("data")          # creates the bucket, returns "s3://data"
    moto_s3.stop(); moto_s3.start()      # an outage: same port, buckets and objects kept

def test_z(foreign_ray_processes):     # another job's Ray processes, by title: each must survive the test
    ...; assert not tests.ray_processes.dead(foreign_ray_processes)

def test_y(make_samples):
    samples = make_samples(n_ids=2, views=3)   # list[dppp.dataset.shard_writer.Sample], real JPEG bytes

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # a module of tiny torch models: 1 thread

data = tar_bytes([("a.txt", b"hi")], format=tarfile.GNU_FORMAT)   # a plain tar, no dppp code involved

def test_z(refuse_writes, tmp_path):
    refuse_writes(tmp_path / "out")                  # writes under it now fail as a read-only folder's do
    refuse_writes(tmp_path / "ds", errno.ENOSPC)     # ... or as a full disk's
"""

from __future__ import annotations

import builtins
import errno
import importlib.util
import io
import os
import pickle
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# The S3 server runs in a child process that keeps its in-memory state while the HTTP listener is stopped
# and restarted on the same port, so a test can cut the endpoint off in the middle of a publish and bring
# it back with the bucket still there (killing `moto_server` itself would lose every bucket). It serves
# moto's own WSGI app, the same one the `moto_server` executable runs. HTTP/1.0 closes each connection
# after its response, so a stopped listener really refuses the next request instead of a kept-alive socket
# still answering it. Commands on stdin: "stop", "start"; each answered with "ok".
_SERVER_SCRIPT = r"""
import sys, threading
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.moto_server.threaded_moto_server import MotoRequestHandler
from werkzeug.serving import make_server

class Handler(MotoRequestHandler):
    protocol_version = "HTTP/1.0"
    def log_request(self, *args, **kwargs):
        pass

app = DomainDispatcherApplication(create_backend_app)
port = int(sys.argv[1])
server = thread = None

def start():
    global server, thread
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=Handler)
    server.protocol_version = "HTTP/1.0"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

def stop():
    server.shutdown()
    server.server_close()
    thread.join()

start()
print("ok", flush=True)
for line in sys.stdin:
    {"stop": stop, "start": start}[line.strip()]()
    print("ok", flush=True)
"""

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing-access-key-id",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-access-key",
    "AWS_SESSION_TOKEN": "testing-session-token",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def s3_node_environment(server) -> Iterator[None]:
    """The loopback S3 endpoint and fake credentials in this process's environment while the block runs:
    a Ray instance started inside inherits them, as a cluster's nodes hold their own (dppp sends its
    actors no credentials; Ray logs what it sends)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": server.endpoint_url}.items():
            patch.setenv(name, value)
        for name in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            patch.setenv(name, os.devnull)
        yield


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoS3:
    """A moto S3 endpoint in a child process: `endpoint_url`, `bucket(name)`, `stop()`, `start()`."""

    def __init__(self):
        self.port = _free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.running = False
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER_SCRIPT, str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._command(None)
        self._wait_until_answering()
        self.running = True

    def _command(self, command: str | None) -> None:
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"moto server did not answer {command or 'start-up'}: {answer!r}")

    def _wait_until_answering(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2).read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """Close the listener: new connections are refused until start(). State is kept."""
        if self.running:
            self._command("stop")
            self.running = False

    def start(self) -> None:
        if not self.running:
            self._command("start")
            self.running = True

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")

    def bucket(self, name: str | None = None) -> str:
        """Create a bucket (a unique name by default) and return its s3:// URL."""
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def _moto_server():
    server = MotoS3()
    yield server
    server.close()


@pytest.fixture
def moto_s3(_moto_server, monkeypatch):
    """The S3 endpoint with fake credentials and AWS_ENDPOINT_URL set in the environment for this test."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", _moto_server.endpoint_url)
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    _moto_server.start()
    yield _moto_server
    _moto_server.start()  # a test that stopped it must not leave it down for the next one


# ------------------------------------------------------------------------------------ refused writes


@pytest.fixture
def refuse_writes(monkeypatch):
    """refuse_writes(folder, code=errno.EACCES): from then on, for the rest of the test, every write of
    this process under `folder` fails as the kernel fails it (PermissionError for EACCES, OSError(code)
    else: EROFS a read-only file system, ENOSPC a full disk): opening a file to write, making a folder,
    renaming or removing in it. Reads still work. Tests run as root, whom a folder's permissions do not
    stop, so chmod cannot make a read-only folder here; processes other than this one are not affected."""
    folders: dict[str, int] = {}
    real = {name: getattr(os, name) for name in ("open", "mkdir", "replace", "rename", "unlink", "remove")}
    real_open = builtins.open

    def check(path) -> None:
        if isinstance(path, int):
            return
        where = os.path.abspath(os.fsdecode(path))
        for folder, code in folders.items():
            if where == folder or where.startswith(folder + os.sep):
                raise OSError(code, os.strerror(code), os.fsdecode(path))

    def guarded(name):
        def call(*args, **kwargs):
            paths = args[:2] if name in ("replace", "rename") else args[:1]
            for path in paths:
                check(path)
            return real[name](*args, **kwargs)

        return call

    def guarded_os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND):
            check(path)
        return real["open"](path, flags, *args, **kwargs)

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            check(file)
        return real_open(file, mode, *args, **kwargs)

    def refuse(folder, code: int = errno.EACCES) -> None:
        if not folders:
            for name in ("mkdir", "replace", "rename", "unlink", "remove"):
                monkeypatch.setattr(os, name, guarded(name))
            monkeypatch.setattr(os, "open", guarded_os_open)
            monkeypatch.setattr(builtins, "open", guarded_open)
            monkeypatch.setattr(io, "open", guarded_open)
        folders[os.path.abspath(os.fspath(folder))] = code

    return refuse


# ------------------------------------------------------------------------------------------- samples

ATTRIBUTE_CHOICES = {
    "gender": ["man", "woman"],
    "upper_color": ["red", "blue", "green", "black"],
    "lower_color": ["grey", "denim", "khaki"],
    "scene": ["street", "campus", "mall"],
}


def make_samples(n_ids: int = 2, views: int = 3, *, first_pid: int = 0, size=(32, 64), ext: str = "jpg"):
    """Real small images (PIL-encoded) with the generator's metadata schema, one Sample per (pid, view)."""
    from PIL import Image, ImageDraw

    from dppp.dataset.keys import sample_key
    from dppp.dataset.shard_writer import Sample

    samples = []
    for pid in range(first_pid, first_pid + n_ids):
        for view in range(views):
            attributes = {
                name: values[(pid + (view if name == "scene" else 0)) % len(values)]
                for name, values in ATTRIBUTE_CHOICES.items()
            }
            image = Image.new("RGB", size, ((pid * 47) % 256, (view * 83) % 256, 128))
            ImageDraw.Draw(image).rectangle([4, 4 + view, size[0] - 5, size[1] // 2], fill=(250, 250, 250))
            buffer = io.BytesIO()
            image.save(buffer, format={"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext], quality=85)
            key = sample_key(pid, view)
            prompt = f"a photo of a {attributes['gender']} in a {attributes['upper_color']} top"
            metadata = {
                "key": key,
                "pid": pid,
                "view": view,
                "camid": view % 4,
                "attributes": attributes,
                "prompt": prompt,
                "negative_prompt": "blurry",
                "seed": pid * 1000 + view,
                "identity_seed": pid * 1000,
                "renderer": {"name": "test", "size": list(size)},
                "versions": {"dppp": "test"},
            }
            samples.append(Sample(key, buffer.getvalue(), ext, metadata, prompt, pid))
    return samples


@pytest.fixture(name="make_samples")
def make_samples_fixture():
    return make_samples


@pytest.fixture(scope="session")
def foreign_ray_processes():
    """Stand-ins for another job's Ray processes on this machine (a shard actor, a Ray Train worker, a
    raylet of another instance with workers below it), titled as the real ones: {name: pid}. A test that
    kills one of its own processes runs beside them and checks `tests.ray_processes.dead(...)` is empty.
    They are killed by their own pids at the end of the session."""
    from tests.ray_processes import foreign_processes

    with foreign_processes() as pids:
        yield pids


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test, restored after: the tests' matrices are tiny, so a second thread
    only adds contention on a shared 2-core machine. Opt in per module with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tar_bytes(entries, *, format: int = tarfile.DEFAULT_FORMAT) -> bytes:
    """A tar archive of (name, data) members written by tarfile alone: the independent writer tests hold
    dppp's reader and checks against."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=format) as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _Payload:
    """Unpickling this creates a file: proof that something ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def pickle_payload(marker: Path) -> bytes:
    """Pickle bytes that create the file `marker` if anything ever unpickles them: a live payload for the
    tests that no command decodes a shard's pickle members. The stream names only builtins.open, so it
    loads anywhere."""
    return pickle.dumps(_Payload(str(marker)))


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module, for tests of a benchmark's parts. The benchmarks are scripts, not a
    package: run as `python benchmarks/x.py` they import their siblings (timing, ...) by bare name, so
    benchmarks/ goes on sys.path here as it is there. Registered in sys.modules (dataclasses look their
    module up there)."""
    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    if str(benchmarks) not in sys.path:
        sys.path.append(str(benchmarks))
    spec = importlib.util.spec_from_file_location(name, benchmarks / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
