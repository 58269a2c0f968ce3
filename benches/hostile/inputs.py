"""The inputs of benches/hostile/run.sh, written to the working directory."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

# a. 20k rows of 100 KB strings
schema = pa.schema([("k", pa.string()), ("v", pa.string())])
with pq.ParquetWriter("a-20k-100kb.parquet", schema, compression="snappy", use_dictionary=False, write_batch_size=8) as w:
    for part in range(20):
        keys = [f"k{part:02d}{i:04d}" for i in range(1000)]
        vals = [os.urandom(50 * 1024).hex() for _ in range(1000)]
        w.write_table(pa.table({"k": keys, "v": vals}, schema=schema))
# b. 5 NDJSON lines of 100 MB
with open("b-5x100mb.ndjson", "w") as f:
    for i in range(5):
        f.write(json.dumps({"k": f"k{i}", "v": "y" * (100 << 20)}) + "\n")
# c. a 1 GB CSV line
with open("c-1gb-line.csv", "w") as f:
    f.write("k,v\na,1\n")
    f.write("b," + "z" * (1 << 30) + "\n")
# d. a 1 GB CSV header
with open("d-1gb-header.csv", "w") as f:
    f.write("k," + "h" * (1 << 30) + "\na,1\n")
# e. 100k and 1M columns
for n, name in ((100_000, "e-100k-cols.csv"), (1_000_000, "f-1m-cols.csv")):
    with open(name, "w") as f:
        f.write("k," + ",".join(f"c{i}" for i in range(n)) + "\n")
        for r in range(3):
            f.write(f"r{r}," + ",".join("1" for _ in range(n)) + "\n")
