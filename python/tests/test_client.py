"""snapkv.Client against a real `snapkv serve`, over snapshots built by `snapkv build`: lookups
by every kind of key, batching within the server's limits, scans across pages, version pins,
retries and errors. Request counts come from the server's own /metrics."""

from __future__ import annotations

import math
import os
import pickle
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

import snapkv
from snapkv.client import Client, ConnectionFailed, DatasetNotFound, HttpError, VersionMismatch

# Keys that URL handling gets wrong when it is careless: reserved and unsafe characters,
# percent signs that look like escapes, dot segments, non-ASCII text.
AWKWARD_KEYS = [
    "a/b",
    "a/b/",
    "/lead",
    "a b",
    "a+b",
    "100%",
    "%41",
    "A",
    "%zz",
    "q?x=1&y=2#frag",
    ".",
    "..",
    "../up",
    "tab\there",
    "héllo ☃ 日本",
    "emoji 🦀",
    'quote"back\\slash',
]


def metric(url: str, route: str, status: int) -> int:
    """How many requests to ``route`` the server answered with ``status``."""
    text = httpx.get(f"{url}/metrics").text
    pattern = rf'^snapkv_http_requests_total\{{route="{route}",status="{status}"\}} (\d+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return int(found.group(1)) if found else 0


def free_port() -> int:
    """A port nothing listens on (bound and released: connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def users(build_snapshot):
    """``users``: integer keys -3 and 0..99, JSON values, version v1."""
    rows = [{"id": i, "name": f"user {i}", "score": i * 1.5} for i in [-3, *range(100)]]
    return build_snapshot(rows, key="id", name="users", args=["--version", "v1"])


def user(i):
    return {"name": f"user {i}", "score": i * 1.5}


def test_get_by_str_int_bytes_and_tuple_keys(serve, build_snapshot, users):
    countries = [("SE", 42), ("SE", 7), ("US", 42)]
    rows = [{"country": c, "user": u, "n": n} for n, (c, u) in enumerate(countries)]
    pairs = build_snapshot(rows, key="country,user", name="pairs")
    url = serve("--file", f"users={users}", "--file", f"pairs={pairs}")
    with Client(url) as c:
        assert c.get("users", 7) == user(7)
        assert c.get("users", "7") == user(7)
        assert c.get("users", b"7") == user(7)
        assert c.get("users", -3) == user(-3)
        assert c.get("pairs", ("SE", 42)) == {"n": 0}
        assert c.get("pairs", ("SE", b"7")) == {"n": 1}
        assert c.get("pairs", "US/42") == {"n": 2}
        # Absent keys: None or the default, as Snapshot.get.
        assert c.get("users", 100) is None
        assert c.get("users", "07", default="absent") == "absent"
        assert c.get("pairs", ("SE", 43), {}) == {}
        assert c.get("pairs", "SE") is None
        # Keys no snapshot holds are absent without asking.
        assert c.get("users", "") is None
        assert c.get("users", "k" * 4097, default=0) == 0
        with pytest.raises(TypeError, match="bool"):
            c.get("users", True)
        with pytest.raises(TypeError, match="float"):
            c.get("users", 7.0)
        with pytest.raises(TypeError):
            c.get("pairs", ("SE", ("nested",)))
        with pytest.raises(ValueError, match="at least one part"):
            c.get("pairs", ())
    assert metric(url, "key", 404) == 4
    assert metric(url, "key", 400) == 0


def test_keys_with_reserved_characters(serve, build_snapshot):
    rows = [{"k": k, "i": i} for i, k in enumerate(AWKWARD_KEYS)]
    # A key of 4000 bytes: percent-encoded, its path is over the server's 8 KiB target limit.
    long_key = "é" * 2000
    rows.append({"k": long_key, "i": -1})
    path = build_snapshot(rows, key="k", name="words")
    url = serve("--file", f"words={path}")
    with Client(url) as c:
        for i, key in enumerate(AWKWARD_KEYS):
            assert c.get("words", key) == {"i": i}, key
            assert c.get("words", key.encode()) == {"i": i}, key
        assert c.get("words", "a") is None
        assert c.get("words", "a/") is None
        assert c.get("words", "%2541") is None
        assert c.get("words", long_key) == {"i": -1}
        assert c.get_many("words", AWKWARD_KEYS + ["b", long_key]) == [
            {"i": i} for i in range(len(AWKWARD_KEYS))
        ] + [None, {"i": -1}]
        scanned = dict(c.scan("words"))
        assert scanned == {r["k"]: {"i": r["i"]} for r in rows}
        assert list(scanned) == sorted(scanned, key=lambda k: k.encode())
        assert [k for k, _ in c.scan("words", prefix="a")] == ["a b", "a+b", "a/b", "a/b/"]
        assert [k for k, _ in c.scan("words", prefix="%")] == ["%41", "%zz"]
    # The long key went by mget once its GET was refused.
    assert metric(url, "key", 414) == 1


def test_raw_values_and_keys_that_are_not_utf8(serve, build_snapshot, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": pa.array([b"\xff\x00k", b"plain", "é".encode(), b"%\xfe/x"], pa.binary()),
            "v": pa.array([b"\x00\x01\xfe", b"text", b"\xff", b""], pa.binary()),
        }
    )
    pq.write_table(table, tmp_path / "bin.parquet")
    binary = build_snapshot(
        tmp_path / "bin.parquet", key="id", name="bin", args=["--raw-value", "v"]
    )
    text = build_snapshot(
        [{"id": "k1", "blob": "hello"}, {"id": "k2", "blob": "wörld"}],
        key="id",
        name="text",
        input_format="csv",
        args=["--raw-value", "blob"],
    )
    url = serve("--file", f"bin={binary}", "--file", f"text={text}")
    with Client(url) as c:
        assert c.get("bin", b"\xff\x00k") == b"\x00\x01\xfe"
        assert c.get("bin", b"%\xfe/x") == b""
        assert c.get("bin", "é") == b"\xff"
        assert c.get("bin", b"\xff") is None
        assert c.get("text", "k2") == "wörld".encode()
        assert c.get_many("text", ["k1", "k3", "k2"]) == [b"hello", None, "wörld".encode()]
        assert c.get_many("bin", [b"\xff\x00k", "plain", b"\xfe", b"%\xfe/x", "é"]) == [
            b"\x00\x01\xfe",
            b"text",
            None,
            b"",
            b"\xff",
        ]
        assert list(c.scan("bin")) == [
            (b"%\xfe/x", b""),
            ("plain", b"text"),
            ("é", b"\xff"),
            (b"\xff\x00k", b"\x00\x01\xfe"),
        ]
        assert list(c.scan("bin", prefix=b"\xff")) == [(b"\xff\x00k", b"\x00\x01\xfe")]
        assert c.info("bin")["metadata"]["value_encoding"] == "raw"


def test_get_many_in_batches_of_the_servers_limit(serve, users):
    url = serve("--file", f"users={users}", "--max-mget-keys", "7")
    keys = [i * 3 for i in range(50)]  # 0..147: a third of them absent
    keys += [5, "5", b"5", 1000, 0]  # repeats, the same key three ways, absent
    expected = [user(int(k)) if int(k) < 100 else None for k in keys]
    distinct = len({str(int(k)) for k in keys})
    with Client(url, batch_size=7) as c:
        assert c.get_many("users", keys) == expected
        assert c.get_many("users", keys, default="-")[-2] == "-"
        assert c.get_many("users", []) == []
    assert metric(url, "mget", 200) == 2 * math.ceil(distinct / 7)
    assert metric(url, "mget", 400) == 0

    # A client that does not know the limit finds it from the server's refusals, once.
    with Client(url) as c:
        assert c.get_many("users", keys) == expected
        refused = metric(url, "mget", 400)
        assert refused > 0
        assert c.get_many("users", keys) == expected
        assert metric(url, "mget", 400) == refused


def test_get_many_splits_by_body_size(serve, build_snapshot):
    rows = [{"id": f"key-{i:04d}-" + "x" * 40, "v": i} for i in range(300)]
    path = build_snapshot(rows, key="id", name="wide")
    url = serve("--file", f"wide={path}", "--max-body-bytes", "4KiB")
    keys = [r["id"] for r in rows]
    expected = [{"v": r["v"]} for r in rows]
    # 300 keys of 49 bytes: over 4 KiB of body together.
    with Client(url, max_body_bytes=4096) as c:
        assert c.get_many("wide", keys + ["nope"]) == expected + [None]
    assert metric(url, "mget", 413) == 0
    assert metric(url, "mget", 200) == math.ceil(len(keys) * 52 / 4096)
    with Client(url) as c:
        # Not told the limit: the server's 413 body_too_large teaches it, once.
        assert c.get_many("wide", keys) == expected
        refused = metric(url, "mget", 413)
        assert refused > 0
        assert c.get_many("wide", keys) == expected
        assert metric(url, "mget", 413) == refused


def test_get_many_splits_answers_over_the_size_limit(serve, build_snapshot):
    rows = [{"id": f"k{i:03d}", "v": "y" * 100} for i in range(100)]
    rows.append({"id": "big", "v": "z" * 3000})
    path = build_snapshot(rows, key="id", name="wide")
    url = serve("--file", f"wide={path}", "--max-response-bytes", "2KiB")
    keys = [r["id"] for r in rows]
    with Client(url) as c:
        # ~13 values fit an answer; the one value over 2 KiB on its own comes by GET.
        assert c.get_many("wide", keys + ["nope"]) == [{"v": r["v"]} for r in rows] + [None]
    assert metric(url, "mget", 413) > 0
    assert metric(url, "mget", 200) >= math.ceil(100 * 105 / 2048)
    assert metric(url, "key", 200) == 1


def test_scan_follows_cursors_across_pages(serve, users):
    url = serve("--file", f"users={users}", "--max-scan-limit", "5")
    with Client(url) as c:
        everything = list(c.scan("users"))
        keys = [k for k, _ in everything]
        assert len(keys) == 101
        assert keys == sorted(str(i) for i in [-3, *range(100)])  # byte order: "10" < "2"
        assert all(v == user(int(k)) for k, v in everything)
        pages = metric(url, "scan", 200)
        assert pages == math.ceil(101 / 5)  # the server's default page, at most its limit

        assert [k for k, _ in c.scan("users", prefix="4")] == ["4"] + [f"4{i}" for i in range(10)]
        assert [k for k, _ in c.scan("users", prefix=4, limit=3)] == ["4", "40", "41"]
        assert [k for k, _ in c.scan("users", start="95", end="98")] == ["95", "96", "97"]
        assert [k for k, _ in c.scan("users", start="98")] == ["98", "99"]
        assert list(c.scan("users", prefix="x")) == []
        assert list(c.scan("users", limit=0)) == []

        # A page size over the server's limit is refused once, then pages are its own.
        before = metric(url, "scan", 400)
        assert [k for k, _ in c.scan("users", prefix="1", page_size=50)] == (
            ["1"] + [f"1{i}" for i in range(10)]
        )
        assert metric(url, "scan", 400) == before + 1

        with pytest.raises(ValueError, match="not both"):
            c.scan("users", prefix="1", start="2")
        # The iterator is lazy: a page is fetched as it is consumed.
        before = metric(url, "scan", 200)
        it = c.scan("users", page_size=2)
        assert metric(url, "scan", 200) == before
        assert next(it) == ("-3", user(-3))
        assert metric(url, "scan", 200) == before + 1


def test_datasets_and_info(serve, build_snapshot, users, tmp_path):
    pairs = build_snapshot([{"a": "x", "b": 1}], key="a", name="pairs")
    url = serve(
        "--file", f"users={users}", "--file", f"pairs={pairs}",
        "--file", f"later={tmp_path / 'not-yet.snapkv'}", ready=False,
    )  # fmt: skip
    with Client(url) as c:
        listed = {d["name"]: d for d in c.datasets()}
        assert set(listed) == {"users", "pairs", "later"}
        assert listed["later"]["ready"] is False
        # The others load in the background: wait for them, bounded.
        deadline = time.monotonic() + 10
        while not (listed["users"]["ready"] and listed["pairs"]["ready"]):
            assert time.monotonic() < deadline, listed
            time.sleep(0.05)
            listed = {d["name"]: d for d in c.datasets()}
        assert listed["users"]["keys"] == 101 and listed["users"]["version"] == "v1"
        info = c.info("users")
        assert info["name"] == "users" and info["version"] == "v1" and info["keys"] == 101
        assert info["metadata"]["key_columns"] == ["id"]
        assert info["metadata"]["value_encoding"] == "json"
        assert c.info("later")["ready"] is False
        # A dataset with nothing loaded yet answers 503 not_loaded, retried, then raised.
        with Client(url, retries=2, backoff=0.001) as impatient:
            with pytest.raises(HttpError) as e:
                impatient.get("later", "k")
        assert (e.value.status, e.value.code) == (503, "not_loaded")
    assert metric(url, "key", 503) == 3


def test_pinned_version(serve, build_snapshot, users, tmp_path):
    served = tmp_path / "served.snapkv"
    os.link(users, served)
    url = serve("--file", f"users={served}", "--poll-interval", "50ms")
    with Client(url, version="v1") as good, Client(url, version="v0") as gone, Client(url) as c:
        assert good.version == "v1" and gone.version == "v0" and c.version is None
        assert good.get("users", 1) == user(1)
        assert good.get("users", 1000) is None
        assert good.get_many("users", [1, 2]) == [user(1), user(2)]
        assert [k for k, _ in good.scan("users", prefix="9")][:2] == ["9", "90"]
        assert good.info("users")["version"] == "v1"
        with pytest.raises(VersionMismatch) as e:
            gone.get("users", 1)
        # The server holds no v0: nothing answered, and it says what it holds.
        assert (e.value.dataset, e.value.pinned, e.value.served) == ("users", "v0", None)
        assert "v1 (current)" in str(e.value)
        assert isinstance(e.value, snapkv.SnapkvError)
        # An absent key is answered by a version too: no None from the wrong one.
        with pytest.raises(VersionMismatch):
            gone.get("users", 1000)
        with pytest.raises(VersionMismatch):
            gone.get_many("users", [1, 2])
        with pytest.raises(VersionMismatch):
            next(gone.scan("users"))
        with pytest.raises(VersionMismatch):
            gone.info("users")
        # A pin for one call.
        assert c.get("users", 1, version="v1") == user(1)
        with pytest.raises(VersionMismatch):
            c.get("users", 1, version="v0")

        # A new version replaces the pinned one: the server keeps the one it replaced for
        # pinned requests, until the next swap.
        for v in ("v2", "v3"):
            rows = [{"id": i, "name": f"user {i}", "score": -i} for i in range(10)]
            new = build_snapshot(rows, key="id", name=f"users-{v}", args=["--version", v])
            os.replace(new, served)
            deadline = time.monotonic() + 10
            while c.info("users")["version"] != v:
                assert time.monotonic() < deadline, f"{v} was not loaded"
                time.sleep(0.02)
            assert c.get("users", 1) == {"name": "user 1", "score": -1}
            if v == "v2":
                assert good.get("users", 1) == user(1)
                assert good.info("users")["version"] == "v1"
        with pytest.raises(VersionMismatch) as e:
            good.get("users", 1)
        assert (e.value.pinned, e.value.served) == ("v1", None)
        assert "v3 (current)" in str(e.value) and "v2 (previous)" in str(e.value)


def test_unknown_dataset_and_refused_requests(serve, users):
    url = serve("--file", f"users={users}", "--max-key-bytes", "8")
    with Client(url) as c:
        with pytest.raises(DatasetNotFound) as e:
            c.get("nope", "k")
        err = e.value
        assert isinstance(err, HttpError) and isinstance(err, snapkv.SnapkvError)
        assert (err.status, err.code) == (404, "dataset_not_found")
        assert '"nope"' in err.message and err.version is None
        assert "404" in str(err) and "/v1/datasets/nope/keys/k" in str(err)
        with pytest.raises(DatasetNotFound):
            c.info("nope")
        with pytest.raises(DatasetNotFound):
            c.get_many("nope", [1, 2])
        with pytest.raises(DatasetNotFound):
            list(c.scan("nope"))
        # Keys over the server's limit are refused with 400, and not retried.
        with pytest.raises(HttpError) as e:
            c.get("users", "123456789")
        assert (e.value.status, e.value.code, e.value.version) == (400, "key_too_long", "v1")
        with pytest.raises(HttpError, match="key_too_long"):
            c.get_many("users", [1, "123456789"])
        # The exceptions survive pickling (process pools, Metaflow steps) with their fields.
        copy = pickle.loads(pickle.dumps(e.value))
        assert type(copy) is HttpError
        assert (copy.status, copy.code, copy.message, copy.url) == (
            e.value.status,
            e.value.code,
            e.value.message,
            e.value.url,
        )
        mismatch = pickle.loads(pickle.dumps(VersionMismatch("d", "v1", "v2")))
        assert (mismatch.pinned, mismatch.served, str(mismatch)) == (
            "v1",
            "v2",
            str(VersionMismatch("d", "v1", "v2")),
        )
    assert metric(url, "key", 400) == 1
    assert metric(url, "mget", 400) == 1


def test_server_down_raises_after_retries():
    url = f"http://127.0.0.1:{free_port()}"
    c = Client(url, retries=2, backoff=0.01, backoff_max=0.02, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed) as e:
        c.get("users", 1)
    assert time.monotonic() - started < 5
    assert isinstance(e.value, ConnectionError) and isinstance(e.value, snapkv.SnapkvError)
    assert "3 attempts" in str(e.value) and url in str(e.value)
    assert isinstance(e.value.__cause__, httpx.ConnectError)
    with pytest.raises(ConnectionFailed, match="1 attempt:"):
        Client(url, retries=0).datasets()
    c.close()


def test_retries_until_the_dataset_loads(serve, users, tmp_path):
    """A dataset that is not loaded yet answers 503: the client waits it out."""
    later = tmp_path / "later.snapkv"
    url = serve("--file", f"users={later}", "--poll-interval", "50ms", ready=False)

    def publish_after_first_refusal():
        deadline = time.monotonic() + 10
        while metric(url, "key", 503) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.link(users, later)

    thread = threading.Thread(target=publish_after_first_refusal)
    thread.start()
    try:
        with Client(url, retries=100, backoff=0.02, backoff_max=0.1) as c:
            assert c.get("users", 5) == user(5)
    finally:
        thread.join()
    assert metric(url, "key", 503) >= 1
    assert metric(url, "key", 200) == 1


def test_retry_after_is_honoured():
    def answer(status, **headers):
        return httpx.Response(status, headers=headers)

    from snapkv.client import _retry_after

    assert _retry_after(answer(503, **{"Retry-After": "1"})) == 1.0
    assert _retry_after(answer(503)) == 0.0
    assert _retry_after(answer(429, **{"Retry-After": "86400"})) == 60.0
    assert _retry_after(answer(429, **{"Retry-After": "soon"})) == 0.0
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert _retry_after(answer(429, **{"Retry-After": past})) == 0.0


def test_one_client_from_many_threads(serve, users):
    url = serve("--file", f"users={users}", "--max-mget-keys", "9")
    errors = []
    with Client(url, max_connections=4) as c:

        def work(seed):
            try:
                for round in range(20):
                    i = (seed * 7 + round) % 120
                    assert c.get("users", i) == (user(i) if i < 100 else None)
                    keys = list(range(i, i + 25))
                    assert c.get_many("users", keys) == [user(k) if k < 100 else None for k in keys]
                assert len(list(c.scan("users", prefix=str(seed % 9 + 1)))) == 11
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert metric(url, "key", 200) + metric(url, "key", 404) == 8 * 20


def test_context_manager_and_close(serve, users):
    url = serve("--file", f"users={users}")
    with Client(url + "/", timeout=5) as c:
        assert c.url == url
        assert repr(c) == f"snapkv.Client({url!r})"
        assert c.get("users", 3) == user(3)
    with pytest.raises(RuntimeError, match="closed"):
        c.get("users", 3)
    c.close()  # twice is harmless
    pinned = Client(url, version="v1")
    assert repr(pinned) == f"snapkv.Client({url!r}, version='v1')"
    pinned.close()
    with pytest.raises(ValueError, match="url"):
        Client("ftp://example.com")
    with pytest.raises(ValueError, match="batch_size"):
        Client(url, batch_size=0)


def test_query_runs_on_the_server(serve, build_snapshot):
    rows = [
        {"country": c, "title_id": i, "genre": ["drama", "comedy"][i % 2], "views": i * 10}
        for c in ["SE", "US"]
        for i in range(20)
    ]
    path = build_snapshot(rows, key="country,title_id", name="views", args=["--version", "v1"])
    url = serve("--file", f"views={path}")
    with Client(url) as c:
        answer = c.query(
            "views",
            {"prefix": "SE/", "group_by": ["genre"], "aggregates": {"n": {"count": "*"},
             "top": {"max": "views"}}},
        )
        assert answer["version"] == "v1"
        assert answer["rows"] == [
            {"genre": "comedy", "n": 10, "top": 190},
            {"genre": "drama", "n": 10, "top": 180},
        ]
        with pytest.raises(snapkv.SnapkvError, match="no such field"):
            c.query("views", {"filter": {"nope": {"=": 1}}})
        with pytest.raises(VersionMismatch):
            c.query("views", {}, version="v0")
        table = c.query_table(
            "views",
            {"prefix": "US/", "filter": {"views": {">=": 150}}, "fields": ["views", "genre"]},
        )
        assert table.column_names == ["key", "views", "genre"]
        assert table.column("views").to_pylist() == [150, 160, 170, 180, 190]
        assert table.schema.metadata[b"snapkv.version"] == b"v1"
        with pytest.raises(snapkv.SnapkvError, match="no such field"):
            c.query_table("views", {"filter": {"nope": {"=": 1}}})
        with pytest.raises(VersionMismatch):
            c.query_table("views", {}, version="v0")
