"""The Python package against real files and stores: builds from pyarrow, pandas, polars and
batch iterables, reads them back through the memory-mapped Snapshot, publishes to a local
directory and to the S3-compatible test server, and every error path."""

import json
import os
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


def test_either_format_version_reads_the_same(tmp_path):
    t = pa.table({"id": [f"user:{i:04}" for i in range(500)], "n": list(range(500))})
    files = {}
    for version in (1, 2):
        files[version] = tmp_path / f"v{version}.snapkv"
        snapkv.build(t, key="id", output=files[version], format_version=version)
        for index_in_memory in (False, True):
            s = snapkv.Snapshot(files[version], index_in_memory=index_in_memory)
            assert s["user:0042"] == {"n": 42} and s.get("user:9999") is None
            assert [k for k, _ in s.scan(prefix="user:049")] == [f"user:049{i}" for i in range(10)]
            s.verify()
    # Version 2 carries its lookup section: a larger file of the same entries.
    assert files[2].stat().st_size > files[1].stat().st_size
    with pytest.raises(ValueError, match="format_version 3"):
        snapkv.build(t, key="id", output=tmp_path / "v3.snapkv", format_version=3)
    assert not (tmp_path / "v3.snapkv").exists()


def test_dictionary_from_the_previous_version_keeps_unchanged_blocks(tmp_path):
    def table(changed):
        ids = [f"user:{i:06}" for i in range(20_000)]
        notes = [f"note {i % 97} {'changed' if i in changed else 'same'}" for i in range(20_000)]
        return pa.table({"id": ids, "n": list(range(20_000)), "note": notes})

    v1, v2, v3 = (tmp_path / f"v{i}.snapkv" for i in (1, 2, 3))
    snapkv.build(table(set()), key="id", output=v1)
    snapkv.build(table({5_000}), key="id", output=v2, dictionary_from=v1)
    snapkv.build(table({5_000}), key="id", output=v3)
    a, b, c = (p.read_bytes() for p in (v1, v2, v3))
    # With v1's dictionary, v2's blocks before the changed row are v1's, byte for byte; a
    # dictionary trained anew changes them from the first block on.
    common = next(i for i in range(len(a)) if a[i] != b[i])
    assert common > 20_000  # row 5,000 of 20,000: a quarter into the data, many blocks in
    assert next(i for i in range(len(a)) if a[i] != c[i]) < 1_000
    assert snapkv.Snapshot(v2)["user:005000"]["note"].endswith("changed")
    # The same from the version a store's CURRENT names.
    store = tmp_path / "store"
    snapkv.publish(v1, store=str(store), dataset="scores", version="v1")
    v4 = tmp_path / "v4.snapkv"
    snapkv.build(table({5_000}), key="id", output=v4, dataset="scores", dictionary_from_store=store)
    d = v4.read_bytes()
    assert next(i for i in range(len(a)) if a[i] != d[i]) == common
    with pytest.raises(ValueError, match="needs dataset="):
        snapkv.build(table(set()), key="id", output=v4, dictionary_from_store=store)
    # A store not made yet: no current version, a dictionary is trained.
    snapkv.build(table(set()), key="id", output=v4, dataset="scores",
                 dictionary_from_store=tmp_path / "new-store")
    with pytest.raises(ValueError, match="cannot take the dictionary of"):
        snapkv.build(table(set()), key="id", output=v3, dictionary_from=tmp_path / "none")
    with pytest.raises(ValueError, match="needs compression"):
        snapkv.build(table(set()), key="id", output=v3, dictionary_from=v1, compression="none")


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
    with pytest.raises(snapkv.BuildError, match='row 1 .*on_duplicate="first" or "last"'):
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
    with pytest.raises(TypeError, match="key"):
        snapkv.Snapshot(out)[1.5]
    with pytest.raises(TypeError, match="bool"):
        snapkv.Snapshot(out)[True]
    with pytest.raises(ValueError, match="json_bigint"):
        snapkv.build(dup, key="id", output=out, json_bigint="hex", on_duplicate="last")
    with pytest.raises(ValueError, match="memory_limit"):
        snapkv.build(dup, key="id", output=out, memory_limit="lots", on_duplicate="last")
    with pytest.raises(ValueError, match="empty iterable"):
        snapkv.build(iter([]), key="id", output=out)
    with pytest.raises(ValueError, match="prefix"):
        snapkv.Snapshot(out).scan("a", start="b")


