"""Fixtures that run the real ``snapkv`` command: ``snapkv_bin`` (the binary under test),
``serve`` (``snapkv serve`` on a free port, stopped after the test) and ``build_snapshot``
(snapshot files built by ``snapkv build`` from NDJSON or CSV rows), ``s3_store`` (a fresh
store on the S3-compatible test server, with its options) and ``demo`` (a ``snapkv demo``
reader of 20,000 rows).

The binary is the one named by ``SNAPKV_BIN``, so that tests run the build under test and not
whatever ``snapkv`` is on ``PATH``:

    SNAPKV_BIN=target/debug/snapkv python -m pytest python/tests
"""

from __future__ import annotations

import csv
import json
import os
import queue
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Sequence, Tuple, Union

import pytest

# How long `snapkv serve` may take to listen, and then to load every dataset.
START_TIMEOUT = 30.0
# How long a stopped server may take to drain and exit before it is killed.
STOP_TIMEOUT = 10.0


@pytest.fixture
def s3_store() -> Tuple[str, Dict[str, str]]:
    """A fresh store URL on the S3-compatible test server (``SNAPKV_TEST_S3_ENDPOINT``, which
    scripts/test starts), and the store options that reach it."""
    endpoint = os.environ.get("SNAPKV_TEST_S3_ENDPOINT")
    assert endpoint, "SNAPKV_TEST_S3_ENDPOINT is not set: run the tests through scripts/test"
    bucket = "snapkv-test"
    # The test server accepts an unsigned path-style PUT /bucket (200, or 409 if it exists).
    request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT", data=b"")
    try:
        urllib.request.urlopen(request, timeout=10)
    except urllib.error.HTTPError as e:
        assert e.code == 409, f"cannot create bucket {bucket}: {e}"
    store = f"s3://{bucket}/py-{uuid.uuid4().hex[:8]}"
    return store, {"endpoint": endpoint, "allow_http": "true", "region": "us-east-1"}


@pytest.fixture(scope="session")
def snapkv_bin() -> Path:
    """The ``snapkv`` binary under test: the path in ``SNAPKV_BIN``. Fails (never skips) when
    it is unset or not an executable file: a test run that silently left out the server tests
    would pass without testing them."""
    value = os.environ.get("SNAPKV_BIN")
    if not value:
        pytest.fail(
            "SNAPKV_BIN is not set: set it to the snapkv binary under test, "
            "e.g. SNAPKV_BIN=target/debug/snapkv (cargo build --bin snapkv builds it)",
            pytrace=False,
        )
    path = Path(value).resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"SNAPKV_BIN={value}: no executable file at {path}", pytrace=False)
    return path


class _Server:
    """One ``snapkv serve`` process, its log file and the base URL it printed."""

    def __init__(self, process: "subprocess.Popen[str]", log: Path) -> None:
        self.process = process
        self.log = log
        self.url = ""

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGTERM: the server stops accepting, finishes what is in flight and exits 0.
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def _read_listening_line(server: _Server, deadline: float) -> str:
    """The base URL from ``snapkv serve``'s first line on stdout, ``listening on URL`` (or a
    JSON object with ``listening``), which it prints once its socket is bound: so
    ``--listen 127.0.0.1:0`` tells its port."""
    assert server.process.stdout is not None
    stdout = server.process.stdout
    lines: "queue.Queue[str]" = queue.Queue()
    # readline blocks; a thread lets the wait end at the deadline.
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=max(deadline - time.monotonic(), 0.0))
    except queue.Empty:
        raise RuntimeError(f"snapkv serve printed no address within {START_TIMEOUT} s") from None
    if line.startswith("listening on "):
        return line[len("listening on ") :].strip()
    # With --log-format json (or SNAPKV_LOG_FORMAT=json), the line is a JSON object.
    try:
        return str(json.loads(line)["listening"])
    except (ValueError, KeyError, TypeError):
        raise RuntimeError(
            f"snapkv serve exited or printed {line!r} instead of its address"
        ) from None


