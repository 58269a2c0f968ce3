"""Writing a Spark DataFrame as a range-sharded snapkv version, from the executors.

``write`` range-partitions the DataFrame by its snapkv key (the bytes snapkv looks keys up
by), has every task build its partition into one shard with this package and upload it, and
commits the version from the driver once every shard is in. Nothing runs besides Spark: the
executors need this package (the same wheel) and access to the store.

    import snapkv.spark
    snapkv.spark.write(df, key="user_id", store="s3://my-bucket/snapkv",
                       dataset="predictions", shards=64)
"""

import contextlib
import datetime
import os
import tempfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

# The column holding each row's key bytes while the DataFrame is partitioned.
_KEY_COLUMN = "__snapkv_key__"
# What each task reports to the driver.
_RECEIPT_SCHEMA = "shard INT, attempt STRING, keys LONG, bytes LONG, file STRING"


def _key_expression(df: Any, key: Sequence[str]) -> Any:
    """A Spark column of the key text, as ``snapkv build`` renders keys: strings as they are,
    integers in decimal, dates as ``YYYY-MM-DD``, several columns joined with ``/``. Spark
    orders strings by their UTF-8 bytes, as snapkv orders keys, so a range partitioning on it
    gives shards whose key ranges follow each other."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    parts = []
    for name in key:
        if name not in df.columns:
            raise ValueError(f"key column {name!r} is not in the DataFrame: {df.columns}")
        kind = df.schema[name].dataType
        if isinstance(kind, T.StringType):
            parts.append(F.col(name))
        elif isinstance(kind, (T.ByteType, T.ShortType, T.IntegerType, T.LongType)):
            parts.append(F.col(name).cast("string"))
        elif isinstance(kind, T.DateType):
            parts.append(F.date_format(F.col(name), "yyyy-MM-dd"))
        else:
            raise TypeError(
                f"key column {name!r} is {kind.simpleString()}: snapkv.spark.write takes string, "
                "integer and date key columns (make other keys a string column first)"
            )
    return parts[0] if len(parts) == 1 else F.concat_ws("/", *parts)


def _upload_shard(
    data: Any,
    shard: int,
    shards: int,
    key: List[str],
    store: str,
    dataset: str,
    version: str,
    build_args: Mapping[str, Any],
    options: Optional[Mapping[str, str]],
) -> Dict[str, Any]:
    """Builds ``data`` as shard ``shard`` of ``shards`` in a temporary directory and uploads it
    as an attempt; returns the receipt."""
    import snapkv

    with tempfile.TemporaryDirectory(prefix="snapkv-shard-") as tmp:
        out = os.path.join(tmp, f"shard-{shard:05}.snapkv")
        snapkv.build(data, key=key, output=out, dataset=dataset, version=version,
                     shard=(shard, shards), **build_args)
        return snapkv.publish(out, store, dataset, version=version, shard=(shard, shards),
                              options=options)


# Keys Spark samples per input partition to choose the range split points (its default is 100):
# more samples, shards of more equal size, for a pass over the data that is made anyway.
_SAMPLES_PER_PARTITION = 1000
_SAMPLE_SIZE_CONF = "spark.sql.execution.rangeExchange.sampleSizePerPartition"


@contextlib.contextmanager
def _sampling(session: Any, samples: int) -> Iterator[None]:
    """Has Spark sample at least ``samples`` keys per partition for range partitioning while
    the block runs, then puts the session's setting back."""
    before = session.conf.get(_SAMPLE_SIZE_CONF, None)
    raise_it = before is None or int(before) < samples
    if raise_it:
        session.conf.set(_SAMPLE_SIZE_CONF, str(samples))
    try:
        yield
    finally:
        if raise_it:
            if before is None:
                session.conf.unset(_SAMPLE_SIZE_CONF)
            else:
                session.conf.set(_SAMPLE_SIZE_CONF, before)