def test_a_damaged_block_fails_verify_and_the_read_that_meets_it(tmp_path):
    out = tmp_path / "d.snapkv"
    t = pa.table({"id": [f"k{i:05d}" for i in range(5000)], "v": [f"value {i}" * 4 for i in range(5000)]})
    snapkv.build(t, key="id", output=out, compression="none")
    data = bytearray(out.read_bytes())
    at = data.find(b"value 2500")
    assert at > 0
    data[at] ^= 0xFF
    out.write_bytes(bytes(data))
    s = snapkv.Snapshot(out)
    with pytest.raises(snapkv.CorruptError, match="checksum"):
        s.verify()
    with pytest.raises(snapkv.CorruptError):
        s.get_many([f"k{i:05d}" for i in range(5000)])
    assert s["k00000"] == {"v": "value 0" * 4}


def test_polars_round_trip(tmp_path):
    import polars as pl

    df = pl.DataFrame({"id": [3, 1, 2], "name": ["c", "a", "b"], "w": [0.5, None, 1.5]})
    out = tmp_path / "pl.snapkv"
    assert snapkv.build(df, key="id", output=out)["keys"] == 3
    s = snapkv.Snapshot(out)
    assert s[1] == {"name": "a", "w": None}
    back = pl.from_arrow(s.to_arrow())
    assert back.sort("id").equals(df.sort("id"))


def test_to_arrow_gives_back_the_source_table(tmp_path):
    df = pd.DataFrame(
        {
            "country": ["SE", "US", "SE"],
            "user": [42, 7, 100],
            "at": pd.to_datetime(["2026-11-30 12:00", "2026-11-30 13:00", "2026-12-01 00:00:00.5"], format="ISO8601").tz_localize("UTC"),
            "n": pd.array([1, None, 3], dtype="Int64"),
            "kind": pd.Categorical(["a", "b", "a"]),
            "tags": [["x", "y"], [], None],
            "score": [0.25, float("nan"), -1.0],
        }
    )
    out = tmp_path / "a.snapkv"
    snapkv.build(df, key=["country", "user"], output=out)
    s = snapkv.Snapshot(out)
    table = s.to_arrow()
    source = pa.Table.from_pandas(df, preserve_index=False)
    assert table.schema == source.schema.remove_metadata()
    # Entries come back in key order (keys sort as bytes: "SE/100" < "SE/42" < "US/7").
    assert table.column("user").to_pylist() == [100, 42, 7]
    expected = source.take([2, 0, 1])
    for name in ["country", "user", "at", "n", "kind", "tags"]:
        assert table.column(name).to_pylist() == expected.column(name).to_pylist(), name
    # NaN is written as JSON null: it comes back as a null.
    assert table.column("score").to_pylist() == [-1.0, 0.25, None]
    assert s.schema == table.schema
    assert s.to_arrow(prefix="SE/").num_rows == 2
    assert s.to_arrow(start="SE/42", limit=1).column("user").to_pylist() == [42]


def test_scan_and_iteration_in_key_order(tmp_path):
    keys = [f"user/{i:03d}" for i in range(200)] + ["zzz", "a"]
    t = pa.table({"id": keys, "n": list(range(len(keys)))})
    out = tmp_path / "s.snapkv"
    snapkv.build(t, key="id", output=out)
    s = snapkv.Snapshot(out)
    assert list(s) == sorted(keys)
    pairs = list(s.scan(prefix="user/01"))
    assert [k for k, _ in pairs] == [f"user/{i:03d}" for i in range(10, 20)]
    assert pairs[0][1] == {"n": 10}
    assert [k for k, _ in s.scan(start="user/198", end="zzz")] == ["user/198", "user/199"]
    assert [k for k, _ in s.scan(limit=3)] == ["a", "user/000", "user/001"]
    assert list(s.scan(prefix=b"nothing")) == []
    assert [k for k, _ in s.scan(prefix=("user", "19"))] == [f"user/{i}" for i in range(190, 200)]


def test_raw_values_are_bytes(tmp_path):
    t = pa.table({"id": ["a", "b"], "blob": [b"\x00\xffpayload", b""]})
    out = tmp_path / "r.snapkv"
    snapkv.build(t, key="id", output=out, raw_value="blob")
    s = snapkv.Snapshot(out)
    assert s["a"] == b"\x00\xffpayload" and s["b"] == b""
    assert s.metadata["value_encoding"] == "raw"
    assert s.to_arrow().to_pydict() == {"id": ["a", "b"], "blob": [b"\x00\xffpayload", b""]}


def test_big_integers_as_strings(tmp_path):
    t = pa.table({"id": ["a"], "big": pa.array([2**63 - 1], pa.int64())})
    out = tmp_path / "b.snapkv"
    snapkv.build(t, key="id", output=out, json_bigint="string")
    s = snapkv.Snapshot(out)
    assert s["a"] == {"big": str(2**63 - 1)}
    assert s.to_arrow().column("big").to_pylist() == [2**63 - 1]


