"""Writes small valid inputs of every format `snapkv build` reads to
fuzz/corpus/build_<format>/, the seeds of the build fuzz targets: each has a key column `k`.

Needs pyarrow (`pip install pyarrow`); run from anywhere: `python3 fuzz/seed_inputs.py`.
"""

import datetime
import decimal
import io
import json
import pathlib

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


def tables() -> list[pa.Table]:
    """Small tables with the types jobs write: strings, numbers, nulls, nested, temporal."""
    n = 12
    keys = [f"key{i:03}" for i in range(n)]
    return [
        pa.table({"k": keys, "v": list(range(n))}),
        pa.table({"k": keys, "x": [i * 0.5 for i in range(n)], "s": [None if i % 3 else f"s{i}" for i in range(n)]}),
        pa.table(
            {
                "k": pa.array(keys).dictionary_encode(),
                "tags": [[f"t{j}" for j in range(i % 4)] for i in range(n)],
                "obj": [{"a": i, "b": {"c": str(i)}} for i in range(n)],
            }
        ),
        pa.table(
            {
                "k": list(range(n)),
                "when": pa.array([datetime.datetime(2026, 1, 1, i) for i in range(n)], pa.timestamp("us", tz="UTC")),
                "day": pa.array([datetime.date(2026, 1, 1 + i) for i in range(n)]),
                "price": pa.array([decimal.Decimal(f"{i}.25") for i in range(n)], pa.decimal128(10, 2)),
                "ok": [i % 2 == 0 for i in range(n)],
                "bin": [bytes([i, 255 - i]) for i in range(n)],
            }
        ),
    ]


def write(target: str, name: str, data: bytes) -> None:
    path = CORPUS / target / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main() -> None:
    for i, table in enumerate(tables()):
        for codec in ("snappy", "zstd", "none"):
            sink = io.BytesIO()
            pq.write_table(table, sink, compression=codec, data_page_size=256, write_page_checksum=(codec == "none"))
            write("build_parquet", f"t{i}-{codec}.parquet", sink.getvalue())
        sink = io.BytesIO()
        with ipc.new_file(sink, table.schema) as w:
            for batch in table.to_batches(max_chunksize=5):
                w.write_batch(batch)
        write("build_arrow_file", f"t{i}.arrow", sink.getvalue())
        sink = io.BytesIO()
        with ipc.new_stream(sink, table.schema) as w:
            for batch in table.to_batches(max_chunksize=5):
                w.write_batch(batch)
        write("build_arrow_stream", f"t{i}.arrows", sink.getvalue())
        flat = table.select([f.name for f in table.schema if not pa.types.is_nested(f.type) and not pa.types.is_binary(f.type)])
        flat = flat.cast(pa.schema([pa.field(f.name, pa.string() if pa.types.is_dictionary(f.type) else f.type) for f in flat.schema]))
        sink = io.BytesIO()
        pacsv.write_csv(flat, sink)
        write("build_csv", f"t{i}.csv", sink.getvalue())
        rows = [{k: (str(v) if isinstance(v, (bytes, decimal.Decimal, datetime.date)) else v) for k, v in r.items()} for r in table.to_pylist()]
        write("build_ndjson", f"t{i}.ndjson", "".join(json.dumps(r) + "\n" for r in rows).encode())
    write("build_csv", "quoted.csv", b'k,v\r\na,"x, ""y""\nz"\r\nb,\n')
    write("build_ndjson", "mixed.ndjson", b'{"k":"a","v":{"n":[1,2],"m":{"d":null}}}\n\n{"k":"b","v":{"n":[],"m":null},"w":1.5e3}\n')


if __name__ == "__main__":
    main()
