"""``snapkv.spark.write`` on a real local Spark (PySpark from PyPI on a JRE), writing range
shards to the S3-compatible test server from the executors, committed by the driver, then
served by two real ``snapkv serve`` processes holding half of the shards each, peers of each
other."""

import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from typing import Any, Iterator, Set, Tuple

import pytest

import snapkv
import snapkv.spark
from snapkv.client import Client

from pyspark.sql import SparkSession
from pyspark.sql import functions as F


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    # local[2, 4]: two worker threads, and a failed task is tried up to 4 times.
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2,4]")
        .appName("snapkv-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    yield session
    session.stop()


def _users(spark: Any, n: int) -> Any:
    return spark.range(n).select(
        F.format_string("u%05d", F.col("id")).alias("user"),
        (F.col("id") * 3).alias("score"),
        F.when(F.col("id") % 2 == 0, "even").otherwise("odd").alias("kind"),
    )


def test_write_shards_from_the_executors_and_serve_them(
    spark: Any, serve: Any, tmp_path: Any, s3_store: Any
) -> None:
    store, options = s3_store
    df = _users(spark, 20_000)
    done = snapkv.spark.write(
        df, key="user", store=store, dataset="users", shards=8, version="v1", options=options
    )
    assert done["shards"] == 8 and done["keys"] == 20_000 and done["version"] == "v1"
    assert done["checks"]["passed"]
    (current,) = [v for v in snapkv.versions(store, "users", options=options) if v["current"]]
    assert current["version"] == "v1" and len(current["files"]) == 8
    # Integer keys partition by their text, as snapkv orders keys: shard ranges do not overlap
    # (the commit checks it), here with keys of different lengths.
    ints = spark.range(1, 2_000).select(F.col("id").alias("n"), (F.col("id") * 2).alias("twice"))
    snapkv.spark.write(ints, key="n", store=store, dataset="ints", shards=4, version="v1", options=options)

    # Two readers, each holding half of the shards, each the other's peer: every key answers
    # through either.
    env_options = [f"--store-option={k}={v}" for k, v in options.items()]
    ports = [_free_port(), _free_port()]
    urls = []
    for ordinal, (port, other) in enumerate([(ports[0], ports[1]), (ports[1], ports[0])]):
        urls.append(serve(
            "--store", store, "--dataset", "users", "--dataset", "ints",
            "--cache-dir", str(tmp_path / f"cache-{ordinal}"), *env_options,
            "--shard-of", f"{ordinal}/2", "--peers", f"http://127.0.0.1:{other}",
            "--peer-refresh", "100ms", listen=f"127.0.0.1:{port}",
        ))
    for url in urls:
        _wait_for_peers(url)
    keys = [f"u{i:05d}" for i in range(20_000)]
    for url in urls:
        with Client(url) as c:
            info = c.info("users")
            assert info["shards"] == 8 and len(info["shards_held"]) == 4
            assert c.get("users", "u00000") == {"score": 0, "kind": "even"}
            assert c.get("users", "u19999") == {"score": 59_997, "kind": "odd"}
            some = keys[::7]
            assert c.get_many("users", some) == [
                {"score": int(k[1:]) * 3, "kind": "even" if int(k[1:]) % 2 == 0 else "odd"}
                for k in some
            ]
            assert [k for k, _ in c.scan("users", page_size=997)] == keys
            assert [k for k, _ in c.scan("users", prefix="u099")] == keys[9_900:10_000]
            assert c.get("ints", 1000) == {"twice": 2000}
            assert len(list(c.scan("ints"))) == 1_999


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_peers(url: str) -> None:
    """Waits until the reader at ``url`` knows a peer that holds shards."""
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{url}/v1/shards", timeout=5) as r:
            if any(p["held"] for p in json.load(r)["peers"]):
                return
        assert time.monotonic() < deadline, f"{url} found no peer"
        time.sleep(0.05)


def test_shards_of_the_next_version_keep_the_unchanged_blocks(spark: Any, tmp_path: Any) -> None:
    store = str(tmp_path / "store")
    base = _users(spark, 20_000)
    snapkv.spark.write(base, key="user", store=store, dataset="d", shards=2, version="v1")
    # v2 changes the last 100 rows: with v1's dictionaries, each shard's blocks before them are
    # v1's byte for byte.
    changed = base.withColumn(
        "kind", F.when(F.col("score") >= 3 * 19_900, "changed").otherwise(F.col("kind"))
    )
    snapkv.spark.write(changed, key="user", store=store, dataset="d", shards=2, version="v2")
    # Spark samples the split keys anew: a boundary may move, and the blocks around it change.
    versions = tmp_path / "store" / "d" / "versions"
    before = set().union(*(_blocks(p) for p in (versions / "v1").glob("shard-*.snapkv")))
    for path in sorted((versions / "v2").glob("shard-*.snapkv")):
        blocks = _blocks(path)
        assert len(blocks & before) > 0.8 * len(blocks), (path.name, len(blocks & before), len(blocks))


def _blocks(path: Any) -> Set[Tuple[int, int]]:
    """The (checksum, length) of each data block of a snapshot file, from its block table."""
    data = path.read_bytes()
    table_at, table_len = struct.unpack_from("<QQ", data, len(data) - 192 + 24)
    table = data[table_at:table_at + table_len]
    return {
        (struct.unpack_from("<Q", table, i + 16)[0], struct.unpack_from("<I", table, i + 8)[0])
        for i in range(0, len(table), 32)
    }


def test_a_failed_job_leaves_current_as_it_was(spark: Any, s3_store: Any) -> None:
    store, options = s3_store
    snapkv.spark.write(_users(spark, 100), key="user", store=store, dataset="d", shards=2,
                       version="v1", options=options)

    @F.udf("string")  # type: ignore[misc]
    def broken(user: str) -> str:
        if user == "u00042":
            raise ValueError("a bad row")
        return user

    df = _users(spark, 100).withColumn("user", broken("user"))
    with pytest.raises(Exception, match="a bad row"):
        snapkv.spark.write(df, key="user", store=store, dataset="d", shards=2, version="v2",
                           options=options)
    listed = {v["version"]: v for v in snapkv.versions(store, "d", options=options)}
    assert listed["v1"]["current"]
    assert "v2" not in listed or not listed["v2"]["complete"]
    with pytest.raises(snapkv.RefusedError, match="no completed upload"):
        snapkv.commit(store, "d", "v2", 2, options=options)


def test_a_task_retried_after_its_upload_leaves_one_shard_referenced(
    spark: Any, snapkv_bin: Any, s3_store: Any
) -> None:
    store, options = s3_store
    receipts = snapkv.spark.upload_shards(
        _users(spark, 1_000), key="user", store=store, dataset="d", shards=4, version="v1",
        options=options,
    )

    @F.udf("int")  # type: ignore[misc]
    def fail_first_attempt(shard: int) -> int:
        from pyspark import TaskContext

        context = TaskContext.get()
        if shard == 0 and context is not None and context.attemptNumber() == 0:
            raise RuntimeError("the first attempt of shard 0 dies after its upload")
        return shard

    rows = receipts.withColumn("checked", fail_first_attempt("shard")).collect()
    assert sorted(r["shard"] for r in rows) == [0, 1, 2, 3]
    done = snapkv.commit(store, "d", "v1", 4, options=options)
    assert done["keys"] == 1_000 and len(done["files"]) == 4
    # Two attempts of shard 0 were uploaded; the manifest lists one, and gc would delete the
    # other.
    (kept,) = [f for f in done["files"] if f.startswith("shard-00000-of-00004.")]
    gc = subprocess.run(
        [str(snapkv_bin), "gc", "--store", store, "--dataset", "d", "--keep", "1",
         "--grace", "0s", "--dry-run", *[f"--store-option={k}={v}" for k, v in options.items()]],
        capture_output=True, text=True, check=True,
    )
    others = [
        line for line in gc.stdout.splitlines()
        if "shard-00000-of-00004." in line and line.endswith(".snapkv (not listed in the manifest: "
        "an upload attempt that was not committed, or its receipt)")
    ]
    assert len(others) == 1 and kept not in others[0], gc.stdout
    history = snapkv.history(store, "d", options=options)
    assert [e["action"] for e in history] == ["publish"]
    assert json.dumps(done["checks"])  # the report is plain data