def _version(day: int) -> str:
    return f"202611{day:02d}T000000Z"


def _publish_versions_rollback(store: str, options: "dict[str, str] | None", tmp_path) -> None:
    files = []
    for day in (1, 2):
        out = tmp_path / f"day{day}.snapkv"
        snapkv.build(pa.table({"id": ["k"], "day": [day]}), key="id", output=out)
        files.append(out)
    first = snapkv.publish(files[0], store, "daily", version=_version(1), options=options)
    assert first["previous"] is None and first["keys"] == 1 and first["files"] == ["day1.snapkv"]
    second = snapkv.publish([files[1]], store, "daily", version=_version(2), options=options)
    assert second["previous"] == _version(1)
    listed = snapkv.versions(store, "daily", options=options)
    assert [(v["version"], v["current"], v["complete"]) for v in listed] == [
        (_version(1), False, True),
        (_version(2), True, True),
    ]
    with pytest.raises(snapkv.RefusedError, match="not newer"):
        snapkv.publish(files[0], store, "daily", version=_version(1), options=options)
    back = snapkv.rollback(store, "daily", _version(1), reason="bad day 2", options=options)
    assert back["changed"] and back["previous"] == _version(2)
    assert back["pinned"]["reason"] == "bad day 2"
    assert snapkv.rollback(store, "daily", _version(1), options=options)["changed"] is False
    assert [v["version"] for v in snapkv.versions(store, "daily", options=options) if v["current"]] == [_version(1)]
    with pytest.raises(snapkv.StoreError, match="not found"):
        snapkv.rollback(store, "daily", _version(9), options=options)
    # Pinned by the rollback: the next publish stages, promote refuses until unpin.
    staged = snapkv.publish(files[1], store, "daily", version=_version(3), options=options)
    assert staged["staged"] and staged["pinned"]["reason"] == "bad day 2"
    with pytest.raises(snapkv.RefusedError, match="pinned"):
        snapkv.promote(store, "daily", _version(3), options=options)
    assert snapkv.unpin(store, "daily", reason="fixed", options=options)["changed"]
    assert snapkv.promote(store, "daily", _version(3), options=options)["previous"] == _version(1)
    held = snapkv.pin(store, "daily", reason="hold", options=options)
    assert held["version"] == _version(3) and held["pinned"]["reason"] == "hold"
    log = snapkv.history(store, "daily", options=options)
    assert [(e["seq"], e["action"], e["to"]) for e in log] == [
        (1, "publish", _version(1)),
        (2, "publish", _version(2)),
        (3, "rollback", _version(1)),
        (4, "stage", _version(3)),
        (5, "unpin", _version(1)),
        (6, "promote", _version(3)),
        (7, "pin", _version(3)),
    ]
    assert snapkv.history(store, "daily", last=1, options=options) == log[-1:]


def test_publish_versions_rollback_in_a_local_store(tmp_path):
    store = tmp_path / "store"
    _publish_versions_rollback(str(store), None, tmp_path)
    current = (store / "daily" / "CURRENT").read_text()
    assert _version(1) in current
    published = store / "daily" / "versions" / _version(1) / "day1.snapkv"
    assert snapkv.Snapshot(published)["k"] == {"day": 1}


def test_publish_versions_rollback_on_the_s3_test_server(tmp_path, s3_store):
    store, options = s3_store
    _publish_versions_rollback(store, options, tmp_path)


def test_policy_refusal_has_a_report_and_force_is_recorded(tmp_path):
    store = str(tmp_path / "store")
    big = tmp_path / "big.snapkv"
    snapkv.build(pa.table({"id": [f"u{i}" for i in range(1000)], "score": range(1000)}), key="id", output=big)
    tiny = tmp_path / "tiny.snapkv"
    snapkv.build(pa.table({"id": ["u1", "u2"], "other": [1, 2]}), key="id", output=tiny)
    first = snapkv.publish(big, store, "users", version=_version(1))
    assert first["checks"]["passed"] and first["checks"]["stored_policy"] is False
    with pytest.raises(snapkv.PolicyError, match="max_key_drop") as refused:
        snapkv.publish(tiny, store, "users", version=_version(2))
    assert isinstance(refused.value, snapkv.RefusedError)
    report = refused.value.report
    assert report["passed"] is False and report["current"] == _version(1)
    failed = {c["rule"]: c["detail"] for c in report["checks"] if c["outcome"] == "failed"}
    assert set(failed) == {"max_key_drop", "schema"}
    assert "dropped \"score\"" in failed["schema"]
    assert [v["version"] for v in snapkv.versions(store, "users")] == [_version(1)]
    with pytest.raises(ValueError, match="reason"):
        snapkv.publish(tiny, store, "users", version=_version(2), force=True)
    forced = snapkv.publish(tiny, store, "users", version=_version(2), force=True, reason="reset")
    assert forced["checks"]["passed"] is False and forced["previous"] == _version(1)
    last = snapkv.history(store, "users", last=1)[0]
    assert last["forced"] and last["overridden"] == ["max_key_drop", "schema"]