def _default_version() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def upload_shards(
    df: Any,
    key: Union[str, Sequence[str]],
    store: str,
    dataset: str,
    shards: int,
    version: str,
    *,
    value_columns: Optional[Sequence[str]] = None,
    raw_value: Optional[str] = None,
    compression: str = "zstd:3",
    memory_limit: str = "1GiB",
    on_duplicate: str = "error",
    json_bigint: str = "number",
    options: Optional[Mapping[str, str]] = None,
    reuse_dictionary: bool = True,
) -> Any:
    """The lazy part of ``write``: a DataFrame with one row per shard uploaded (``shard``,
    ``attempt``, ``keys``, ``bytes``, ``file``), computed by running it (``collect()``). Each
    task builds its range partition as shard ``I`` of ``shards`` of ``version`` and uploads it
    as an attempt (``snapkv.publish(..., shard=(I, shards))``): a retried or speculative task
    adds an attempt, and ``snapkv.commit`` references one per shard."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    if shards < 1:
        raise ValueError(f"shards={shards}: a version has at least 1 shard")
    keys: List[str] = [key] if isinstance(key, str) else list(key)
    columns = list(df.columns)
    if _KEY_COLUMN in columns:
        raise ValueError(f"the DataFrame has a column named {_KEY_COLUMN!r}, which write uses")
    arrow_schema = to_arrow_schema(df.schema)
    store_options = dict(options or {})
    build_args = dict(
        value_columns=value_columns,
        raw_value=raw_value,
        compression=compression,
        memory_limit=memory_limit,
        on_duplicate=on_duplicate,
        json_bigint=json_bigint,
        # Each shard compressed with the dictionary of the same shard of the current version:
        # unchanged blocks stay byte-identical, and readers fetch only the changed ones.
        dictionary_from_store=store if reuse_dictionary and compression != "none" else None,
        store_options=store_options,
    )
    parted = (
        df.withColumn(_KEY_COLUMN, _key_expression(df, keys))
        .repartitionByRange(shards, _KEY_COLUMN)
        .sortWithinPartitions(_KEY_COLUMN)
    )

    def task(batches: Iterator[Any]) -> Iterator[Any]:
        from pyspark import TaskContext

        context = TaskContext.get()
        shard = context.partitionId() if context is not None else 0

        def rows() -> Iterator[Any]:
            for b in batches:
                yield pa.RecordBatch.from_arrays(
                    [b.column(b.schema.get_field_index(c)) for c in columns],
                    schema=arrow_schema,
                )

        # A range without rows is an empty shard: built from an empty table of the schema.
        stream = rows()
        first = next(stream, None)
        data: Any
        if first is None:
            data = pa.Table.from_batches([], schema=arrow_schema)
        else:

            def all_rows() -> Iterator[Any]:
                yield first
                yield from stream

            data = pa.RecordBatchReader.from_batches(arrow_schema, all_rows())
        receipt = _upload_shard(data, shard, shards, keys, store, dataset, version, build_args,
                                store_options)
        yield pa.RecordBatch.from_pylist(
            [
                {
                    "shard": receipt["shard"],
                    "attempt": receipt["attempt"],
                    "keys": receipt["keys"],
                    "bytes": receipt["bytes"],
                    "file": receipt["file"],
                }
            ],
            schema=pa.schema(
                [
                    ("shard", pa.int32()),
                    ("attempt", pa.string()),
                    ("keys", pa.int64()),
                    ("bytes", pa.int64()),
                    ("file", pa.string()),
                ]
            ),
        )

    return parted.mapInArrow(task, _RECEIPT_SCHEMA)


def write(
    df: Any,
    key: Union[str, Sequence[str]],
    store: str,
    dataset: str,
    shards: int,
    version: Optional[str] = None,
    *,
    value_columns: Optional[Sequence[str]] = None,
    raw_value: Optional[str] = None,
    compression: str = "zstd:3",
    memory_limit: str = "1GiB",
    on_duplicate: str = "error",
    json_bigint: str = "number",
    stage: bool = False,
    reason: Optional[str] = None,
    force: bool = False,
    options: Optional[Mapping[str, str]] = None,
    reuse_dictionary: bool = True,
) -> Dict[str, Any]:
    """Write ``df`` as version ``version`` (default: the UTC time, ``YYYYMMDDTHHMMSSZ``) of
    ``dataset`` in ``store``, in ``shards`` range shards, and make it current.

    The DataFrame is range-partitioned by its snapkv key (Spark samples the keys to choose the
    split points: at least 1000 per input partition while this runs, against Spark's default
    of 100, for shards of more equal size) and sorted within partitions; each task builds its partition into a shard
    with ``snapkv.build`` (Arrow batches, no pandas) and uploads it; the driver then commits:
    one attempt per shard, split keys from the shards' key ranges, the dataset's policy, the
    manifest, then ``CURRENT`` by compare-and-swap (``stage=True`` leaves ``CURRENT`` alone).
    Key columns are string, integer or date columns, rendered as ``snapkv build`` renders them.
    The build arguments are ``snapkv.build``'s; ``options`` are store options for the driver
    and the executors alike. With ``reuse_dictionary`` (the default), each shard is compressed
    with the dictionary of the same shard of the dataset's current version (a first version
    trains its own): blocks whose rows did not change stay byte-identical, and readers fetch
    only the changed blocks (delta sync).

    A failed job raises and leaves ``CURRENT`` as it was: its uploads are an incomplete version
    that ``gc`` removes. Returns what ``commit`` did (``version``, ``shards``, ``keys``,
    ``checks``, ...).

        >>> snapkv.spark.write(df, key="user_id", store="s3://my-bucket/snapkv",
        ...                    dataset="predictions", shards=8)["shards"]
        8
    """
    import snapkv

    version = version or _default_version()
    with _sampling(df.sparkSession, _SAMPLES_PER_PARTITION):
        receipts = upload_shards(
            df,
            key,
            store,
            dataset,
            shards,
            version,
            value_columns=value_columns,
            raw_value=raw_value,
            compression=compression,
            memory_limit=memory_limit,
            on_duplicate=on_duplicate,
            json_bigint=json_bigint,
            options=options,
            reuse_dictionary=reuse_dictionary,
        ).collect()
    # Spark's range partitioning makes fewer partitions than asked when the keys are few: the
    # ranges it did not make are empty shards, uploaded from here.
    missing = sorted(set(range(shards)) - {r["shard"] for r in receipts})
    if missing:
        from pyspark.sql.pandas.types import to_arrow_schema
        import pyarrow as pa

        keys = [key] if isinstance(key, str) else list(key)
        empty = pa.Table.from_batches([], schema=to_arrow_schema(df.schema))
        for shard in missing:
            _upload_shard(empty, shard, shards, keys, store, dataset, version,
                          {"value_columns": value_columns, "raw_value": raw_value}, options)
    return snapkv.commit(
        store,
        dataset,
        version,
        shards,
        stage=stage,
        reason=reason,
        force=force,
        options=options,
    )
