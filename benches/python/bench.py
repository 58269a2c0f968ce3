#!/usr/bin/env python3
"""Benchmarks of the Python package, printed as a Markdown table of ratios measured in one run.

Build: `snapkv.build` from an in-memory Arrow table, against the `snapkv build` command on the
same rows as Parquet, and against `DataFrame.to_parquet` (what a job already pays to hand its
rows to any other tool).

Read: `Snapshot.get` per call from Python against a Python `dict` lookup and redis-py `GET` on a
local Redis holding the same keys and values; `Snapshot.get_many` of 1000 keys against redis-py
`MGET` of 1000.

Usage (see benches/python/README.md):
    python benches/python/bench.py --snapkv target/release/snapkv [--rows 10000000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import snapkv

NAMES = ["ada", "alan", "grace", "edsger", "barbara", "donald", "ken", "dennis", "margaret"]
COUNTRIES = ["US", "US", "US", "SE", "DE", "IN", "BR", "JP"]


def table(rows: int, seed: int) -> pa.Table:
    """`rows` rows keyed by a 12-digit id in shuffled order; values of about 90 bytes as JSON."""
    rng = np.random.default_rng(seed)
    ids = pc.utf8_lpad(pc.cast(pa.array(rng.permutation(rows)), pa.string()), 12, "0")
    return pa.table(
        {
            "id": ids,
            "user": pa.DictionaryArray.from_arrays(
                pa.array(rng.integers(0, len(NAMES), rows), pa.int8()), pa.array(NAMES)
            ).cast(pa.string()),
            "country": pa.array(np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), rows)]),
            "since": pa.array(rng.integers(17000, 20000, rows), pa.int32()).cast(pa.date32()),
            "score": pa.array(np.round(rng.random(rows) * 1000, 2)),
            "visits": pa.array(rng.integers(0, 100_000, rows)),
            "active": pa.array(rng.random(rows) < 0.8),
        }
    )


def timed(f: Callable[[], Any]) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def per_call(f: Callable[[Sequence[Any]], None], keys: Sequence[Any], repeat: int = 3) -> float:
    """Seconds per key, the best of `repeat` passes over `keys`."""
    return min(timed(lambda: f(keys)) for _ in range(repeat)) / len(keys)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(workdir: Path) -> "tuple[subprocess.Popen[bytes], Any]":
    import redis

    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server is not installed: apt-get install -y redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [server, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            return proc, client
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                sys.exit("redis-server did not start")
            time.sleep(0.05)


def build_bench(rows: int, cli: str, work: Path) -> List[Dict[str, Any]]:
    t = table(rows, seed=1)
    df = t.to_pandas()
    parquet = work / "rows.parquet"
    to_parquet = timed(lambda: df.to_parquet(parquet, index=False))
    del df
    from_arrow = timed(lambda: snapkv.build(t, key="id", output=work / "py.snapkv"))
    command = [cli, "build", "--input", str(parquet), "--key", "id", "--output", str(work / "cli.snapkv")]
    from_cli = timed(lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL))
    some = t.column("id")[:1000].to_pylist()
    same = snapkv.Snapshot(work / "py.snapkv").get_many(some)
    assert same == snapkv.Snapshot(work / "cli.snapkv").get_many(some)
    return [
        {"what": f"snapkv.build, {rows:,} rows from an Arrow table", "s": from_arrow, "base": from_arrow},
        {"what": "snapkv build (CLI), the same rows from Parquet", "s": from_cli, "base": from_arrow},
        {"what": "DataFrame.to_parquet, the same rows", "s": to_parquet, "base": from_arrow},
    ]


def read_bench(keys_n: int, lookups: int, work: Path) -> List[Dict[str, Any]]:
    t = table(keys_n, seed=2)
    path = work / "read.snapkv"
    snapkv.build(t, key="id", output=path)
    snap = snapkv.Snapshot(path)
    ids: List[str] = t.column("id").to_pylist()
    rng = random.Random(3)
    sample = [ids[rng.randrange(keys_n)] for _ in range(lookups)]
    as_dict = dict(zip(ids, snap.get_many(ids)))

    def snap_get(keys: Sequence[str]) -> None:
        get = snap.get
        for k in keys:
            get(k)

    def dict_get(keys: Sequence[str]) -> None:
        get = as_dict.get
        for k in keys:
            get(k)

    proc, redis_client = start_redis(work)
    try:
        pipe = redis_client.pipeline(transaction=False)
        for k, v in as_dict.items():
            pipe.set(k, json.dumps(v, separators=(",", ":")))
            if len(pipe) == 10_000:
                pipe.execute()
        pipe.execute()
        assert redis_client.dbsize() == keys_n

        def redis_get(keys: Sequence[str]) -> None:
            get = redis_client.get
            for k in keys:
                get(k)

        def redis_get_json(keys: Sequence[str]) -> None:
            get = redis_client.get
            loads = json.loads
            for k in keys:
                loads(get(k))

        batches = [sample[i : i + 1000] for i in range(0, len(sample), 1000)]

        def snap_many(_: Sequence[Any]) -> None:
            for b in batches:
                snap.get_many(b)

        def redis_many(_: Sequence[Any]) -> None:
            for b in batches:
                [json.loads(v) for v in redis_client.mget(b)]

        few = sample[: max(1000, lookups // 20)]
        snapkv_get = per_call(snap_get, sample)
        rows = [
            {"what": "Snapshot.get, one key per call", "s": snapkv_get, "base": snapkv_get},
            {"what": "dict.get (the rows in a Python dict)", "s": per_call(dict_get, sample), "base": snapkv_get},
            {"what": "redis-py GET (bytes, not decoded)", "s": per_call(redis_get, few), "base": snapkv_get},
            {"what": "redis-py GET + json.loads", "s": per_call(redis_get_json, few), "base": snapkv_get},
        ]
        calls = [None] * len(batches)
        many = per_call(snap_many, calls)
        rows += [
            {"what": "Snapshot.get_many(1000), per call", "s": many, "base": many},
            {"what": "redis-py MGET(1000) + json.loads, per call", "s": per_call(redis_many, calls), "base": many},
        ]
        return rows
    finally:
        proc.terminate()
        proc.wait()


def show(title: str, rows: List[Dict[str, Any]], unit: str) -> None:
    print(f"\n### {title}\n")
    print(f"| | {unit} | × the first row's time |")
    print("|---|---:|---:|")
    for r in rows:
        value = r["s"] * 1e6 if unit == "µs" else r["s"]
        print(f"| {r['what']} | {value:,.2f} | {r['s'] / r['base']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapkv", required=True, help="the snapkv command (a release build)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the build benchmark")
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys of the read benchmark")
    parser.add_argument("--lookups", type=int, default=200_000, help="random lookups per pass")
    parser.add_argument("--only", choices=["build", "read"], help="run one half")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="snapkv-pybench-") as tmp:
        work = Path(tmp)
        print(f"snapkv {snapkv.__file__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
        if args.only in (None, "build"):
            rows = build_bench(args.rows, args.snapkv, work)
            for r in rows:
                r["what"] += f" ({args.rows / r['s']:,.0f} rows/s)"
            show("Build", rows, "s")
        if args.only in (None, "read"):
            show(f"Read ({args.keys:,} keys, {args.lookups:,} random lookups)", read_bench(args.keys, args.lookups, work), "µs")


if __name__ == "__main__":
    main()
