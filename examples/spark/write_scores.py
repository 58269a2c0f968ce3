"""A Spark job that scores users and writes the scores as a range-sharded snapkv version.

Each Spark task builds the shard of its key range and uploads it to the store; the driver
commits the version, which readers following the store then serve:

    python write_scores.py --store ./snapkv-store --dataset scores --rows 100000 --shards 8
    snapkv serve --store ./snapkv-store --dataset scores
    curl localhost:8080/v1/datasets/scores/keys/u0000042

Runs on `local[*]` by default; on a cluster, give `--master` (or submit with spark-submit)
and install this package on the executors. For S3, pass the store URL and `--store-option`s
(or the AWS_* variables, which the executors need too).
"""

import argparse
import os
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import snapkv.spark


def scores(spark: SparkSession, rows: int):
    """Stand-in for the real job: one row per user with a score and a segment."""
    return spark.range(rows).select(
        F.format_string("u%07d", F.col("id")).alias("user"),
        F.round(F.rand(seed=7) * 100, 2).alias("score"),
        F.element_at(F.array(F.lit("new"), F.lit("casual"), F.lit("loyal")),
                     (F.col("id") % 3 + 1).cast("int")).alias("segment"),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True, help="store URL: a directory, s3://bucket/prefix, ...")
    p.add_argument("--dataset", default="scores")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--version", help="default: the UTC time, YYYYMMDDTHHMMSSZ")
    p.add_argument("--master", default="local[*]")
    p.add_argument("--store-option", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args()
    options = dict(o.split("=", 1) for o in args.store_option)

    if args.master.startswith("local"):
        # Local workers run this interpreter, which has snapkv installed, whatever PATH holds.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(args.master).appName("snapkv-scores")
        .config("spark.ui.enabled", "false").getOrCreate()
    )
    started = time.monotonic()
    done = snapkv.spark.write(
        scores(spark, args.rows), key="user", store=args.store, dataset=args.dataset,
        shards=args.shards, version=args.version, options=options,
    )
    spark.stop()
    print(
        f"wrote {args.dataset} version {done['version']}: {done['keys']} keys in "
        f"{done['shards']} shards, {done['bytes']} bytes, {time.monotonic() - started:.1f}s; "
        f"CURRENT {done['previous'] or '(none)'} -> {done['version']}"
    )


if __name__ == "__main__":
    main()
