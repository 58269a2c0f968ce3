"""The Streamlit example (examples/streamlit/app.py) run headless by Streamlit's AppTest against
a real `snapkv demo` reader: what its widgets show follows what the reader's /query answers."""

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from snapkv.client import Client

APP = Path(__file__).resolve().parents[2] / "examples" / "streamlit" / "app.py"


@pytest.fixture(scope="module")
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
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert process.poll() is None, (workdir / "demo.log").read_text()
        assert time.monotonic() < deadline, "the demo did not become ready"
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_the_app_follows_its_widgets(demo: str, monkeypatch: Any) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SNAPKV_URL", demo)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert len(at.selectbox(key="country").options) == 20

    at.selectbox(key="country").select("SE").run()
    at.slider(key="min_views").set_value(2_000_000).run()
    at.slider(key="top_n").set_value(7).run()
    assert not at.exception, at.exception

    with Client(demo) as c:
        where = {"views": {">=": 2_000_000}}
        expected = c.query("content", {"prefix": "SE/", "filter": where, "fields": ["title", "views"],
                                       "order_by": [{"field": "views", "desc": True}], "limit": 7})
        count = c.query("content", {"prefix": "SE/", "filter": where,
                                    "aggregates": {"n": {"count": "*"}}})["rows"][0]["n"]
    shown = at.dataframe[0].value
    assert list(shown["key"]) == [r["key"] for r in expected["rows"]]
    assert list(shown["views"]) == [r["views"] for r in expected["rows"]]
    assert all(v >= 2_000_000 for v in shown["views"])
    assert at.metric[0].value == f"{count:,}"
    assert "Top 7 titles by views in SE" in at.subheader[0].value
