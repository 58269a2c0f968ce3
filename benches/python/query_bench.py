#!/usr/bin/env python3
"""Computing next to the data against fetching the rows and computing in the client, printed
as a Markdown table of ratios measured in one run.

`snapkv demo --rows 2000000` (2M rows, 100k per country prefix) serves the demo dataset
`content`. For the rows of one country prefix, grouped by country with the total views and the
10 titles with the most views:

- server: one `POST /v1/datasets/content/query`;
- client: `Client.scan` of the prefix (pages of 1000), then pandas `groupby` and `nlargest`
  (what an app does without `/query`);

in turns, `--runs` times each (default 20), reporting p50/p99 latency and the bytes received,
and checking that both give the same answer every time.

Usage (see benches/python/README.md):
    python benches/python/query_bench.py --snapkv target/release/snapkv
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import httpx
import pandas as pd

from snapkv.client import Client

QUERY: Dict[str, Any] = {
    "prefix": "US/",
    "group_by": ["country"],
    "aggregates": {"views": {"sum": "views"}, "top": {"top_k": {"by": "views", "k": 10}}},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(xs: List[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs))) - 1))]


def timed(run: Callable[[], Tuple[Any, int]], times: List[float]) -> Tuple[Any, int]:
    started = time.perf_counter()
    answer, received = run()
    times.append(time.perf_counter() - started)
    return answer, received


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snapkv", required=True, help="the snapkv binary (a release build)")
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="snapkv-query-bench-"))
    port = free_port()
    server = subprocess.Popen(
        [args.snapkv, "demo", "--dir", str(work), "--rows", str(args.rows),
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "snapkv demo exited"
            assert time.monotonic() < deadline, "the demo did not become ready"
            time.sleep(0.2)

        received = {"bytes": 0}

        def count(response: httpx.Response) -> None:
            response.read()
            received["bytes"] += len(response.content)

        with Client(url) as client, httpx.Client(base_url=url) as http:
            client._http.event_hooks["response"].append(count)  # noqa: SLF001

            def server_side() -> Tuple[Any, int]:
                r = http.post("/v1/datasets/content/query", json=QUERY)
                r.raise_for_status()
                row = r.json()["rows"][0]
                return (row["views"], [t["views"] for t in row["top"]]), len(r.content)

            def client_side() -> Tuple[Any, int]:
                received["bytes"] = 0
                rows = [
                    {"key": k, "country": k.split("/")[0], "views": v["views"]}
                    for k, v in client.scan("content", prefix="US/", page_size=1000)
                ]
                df = pd.DataFrame(rows)
                total = int(df.groupby("country")["views"].sum().iloc[0])
                top = [int(v) for v in df.nlargest(10, "views")["views"]]
                return (total, top), received["bytes"]

            # In turns, so that the machine's slow and fast moments fall on both alike.
            s_times: List[float] = []
            c_times: List[float] = []
            for _ in range(args.runs):
                s_answer, s_bytes = timed(server_side, s_times)
                c_answer, c_bytes = timed(client_side, c_times)
                # The same total and the same ten largest views (keys may differ on ties).
                assert s_answer == c_answer, (s_answer, c_answer)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    rows_in_prefix = args.rows // 20
    print(f"{args.rows:,}-row demo dataset; {rows_in_prefix:,} rows under the prefix US/; "
          f"{args.runs} runs each\n")
    print("| | p50 ms | p99 ms | bytes received | × server's p50 | × server's bytes |")
    print("|---|---:|---:|---:|---:|---:|")
    sp50 = percentile(s_times, 50)
    for name, times, nbytes in [("POST /query (server-side)", s_times, s_bytes),
                                ("scan + pandas (client-side)", c_times, c_bytes)]:
        print(f"| {name} | {percentile(times, 50) * 1000:.1f} | {percentile(times, 99) * 1000:.1f} | "
              f"{nbytes:,} | {percentile(times, 50) / sp50:.1f} | {nbytes / s_bytes:.0f} |")
    print()
    print(json.dumps({"server_p50_ms": sp50 * 1000, "client_p50_ms": percentile(c_times, 50) * 1000,
                      "speedup": percentile(c_times, 50) / sp50, "bytes_ratio": c_bytes / s_bytes}))


if __name__ == "__main__":
    main()