# The server is local: never reached through a proxy from the environment.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _wait_ready(server: _Server, deadline: float) -> None:
    """Polls ``/readyz`` until every dataset has a version loaded (200)."""
    pause = 0.01
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"snapkv serve exited with status {server.process.returncode}")
        try:
            with _NO_PROXY.open(server.url + "/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except urllib.error.HTTPError as e:
            # 503 while datasets load; anything else is a server bug worth stopping on.
            if e.code != 503:
                raise RuntimeError(f"/readyz answered {e.code}") from e
        if time.monotonic() > deadline:
            raise RuntimeError(f"datasets not loaded within {START_TIMEOUT} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


@pytest.fixture
def serve(
    snapkv_bin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., str]]:
    """A factory: ``serve(*args, ready=True, listen="127.0.0.1:0") -> str`` starts
    ``snapkv serve --listen LISTEN *args`` and returns its base URL
    (``http://127.0.0.1:PORT``, no trailing slash).

        def test_lookup(serve, build_snapshot):
            path = build_snapshot([{"id": "a", "n": 1}], key="id")
            url = serve("--file", f"scores={path}", "--max-mget-keys", "7")
            assert httpx.get(f"{url}/v1/datasets/scores/keys/a").json() == {"n": 1}

    ``args`` are any ``snapkv serve`` flags: the datasets (``--file NAME=PATH``, or ``--store
    URL --dataset NAME --cache-dir DIR``) and limits. The port is the one the server bound and
    printed. By default the call returns once ``/readyz`` answers 200, every dataset loaded;
    ``ready=False`` returns as soon as the server listens. Each call starts another server, in
    its own working directory; its log (stderr) is in that directory's ``serve.log`` and is
    shown when it fails to start. Every server is stopped with SIGTERM (then killed after
    ``STOP_TIMEOUT`` seconds) when the test ends; one that exited by itself before then fails
    the test.
    """
    servers: List[_Server] = []

    def start(*args: str, ready: bool = True, listen: str = "127.0.0.1:0") -> str:
        workdir = tmp_path_factory.mktemp("serve")
        log = workdir / "serve.log"
        with open(log, "wb") as stderr:
            process = subprocess.Popen(
                [str(snapkv_bin), "serve", "--listen", listen, *args],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        server = _Server(process, log)
        servers.append(server)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            server.url = _read_listening_line(server, deadline)
            if ready:
                _wait_ready(server, deadline)
        except (RuntimeError, OSError) as e:
            server.stop()
            servers.remove(server)
            pytest.fail(
                f"snapkv serve {' '.join(args)}: {e}\n--- serve.log ---\n{server.log_text()}",
                pytrace=False,
            )
        return server.url

    yield start
    # A server that exited by itself during the test (a crash) fails it, with its log.
    died = [s for s in servers if s.process.poll() is not None]
    for server in servers:
        server.stop()
    for server in died:
        pytest.fail(
            f"snapkv serve at {server.url} exited with status {server.process.returncode} "
            f"during the test\n--- serve.log ---\n{server.log_text()}",
            pytrace=False,
        )


@pytest.fixture
def build_snapshot(snapkv_bin: Path, tmp_path: Path) -> Callable[..., Path]:
    """A factory: ``build_snapshot(rows, key, *, name="data", input_format="ndjson", args=())
    -> Path`` builds ``tmp_path / f"{name}.snapkv"`` with ``snapkv build`` and returns its path.

        path = build_snapshot([{"country": "SE", "user": 42, "n": 1}], key="country,user",
                              args=["--version", "v1"])

    ``rows`` is a sequence of dicts, written to ``tmp_path`` as NDJSON or, with
    ``input_format="csv"``, as CSV (the columns of the first row); or the ``Path`` of an input
    file (Parquet, Arrow, ...) to build from as it is. ``key`` is ``--key`` (columns joined
    with ``,``); ``args`` are further ``snapkv build`` flags (``--version V``,
    ``--raw-value COL``, ...). A failed build fails the test with the command's output.
    """

    def build(
        rows: Union[Sequence[Mapping[str, Any]], Path],
        key: str,
        *,
        name: str = "data",
        input_format: str = "ndjson",
        args: Sequence[str] = (),
    ) -> Path:
        if isinstance(rows, Path):
            source = rows
        else:
            source = tmp_path / f"{name}.{input_format}"
            with open(source, "w", encoding="utf-8", newline="") as f:
                if input_format == "ndjson":
                    for row in rows:
                        f.write(json.dumps(row, ensure_ascii=False) + "\n")
                elif input_format == "csv":
                    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(rows)
                else:
                    raise ValueError(f"input_format is ndjson or csv, not {input_format!r}")
        output = tmp_path / f"{name}.snapkv"
        command = [str(snapkv_bin), "build", "--input", str(source), "--key", key]
        command += ["--output", str(output), "--quiet", *args]
        run = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            pytest.fail(
                f"{' '.join(command)} exited {run.returncode}:\n{run.stdout}{run.stderr}",
                pytrace=False,
            )
        return output

    return build


@pytest.fixture(scope="session")
def demo(snapkv_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`snapkv demo` with 20,000 rows (1,000 titles in 20 countries) on a free port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path_factory.mktemp("demo")
    log = open(workdir / "demo.log", "wb")
    process = subprocess.Popen(
        [str(snapkv_bin), "demo", "--dir", str(workdir / "d"), "--rows", "20000",
         "--listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        assert process.poll() is None, (workdir / "demo.log").read_text()
        assert time.monotonic() < deadline, "the demo did not become ready"
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()
