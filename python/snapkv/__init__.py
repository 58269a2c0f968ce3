"""snapkv for Python: build immutable, versioned key-value snapshots from the data a job
computes, publish them to a store, read them in-process, and query ``snapkv serve``.

    >>> import pandas as pd, snapkv
    >>> df = pd.DataFrame({"user_id": [42, 43], "score": [0.93, 0.41]})
    >>> summary = snapkv.build(df, key="user_id", output="scores.snapkv")
    >>> snapkv.Snapshot("scores.snapkv")[42]
    {'score': 0.93}

Building and reading run in the Rust crates behind the `snapkv` command: the same formats,
limits and errors.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from ._snapkv import (
    BuildError,
    ConflictError,
    CorruptError,
    PolicyError,
    RefusedError,
    Scan,
    Snapshot,
    SnapkvError,
    StoreError,
)
from .client import Client, ConnectionFailed, DatasetNotFound, HttpError, Key, VersionMismatch
from ._snapkv import build as _build
from ._snapkv import commit as _commit
from ._snapkv import history as _history
from ._snapkv import pin as _pin
from ._snapkv import promote as _promote
from ._snapkv import publish as _publish
from ._snapkv import rollback as _rollback
from ._snapkv import unpin as _unpin
from ._snapkv import versions as _versions

__all__ = [
    "build",
    "publish",
    "commit",
    "versions",
    "rollback",
    "promote",
    "pin",
    "unpin",
    "history",
    "Snapshot",
    "Scan",
    "SnapkvError",
    "BuildError",
    "CorruptError",
    "StoreError",
    "RefusedError",
    "PolicyError",
    "ConflictError",
    "Client",
    "HttpError",
    "DatasetNotFound",
    "VersionMismatch",
    "ConnectionFailed",
    "Key",
]

PathLike = Union[str, "os.PathLike[str]"]


def _arrow_stream(data: Any) -> Any:
    """An object with ``__arrow_c_stream__`` for ``data``."""
    if hasattr(data, "__arrow_c_stream__"):
        return data
    import pyarrow as pa

    module = type(data).__module__.split(".")[0]
    if module == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    if module == "polars":
        return data.to_arrow()
    if isinstance(data, (pa.RecordBatch, pa.Table)):
        return data
    if isinstance(data, Iterable):
        batches = iter(data)
        try:
            first = next(batches)
        except StopIteration:
            raise ValueError("data is an empty iterable: no record batches to build from")
        if not isinstance(first, pa.RecordBatch):
            raise TypeError(
                f"an iterable of data must yield pyarrow.RecordBatch, not {type(first).__name__}"
            )

        def all_batches() -> Iterable[pa.RecordBatch]:
            yield first
            yield from batches

        return pa.RecordBatchReader.from_batches(first.schema, all_batches())
    raise TypeError(
        "data must be a pyarrow Table or RecordBatchReader, a pandas or polars DataFrame, an "
        f"object with __arrow_c_stream__, or an iterable of record batches, not {type(data).__name__}"
    )


def build(
    data: Any,
    key: Union[str, Sequence[str]],
    output: PathLike,
    *,
    dataset: Optional[str] = None,
    version: Optional[str] = None,
    value_columns: Optional[Sequence[str]] = None,
    raw_value: Optional[str] = None,
    compression: str = "zstd:3",
    memory_limit: str = "1GiB",
    on_duplicate: str = "error",
    labels: Optional[Mapping[str, str]] = None,
    json_bigint: str = "number",
    shard: Optional[Tuple[int, int]] = None,
    format_version: int = 2,
    dictionary_from: Optional[PathLike] = None,
    dictionary_from_store: Optional[PathLike] = None,
    store_options: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """Build a snapshot file from ``data``, keyed by the column(s) ``key``.

    ``data`` is a pyarrow Table or RecordBatchReader, a pandas or polars DataFrame, any object
    with ``__arrow_c_stream__``, or an iterable of ``pyarrow.RecordBatch`` (read as a stream:
    it may be larger than memory). Rows cross into Rust through the Arrow C stream, without
    copies, and the GIL is released while building.

    Values are a JSON object of the other columns (or ``value_columns``, in that order), or
    the bytes of the ``raw_value`` column. Several key columns are joined with ``/``.
    ``dataset`` and ``version`` are recorded in the file when given (``publish`` then refuses
    others). ``on_duplicate`` is ``"error"``, ``"first"`` or ``"last"``. ``json_bigint="string"``
    writes 64-bit integers and decimals as JSON strings, which JavaScript clients keep exact.
    ``labels`` are free-form strings recorded in the metadata. The file is written next to
    ``output`` and renamed over it when complete: a failed build leaves nothing behind.
    ``shard=(I, N)`` marks the file as shard ``I`` of ``N`` of a version built by independent
    tasks, each from the rows of its own key range (it may then be empty); see ``commit``.
    ``format_version=1`` writes the previous snapshot format, for readers not yet upgraded.
    ``dictionary_from`` names a snapshot file (the dataset's previous version) whose
    compression dictionary is used instead of training one: blocks whose entries did not
    change are then byte-identical to that version's, and readers holding it fetch only the
    changed blocks. ``dictionary_from_store`` does the same with the version ``CURRENT`` names
    for ``dataset`` in a store (URL or directory, ``store_options`` as ``publish``'s
    ``options``; of a sharded version, the shard ``shard`` names); a dataset without a current
    version trains its own.

    Returns a summary dict (``rows``, ``keys``, ``bytes_out``, ``built_at``, ...). Raises
    ``BuildError`` for bad data (naming the row), ``ValueError`` for bad options and
    ``OSError`` when the output cannot be written.

        >>> import pyarrow as pa
        >>> t = pa.table({"id": ["a", "b"], "n": [1, 2]})
        >>> snapkv.build(t, key="id", output="n.snapkv")["keys"]
        2
    """
    keys = [key] if isinstance(key, str) else list(key)
    return _build(
        _arrow_stream(data),
        keys,
        os.fspath(output),
        dataset=dataset,
        version=version,
        value_columns=None if value_columns is None else list(value_columns),
        raw_value=raw_value,
        compression=compression,
        memory_limit=memory_limit,
        on_duplicate=on_duplicate,
        labels=None if labels is None else dict(labels),
        json_bigint=json_bigint,
        name=type(data).__name__,
        shard=shard,
        format_version=format_version,
        dictionary_from=None if dictionary_from is None else os.fspath(dictionary_from),
        dictionary_from_store=None if dictionary_from_store is None else os.fspath(dictionary_from_store),
        store_options=None if store_options is None else dict(store_options),
    )


def _files(files: Union[PathLike, Iterable[PathLike]]) -> List[str]:
    if isinstance(files, (str, os.PathLike)):
        return [os.fspath(files)]
    return [os.fspath(f) for f in files]


def publish(
    files: Union[PathLike, Iterable[PathLike]],
    store: str,
    dataset: str,
    *,
    version: Optional[str] = None,
    stage: bool = False,
    reason: Optional[str] = None,
    force: bool = False,
    shard: Optional[Tuple[int, int]] = None,
    options: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """Upload snapshot ``files`` as a new version of ``dataset`` and make it current.

    ``store`` is a URL as the ``snapkv`` command takes it: ``s3://bucket/prefix``, ``gs://…``,
    ``az://…``, ``file:///dir`` or a local directory. ``options`` are store options
    (``endpoint``, ``region``, ``allow_http``, …); ``AWS_*``, ``GOOGLE_*`` and ``AZURE_*``
    environment variables are read too. ``version`` defaults to the version recorded in the
    files, else the current UTC time as ``YYYYMMDDTHHMMSSZ``.

    Every file is verified, uploaded, checked and listed in the version's manifest before
    ``CURRENT`` moves, by compare-and-swap: readers never see a partial version. With
    ``stage=True``, or when the dataset is pinned, the version is completed but ``CURRENT``
    stays (``promote`` moves it later). ``reason`` goes into the dataset's history.

    Before uploading, the version is checked against the dataset's policy (``snapkv policy``;
    the recommended rules when it has none) and the current version. A version that breaks a
    rule raises ``PolicyError``, whose ``report`` lists every rule checked; ``force=True``
    with a ``reason`` publishes it anyway, and the history records the rules overridden.

    With ``shard=(I, N)``, the one file is uploaded as shard ``I`` of ``N`` of ``version``
    only, and the upload's receipt returned (``shard``, ``attempt``, ``file``, ``bytes``,
    ``keys``, ...); ``commit`` completes the version.

    Raises ``RefusedError`` for a version not newer than ``CURRENT`` (use ``rollback``) or one
    that exists, ``ConflictError`` when another publisher moved ``CURRENT`` first,
    ``StoreError`` when the store is unreachable or misconfigured, ``ValueError`` for a bad
    URL or name.

    Returns ``{"dataset", "version", "previous", "files", "bytes", "keys", "created_at",
    "staged", "pinned", "checks"}`` (``pinned``: the pin that made it stage, or ``None``;
    ``checks``: the policy report, ``{"passed", "checks": [{"rule", "outcome", "detail"}],
    ...}``).

        >>> snapkv.publish("scores.snapkv", "s3://my-bucket/snapkv", "scores")["version"]
        '20261130T031500Z'
    """
    return _publish(
        _files(files),
        store,
        dataset,
        version=version,
        stage=stage,
        reason=reason,
        force=force,
        shard=shard,
        options=_options(options),
    )


def commit(
    store: str,
    dataset: str,
    version: str,
    shards: int,
    *,
    stage: bool = False,
    reason: Optional[str] = None,
    force: bool = False,
    options: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """Complete ``version`` of ``dataset`` from its ``shards`` uploaded shards and make it
    current (or stage it).

    Independent tasks each upload one shard with ``publish(file, ..., version=V,
    shard=(I, N))``: every upload is an attempt with a receipt, so retried and speculative
    tasks are harmless. The commit takes one attempt per shard, checks that the shards' key
    ranges follow each other, checks the dataset's policy (``PolicyError``), writes the
    manifest and moves ``CURRENT`` by compare-and-swap. A missing shard raises
    ``RefusedError`` naming it; running the commit again is safe. Returns what ``publish``
    returns, with ``shards``. ``snapkv.spark.write`` does all of this from a Spark DataFrame.

        >>> snapkv.publish("part-3.snapkv", store, "scores", version="v7", shard=(3, 8))["attempt"]
        '9f2c01d4a7b3e655'
        >>> snapkv.commit(store, "scores", "v7", 8)["shards"]
        8
    """
    return _commit(
        store,
        dataset,
        version,
        shards,
        stage=stage,
        reason=reason,
        force=force,
        options=_options(options),
    )


def versions(
    store: str, dataset: str, *, options: Optional[Mapping[str, str]] = None
) -> List[Dict[str, Any]]:
    """The versions of ``dataset`` in ``store``, oldest first.

    Each is ``{"version", "current", "complete"}``, and for a complete version also
    ``"created_at"``, ``"files"``, ``"bytes"`` and ``"keys"``. An incomplete version has no
    manifest: an upload under way or abandoned.

        >>> [v["version"] for v in snapkv.versions("./store", "scores") if v["current"]]
        ['20261130T031500Z']
    """
    return _versions(store, dataset, options=_options(options))


def rollback(
    store: str,
    dataset: str,
    to: str,
    *,
    pin: bool = True,
    reason: Optional[str] = None,
    options: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """Make the complete version ``to`` of ``dataset`` current again (by compare-and-swap).

    Readers following the store switch to it at their next poll. The dataset is pinned to
    ``to`` unless ``pin=False``, so that the next scheduled publish stages its version rather
    than undoing the rollback (``unpin`` releases it). Returns ``{"dataset", "version",
    "changed", "previous", "pinned"}``; ``changed`` is false when nothing had to be written.
    Raises ``StoreError`` for an unknown version and ``RefusedError`` for an incomplete one.

        >>> snapkv.rollback("./store", "scores", "20261129T031500Z", reason="bad scores")["changed"]
        True
    """
    return _rollback(store, dataset, to, pin=pin, reason=reason, options=_options(options))


def promote(
    store: str,
    dataset: str,
    version: str,
    *,
    reason: Optional[str] = None,
    force: bool = False,
    options: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """Make the staged ``version`` current: it must be complete and newer than ``CURRENT``,
    and the dataset must not be pinned (``RefusedError`` otherwise). It must pass the
    dataset's policy against ``CURRENT`` (``PolicyError`` with a ``report`` otherwise;
    ``force=True`` with a ``reason`` overrides, as for ``publish``). The result has the
    policy report as ``"checks"`` when ``CURRENT`` moved.

        >>> snapkv.publish("scores.snapkv", "./store", "scores", stage=True)["staged"]
        True
        >>> snapkv.promote("./store", "scores", "20261130T031500Z")["changed"]
        True
    """
    return _promote(
        store, dataset, version, reason=reason, force=force, options=_options(options)
    )


def pin(
    store: str,
    dataset: str,
    *,
    reason: str,
    version: Optional[str] = None,
    options: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """Pin ``dataset`` to ``version`` (moving ``CURRENT`` there first) or to the current
    version: until ``unpin``, publishes stage their versions and ``promote`` refuses.

        >>> snapkv.pin("./store", "scores", reason="INC-7: hold while we investigate")["pinned"]["reason"]
        'INC-7: hold while we investigate'
    """
    return _pin(store, dataset, reason=reason, version=version, options=_options(options))


def unpin(
    store: str,
    dataset: str,
    *,
    reason: Optional[str] = None,
    options: Optional[Mapping[str, str]] = None,
) -> Dict[str, Any]:
    """Release the pin of ``dataset``; ``changed`` is false when it was not pinned."""
    return _unpin(store, dataset, reason=reason, options=_options(options))


def history(
    store: str,
    dataset: str,
    *,
    last: Optional[int] = None,
    options: Optional[Mapping[str, str]] = None,
) -> List[Dict[str, Any]]:
    """The audit log of ``dataset``, oldest first (the ``last`` newest entries when given):
    every publish, stage, promote, rollback, pin and unpin, as ``{"seq", "at", "by",
    "action", "from", "to", "reason", "forced", "overridden"}`` (``overridden``: the policy
    rules a forced publish or promote went past).

        >>> [(e["action"], e["to"]) for e in snapkv.history("./store", "scores", last=2)]
        [('publish', '20261129T031500Z'), ('rollback', '20261128T031500Z')]
    """
    return _history(store, dataset, last=last, options=_options(options))


def _options(options: Optional[Mapping[str, str]]) -> Optional[Dict[str, str]]:
    return None if options is None else dict(options)