def test_publish_errors(tmp_path):
    good = tmp_path / "g.snapkv"
    snapkv.build(pa.table({"id": ["k"], "n": [1]}), key="id", output=good)
    with pytest.raises(OSError, match="missing"):
        snapkv.publish(tmp_path / "missing.snapkv", str(tmp_path / "store"), "d")
    bad = tmp_path / "bad.snapkv"
    bad.write_bytes(b"\0" * 4096)
    with pytest.raises(snapkv.CorruptError):
        snapkv.publish(bad, str(tmp_path / "store"), "d")
    with pytest.raises(ValueError, match="dataset"):
        snapkv.publish(good, str(tmp_path / "store"), "no/slashes")
    with pytest.raises(ValueError, match="store"):
        snapkv.publish(good, "s3:/typo", "d")
    with pytest.raises(ValueError, match="option"):
        snapkv.publish(good, str(tmp_path / "store"), "d", options={"endpoint": "x"})
    assert not (tmp_path / "store" / "d" / "CURRENT").exists()


def test_one_large_chunk_is_built_in_slices_with_its_row_numbers(tmp_path):
    # A table of one 30,000-row chunk: the builder cuts it into slices; messages still count
    # rows from the start of the table.
    ids = [f"k{i}" for i in range(30_000)]
    ids[25_000] = "k10"
    t = pa.table({"id": ids, "v": list(range(30_000))})
    assert t.column("id").num_chunks == 1
    with pytest.raises(snapkv.BuildError, match=r"row 11 and in Table row 25001"):
        snapkv.build(t, key="id", output=tmp_path / "dup.snapkv")
    summary = snapkv.build(t, key="id", output=tmp_path / "last.snapkv", on_duplicate="last")
    assert summary["keys"] == 29_999
    assert snapkv.Snapshot(tmp_path / "last.snapkv")["k10"] == {"v": 25_000}


def test_query_in_process(tmp_path):
    df = pd.DataFrame(
        {
            "country": ["SE", "SE", "SE", "US"],
            "title_id": [1, 2, 3, 1],
            "genre": ["drama", "drama", "comedy", "drama"],
            "views": [150, 50, 300, 1000],
        }
    )
    out = tmp_path / "views.snapkv"
    snapkv.build(df, key=["country", "title_id"], output=out)
    snap = snapkv.Snapshot(out)
    answer = snap.query(
        {
            "prefix": "SE/",
            "filter": {"views": {">": 100}},
            "group_by": ["genre"],
            "aggregates": {"total": {"sum": "views"}, "n": {"count": "*"}},
            "order_by": [{"field": "total", "desc": True}],
        }
    )
    assert answer["rows"] == [
        {"genre": "comedy", "total": 300, "n": 1},
        {"genre": "drama", "total": 150, "n": 1},
    ]
    assert answer["stats"]["rows_scanned"] == 3
    # JSON text works too; key columns are fields, integer ones numbers.
    rows = snap.query('{"filter": {"title_id": {"=": 1}}, "fields": ["country", "views"]}')["rows"]
    assert rows == [
        {"key": "SE/1", "country": "SE", "views": 150},
        {"key": "US/1", "country": "US", "views": 1000},
    ]
    with pytest.raises(ValueError, match='field "veiws": no such field'):
        snap.query({"filter": {"veiws": {">": 1}}})
    with pytest.raises(ValueError, match="not a query"):
        snap.query("[1, 2]")
    # The same answer as a pyarrow Table: columns in the query's order, typed.
    table = snap.query_table(
        {
            "prefix": "SE/",
            "group_by": ["genre"],
            "aggregates": {"total": {"sum": "views"}, "avg": {"avg": "views"}},
        }
    )
    assert table.column_names == ["genre", "total", "avg"]
    assert table.schema.field("total").type == pa.int64()
    assert table.schema.field("avg").type == pa.float64()
    assert table.to_pylist() == [
        {"genre": "comedy", "total": 300, "avg": 300.0},
        {"genre": "drama", "total": 200, "avg": 100.0},
    ]
    assert json.loads(table.schema.metadata[b"snapkv.stats"])["rows_scanned"] == 3
    with pytest.raises(ValueError, match="no such field"):
        snap.query_table({"fields": ["nope"]})
