import os
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow

Key = Union[str, bytes, int, Tuple[Union[str, bytes, int], ...]]

MAX_KEY_LEN: int

def key_bytes(key: Key) -> bytes:
    """The bytes of ``key`` as ``Snapshot`` looks it up: ``("SE", 42)`` is ``b"SE/42"``."""

class SnapkvError(Exception): ...
class BuildError(SnapkvError): ...
class CorruptError(SnapkvError): ...
class StoreError(SnapkvError): ...
class RefusedError(StoreError): ...
class ConflictError(StoreError): ...

class PolicyError(RefusedError):
    report: Dict[str, Any]


def build(
    data: Any,
    key: Sequence[str],
    output: str,
    *,
    dataset: Optional[str] = ...,
    version: Optional[str] = ...,
    value_columns: Optional[Sequence[str]] = ...,
    raw_value: Optional[str] = ...,
    compression: str = ...,
    memory_limit: str = ...,
    on_duplicate: str = ...,
    labels: Optional[Mapping[str, str]] = ...,
    json_bigint: str = ...,
    name: str = ...,
    shard: Optional[Tuple[int, int]] = ...,
    format_version: int = ...,
    dictionary_from: Optional[str] = ...,
    dictionary_from_store: Optional[str] = ...,
    store_options: Optional[Mapping[str, str]] = ...,
) -> Dict[str, Any]: ...
def publish(
    files: List[str],
    store: str,
    dataset: str,
    *,
    version: Optional[str] = ...,
    stage: bool = ...,
    reason: Optional[str] = ...,
    force: bool = ...,
    shard: Optional[Tuple[int, int]] = ...,
    options: Optional[Dict[str, str]] = ...,
) -> Dict[str, Any]: ...
def commit(
    store: str,
    dataset: str,
    version: str,
    shards: int,
    *,
    stage: bool = ...,
    reason: Optional[str] = ...,
    force: bool = ...,
    options: Optional[Dict[str, str]] = ...,
) -> Dict[str, Any]: ...
def versions(
    store: str, dataset: str, *, options: Optional[Dict[str, str]] = ...
) -> List[Dict[str, Any]]: ...
def rollback(
    store: str,
    dataset: str,
    to: str,
    *,
    pin: bool = ...,
    reason: Optional[str] = ...,
    options: Optional[Dict[str, str]] = ...,
) -> Dict[str, Any]: ...
def promote(
    store: str,
    dataset: str,
    version: str,
    *,
    reason: Optional[str] = ...,
    force: bool = ...,
    options: Optional[Dict[str, str]] = ...,
) -> Dict[str, Any]: ...
def pin(
    store: str,
    dataset: str,
    *,
    reason: str,
    version: Optional[str] = ...,
    options: Optional[Dict[str, str]] = ...,
) -> Dict[str, Any]: ...
def unpin(
    store: str,
    dataset: str,
    *,
    reason: Optional[str] = ...,
    options: Optional[Dict[str, str]] = ...,
) -> Dict[str, Any]: ...
def history(
    store: str,
    dataset: str,
    *,
    last: Optional[int] = ...,
    options: Optional[Dict[str, str]] = ...,
) -> List[Dict[str, Any]]: ...

class Scan:
    """An iterator over a snapshot's entries in key order."""

    def __iter__(self) -> "Scan": ...
    def __next__(self) -> Any: ...

class Snapshot:
    """A memory-mapped snapshot file.

    ``snap[key]`` (``KeyError`` when absent), ``get``, ``get_many``, ``scan``, ``to_arrow``,
    ``key in snap``, ``len(snap)``, ``iter(snap)`` (the keys). Values decode to Python objects
    for JSON datasets and to ``bytes`` for raw ones. Keys are ``str``, ``bytes``, ``int`` or a
    tuple of them (a composite key, joined with ``/``). Safe to share across threads.

        >>> snap = snapkv.Snapshot("scores.snapkv")
        >>> snap[42], snap.get(7), snap.get_many([42, 7])
        ({'score': 0.93}, None, [{'score': 0.93}, None])
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        cache_bytes: int = ...,
        index_in_memory: bool = ...,
    ) -> None:
        """Map the file at ``path`` and check its structure (``verify`` checks every block).
        Up to ``cache_bytes`` (default 256 MiB) of decompressed blocks are kept for later
        lookups. ``index_in_memory=True`` copies the index sections into anonymous memory
        (huge pages where the system allows them), as ``snapkv serve`` does: faster lookups
        for about 6 bytes of memory per key. Default: ``False``."""
    def __len__(self) -> int: ...
    def __contains__(self, key: Key) -> bool: ...
    def __getitem__(self, key: Key) -> Any: ...
    def __iter__(self) -> Iterator[Union[str, bytes]]: ...
    def get(self, key: Key, default: Any = ...) -> Any:
        """The value of ``key``, or ``default`` (``None``) when it is absent."""
    def get_many(self, keys: Iterable[Key]) -> List[Any]:
        """The values of ``keys``, in order, ``None`` where a key is absent."""
    def scan(
        self,
        prefix: Optional[Key] = ...,
        *,
        start: Optional[Key] = ...,
        end: Optional[Key] = ...,
        limit: Optional[int] = ...,
    ) -> Iterator[Tuple[Union[str, bytes], Any]]:
        """``(key, value)`` pairs in key order: keys starting with ``prefix``, or from ``start``
        (inclusive) to ``end`` (exclusive); at most ``limit``. Keys are ``str`` when UTF-8."""
    def to_arrow(
        self,
        prefix: Optional[Key] = ...,
        *,
        start: Optional[Key] = ...,
        end: Optional[Key] = ...,
        limit: Optional[int] = ...,
    ) -> pyarrow.Table:
        """The entries as a pyarrow Table with the stored schema: key columns, then values."""
    @property
    def schema(self) -> pyarrow.Schema:
        """The schema of ``to_arrow``'s table."""
    def query(self, query: Union[str, Mapping[str, Any]]) -> Dict[str, Any]:
        """Runs a query (select, filter, fields, group_by, aggregates, order_by, limit) over
        the rows: ``{"rows": [...], "stats": {...}}``; ``ValueError`` names a bad field."""
    def query_table(self, query: Union[str, Mapping[str, Any]]) -> pyarrow.Table:
        """Runs a query as ``query`` does; the rows as a pyarrow Table, a column per answer
        field in the query's order. The schema's metadata holds ``snapkv.stats``."""
    @property
    def metadata(self) -> Dict[str, Any]:
        """Dataset, version, created_at, key_columns, the source schema, builder, labels."""
    def verify(self) -> None:
        """Check every block's checksum; raises ``CorruptError`` naming the first bad one."""
