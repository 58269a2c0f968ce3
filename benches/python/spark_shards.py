#!/usr/bin/env python3
"""Sharded builds on Spark against `snapkv build` on one machine, printed as Markdown tables of
ratios measured in one run.

For two key sets of `--rows` rows each (default 10M), written once as Parquet by Spark (not
timed):
- uniform: 32 hex characters (an MD5 of the row number), UUID-like;
- skewed: `COUNTRY/NUMBER` with half the rows in `US` and a long tail of countries, so that a
  few key prefixes hold most rows;

it times `snapkv.spark.write` of the Parquet rows into `--shards` shards on `local[2]` (Spark
samples the split points; each task builds and uploads its shard; the driver commits), and the
`snapkv build` command on the same Parquet files with `--shards` (one pass, exact quantiles),
each to a local store, and prints rows/s and the largest shard's keys over the mean.

Usage (see benches/python/README.md):
    python benches/python/spark_shards.py --snapkv target/release/snapkv [--rows 10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import snapkv
import snapkv.spark


def key_sets(spark: Any, rows: int) -> Dict[str, Any]:
    from pyspark.sql import functions as F

    base = spark.range(rows).select(
        F.col("id"),
        F.round(F.rand(seed=7) * 1000, 2).alias("score"),
        F.format_string("user%06d", (F.col("id") * 7919) % 1_000_000).alias("name"),
    )
    # Half the rows in US, a quarter in the next 3 countries, the rest spread over 60.
    tail = F.format_string("C%02d", (F.col("id") % 60).cast("int"))
    bucket = F.col("id") % 8
    country = (
        F.when(bucket < 4, F.lit("US"))
        .when(bucket == 4, F.lit("SE"))
        .when(bucket == 5, F.lit("DE"))
        .otherwise(F.when(bucket == 6, F.lit("IN")).otherwise(tail))
    )
    return {
        "uniform": base.withColumn("key", F.md5(F.col("id").cast("string"))),
        "skewed": base.withColumn(
            "key", F.concat_ws("/", country, F.format_string("%010d", F.col("id")))
        ),
    }


def shard_keys(store: Path, dataset: str) -> List[int]:
    (current,) = [v for v in snapkv.versions(str(store), dataset) if v["current"]]
    version_dir = store / dataset / "versions" / current["version"]
    manifest = json.loads((version_dir / "MANIFEST.json").read_text())
    return [len(snapkv.Snapshot(version_dir / f["name"])) for f in manifest["files"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snapkv", required=True, help="the snapkv binary (a release build)")
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--dir", help="working directory (default: a temporary one, removed after)")
    args = p.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    work = Path(args.dir or tempfile.mkdtemp(prefix="snapkv-spark-bench-"))
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("snapkv-spark-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", "4g")
        .config("spark.sql.shuffle.partitions", "8")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    results = []
    try:
        for name, df in key_sets(spark, args.rows).items():
            parquet = work / f"{name}.parquet"
            if not parquet.exists():
                df.write.parquet(str(parquet))
            rows = spark.read.parquet(str(parquet))

            store = work / f"store-{name}"
            shutil.rmtree(store, ignore_errors=True)
            started = time.monotonic()
            snapkv.spark.write(rows, key="key", store=str(store), dataset="spark",
                               shards=args.shards, version="v1")
            spark_s = time.monotonic() - started
            spark_keys = shard_keys(store, "spark")

            out = work / f"shards-{name}"
            shutil.rmtree(out, ignore_errors=True)
            started = time.monotonic()
            subprocess.run(
                [args.snapkv, "build", "-q", "-i", str(parquet), "--key", "key",
                 "--shards", str(args.shards), "-o", str(out)],
                check=True,
            )
            subprocess.run(
                [args.snapkv, "publish", *sorted(str(f) for f in out.glob("*.snapkv")),
                 "--store", str(store), "--dataset", "local", "--version", "v1"],
                check=True, stdout=subprocess.DEVNULL,
            )
            local_s = time.monotonic() - started
            local_keys = shard_keys(store, "local")
            assert sum(spark_keys) == sum(local_keys) == args.rows, (spark_keys, local_keys)
            results.append((name, spark_s, spark_keys, local_s, local_keys))
    finally:
        spark.stop()
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)

    print(f"{args.rows:,} rows into {args.shards} shards, Spark local[2] on "
          f"{os.cpu_count()} cores\n")
    print("| keys | build | s | rows/s | × snapkv build's time | largest / mean shard |")
    print("|---|---|---:|---:|---:|---:|")
    for name, spark_s, spark_keys, local_s, local_keys in results:
        for what, s, keys in [("snapkv build --shards + publish", local_s, local_keys),
                              ("snapkv.spark.write", spark_s, spark_keys)]:
            skew = max(keys) / (sum(keys) / len(keys))
            print(f"| {name} | {what} | {s:.1f} | {args.rows / s:,.0f} | {s / local_s:.2f} | "
                  f"{skew:.3f} |")
    print()
    for name, _, spark_keys, _, local_keys in results:
        print(f"{name}: keys per shard, Spark {spark_keys}; snapkv build {local_keys}")


if __name__ == "__main__":
    main()
