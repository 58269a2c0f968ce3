"""The Python package against real files: builds from pyarrow, pandas and batch iterables,
reads them back through the memory-mapped Snapshot, and every error path."""

import threading

import pandas as pd
import pyarrow as pa
import pytest

import snapkv


def test_pyarrow_table_round_trip(tmp_path):
    t = pa.table({"id": ["b", "a"], "n": [2, 1], "tags": [["x"], None]})
    out = tmp_path / "t.snapkv"
    summary = snapkv.build(t, key="id", output=out, dataset="things")
    assert summary["keys"] == 2 and summary["dataset"] == "things"
    s = snapkv.Snapshot(out)
    assert len(s) == 2
    assert s["a"] == {"n": 1, "tags": None}
    assert s.get("zz") is None and s.get("zz", 0) == 0
    assert s.get_many(["b", "zz", b"a"]) == [{"n": 2, "tags": ["x"]}, None, {"n": 1, "tags": None}]
    assert "a" in s and "zz" not in s
    with pytest.raises(KeyError):
        s["zz"]
    assert s.metadata["dataset"] == "things"
    s.verify()


def test_pandas_utc_timestamps_integer_and_composite_keys(tmp_path):
    df = pd.DataFrame(
        {
            "country": ["SE", "US"],
            "user": [42, 7],
            "at": pd.to_datetime(["2026-11-30 12:00", "2026-11-30 13:00"]).tz_localize("UTC"),
            "n": pd.array([1, None], dtype="Int64"),
            "kind": pd.Categorical(["a", "b"]),
        }
    )
    out = tmp_path / "p.snapkv"
    snapkv.build(df, key=["country", "user"], output=out)
    s = snapkv.Snapshot(out)
    assert s[("SE", 42)] == {"at": "2026-11-30T12:00:00Z", "n": 1, "kind": "a"}
    assert s["US/7"]["n"] is None
    out = tmp_path / "i.snapkv"
    snapkv.build(df, key="user", output=out)
    assert snapkv.Snapshot(out)[42]["country"] == "SE"


def test_iterable_of_batches_larger_than_the_memory_limit(tmp_path):
    rows = 50_000

    def batches():
        for start in range(0, rows, 5_000):
            ids = [f"k{i:08d}" for i in range(start, start + 5_000)]
            yield pa.record_batch({"id": ids, "payload": ["x" * 200] * len(ids)})

    out = tmp_path / "big.snapkv"
    summary = snapkv.build(batches(), key="id", output=out, memory_limit="4MiB")
    assert summary["keys"] == rows
    s = snapkv.Snapshot(out)
    assert s["k00012345"] == {"payload": "x" * 200}


def test_threads_share_one_snapshot(tmp_path):
    t = pa.table({"id": [f"k{i}" for i in range(1000)], "n": list(range(1000))})
    out = tmp_path / "t.snapkv"
    snapkv.build(t, key="id", output=out)
    s = snapkv.Snapshot(out)
    errors = []

    def read():
        for i in range(1000):
            if s[f"k{i}"]["n"] != i:
                errors.append(i)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_errors(tmp_path):
    out = tmp_path / "e.snapkv"
    dup = pa.table({"id": ["a", "a"], "n": [1, 2]})
    with pytest.raises(snapkv.BuildError, match="row 1"):
        snapkv.build(dup, key="id", output=out)
    assert not out.exists()
    with pytest.raises(snapkv.BuildError, match="nope"):
        snapkv.build(dup, key="nope", output=out)
    with pytest.raises(ValueError, match="on_duplicate"):
        snapkv.build(dup, key="id", output=out, on_duplicate="sometimes")
    with pytest.raises(ValueError, match="version"):
        snapkv.build(dup, key="id", output=out, version="_rc1", on_duplicate="last")
    with pytest.raises(TypeError):
        snapkv.build(42, key="id", output=out)
    with pytest.raises(OSError):
        snapkv.Snapshot(tmp_path / "missing.snapkv")
    bad = tmp_path / "bad.snapkv"
    bad.write_bytes(b"not a snapshot at all" * 10)
    with pytest.raises(snapkv.CorruptError):
        snapkv.Snapshot(bad)
    snapkv.build(dup, key="id", output=out, on_duplicate="last")
    with pytest.raises(ValueError, match="key"):
        snapkv.Snapshot(out)[1.5]
