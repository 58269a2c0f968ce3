"""A client for the HTTP API of ``snapkv serve`` (``spec/openapi.yaml``).

    >>> import snapkv
    >>> with snapkv.Client("http://127.0.0.1:8080") as c:
    ...     c.get("scores", 42)
    ...     c.get_many("scores", [42, 43, 44])
    ...     [key for key, value in c.scan("scores", prefix="4")]
    {'score': 0.93}
    [{'score': 0.93}, {'score': 0.41}, None]
    ['4', '42', '43', '44']

Keys and values are those of ``snapkv.Snapshot``: keys are ``str``, ``bytes``, ``int`` or a
tuple of those (a composite key, its parts joined with ``/``); JSON values come back as Python
objects, raw values as ``bytes``. Requests share a pool of keep-alive connections, are retried
with backoff when the server is unreachable or busy, and can be pinned to one snapshot version.
"""

from __future__ import annotations

import base64
import email.utils
import json
import random
import threading
import time
from collections import deque
from types import TracebackType
from typing import (
    Any,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Type,
    Union,
)
from urllib.parse import quote

import httpx

from ._snapkv import MAX_KEY_LEN, SnapkvError
from ._snapkv import key_bytes as _key_bytes

__all__ = [
    "Client",
    "HttpError",
    "DatasetNotFound",
    "VersionMismatch",
    "ConnectionFailed",
    "Key",
]

Key = Union[str, bytes, int, Tuple[Union[str, bytes, int], ...]]
"""A key: ``str`` (its UTF-8 bytes), ``bytes``, ``int`` (its decimal text) or a tuple of those,
joined with ``/`` (``("SE", 42)`` is the key ``SE/42``), as ``snapkv build`` makes keys."""

# The format's longest key (spec/FORMAT.md): a longer or empty key is absent from every
# snapshot, as `Snapshot.get` finds, without asking the server.
_MAX_KEY_BYTES = MAX_KEY_LEN
# The version that answered a request about a dataset; also sent with pinned requests.
_ARROW_STREAM = "application/vnd.apache.arrow.stream"
_VERSION_HEADER = "X-Snapkv-Version"
# Answers that say "try again later": a gateway's or the server's own (overloaded, a dataset
# still loading), and rate limiting.
_RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Retry-After beyond this is taken as this: a retry loop must end in bounded time.
_MAX_RETRY_AFTER = 60.0
# `{"keys":[]}` around the keys of an mget body.
_MGET_BODY_OVERHEAD = len('{"keys":[]}')


class HttpError(SnapkvError):
    """The server refused a request: the HTTP ``status``, the API's error ``code`` (such as
    ``"bad_range"`` or ``"overloaded"``; ``None`` when the answer has no JSON error, as from a
    proxy) and its ``message``. ``version`` is the snapshot version that answered, when the
    server named one; ``method`` and ``url`` name the request.

        >>> try:
        ...     client.info("nope")
        ... except snapkv.HttpError as e:
        ...     print(e.status, e.code)
        404 dataset_not_found
    """

    def __init__(
        self,
        status: int,
        code: Optional[str],
        message: str,
        *,
        method: str = "",
        url: str = "",
        version: Optional[str] = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.url = url
        self.version = version
        what = f"HTTP {status}" + (f" {code}" if code else "")
        where = f" ({method} {url})" if method else ""
        super().__init__(f"{what}: {message}{where}")

    def __reduce__(self) -> Tuple[Any, ...]:
        kwargs = {"method": self.method, "url": self.url, "version": self.version}
        return (_rebuild, (type(self), (self.status, self.code, self.message), kwargs))


class DatasetNotFound(HttpError):
    """The server serves no dataset of that name (404 ``dataset_not_found``);
    ``Client.datasets()`` lists those it serves.

        >>> client.get("nope", "k")
        Traceback (most recent call last):
        snapkv.client.DatasetNotFound: HTTP 404 dataset_not_found: no dataset "nope"; ...
    """


class VersionMismatch(SnapkvError):
    """A snapshot version other than the expected one answered, or none did: the server does
    not hold the ``pinned`` version (it keeps the current version and the one before it, and
    with ``--preview-staged`` the staged one), or the dataset changed version in the middle of
    a ``get_many`` or ``scan`` that spans several requests. ``served`` is the version that
    answered (``None`` if none did).

        >>> pinned = snapkv.Client(url, version="20261127T031500Z")
        >>> try:
        ...     pinned.get("scores", 42)
        ... except snapkv.VersionMismatch as e:
        ...     print(e.pinned, "->", e.served)
        20261127T031500Z -> None
    """

    def __init__(self, dataset: str, pinned: str, served: Optional[str], detail: str = "") -> None:
        self.dataset = dataset
        self.pinned = pinned
        self.served = served
        self.detail = detail
        answered = f"version {served!r} answered" if served is not None else "no version answered"
        super().__init__(
            f"dataset {dataset!r}: expected version {pinned!r}, but {answered}"
            + (f" {detail}" if detail else "")
        )

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (self.dataset, self.pinned, self.served, self.detail))


class ConnectionFailed(SnapkvError, ConnectionError):
    """The server could not be reached, or did not answer within the timeout, on every
    attempt. The last transport error is the ``__cause__``. Also a ``ConnectionError``.

        >>> snapkv.Client("http://127.0.0.1:9", retries=0).datasets()
        Traceback (most recent call last):
        snapkv.client.ConnectionFailed: GET http://127.0.0.1:9/v1/datasets failed after 1 ...
    """


def _rebuild(cls: Type[HttpError], args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> HttpError:
    return cls(*args, **kwargs)


def _path_segment(raw: bytes) -> str:
    """``raw`` percent-encoded for a path or a query value: every byte but ASCII letters,
    digits, ``-``, ``_`` and ``~`` escaped. ``/`` is escaped too (the server decodes it as a
    key byte either way), and ``.`` so that keys like ``..`` are not taken as dot segments of
    the path by the URL library."""
    return quote(raw, safe="").replace(".", "%2E")


def _retry_after(response: httpx.Response) -> float:
    """The wait ``Retry-After`` asks for, in seconds (0 without one)."""
    value = response.headers.get("retry-after")
    if value is None:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _decode_value(encoding: str, value: Any) -> Any:
    """A value of an mget or scan answer, as Python: embedded JSON as it is, ``utf8`` and
    ``base64`` strings (the values of raw datasets) as ``bytes``."""
    if encoding == "json":
        return value
    if encoding == "utf8":
        return value.encode("utf-8")
    if encoding == "base64":
        return base64.b64decode(value, validate=True)
    raise SnapkvError(f"unknown value encoding {encoding!r} in the server's answer")


class Client:
    """A client for ``snapkv serve`` at ``url`` (``http://host:port``, or with a path prefix
    when a proxy serves the API under one).

        >>> with snapkv.Client("http://127.0.0.1:8080", timeout=2.0) as c:
        ...     c.datasets()[0]["name"]
        ...     c.get("scores", 42)
        'scores'
        {'score': 0.93}

    Lookups:

    - ``get(dataset, key, default=None)``: one value, or ``default`` when the key is absent;
    - ``get_many(dataset, keys)``: values in the order of ``keys``, sent in batches within the
      server's limits (``batch_size`` keys and ``max_body_bytes`` per request; smaller batches
      when the server refuses a batch as too large);
    - ``scan(dataset, prefix=None, start=None, end=None, limit=None)``: ``(key, value)`` pairs
      in key order, following the server's cursors page by page;
    - ``datasets()`` and ``info(dataset)``: what the server serves.

    ``version`` pins every request about a dataset to that snapshot version: it is sent as
    ``X-Snapkv-Version``, and the server answers from that version while it holds it (the
    current version, the one before it, and on a server started with ``--preview-staged`` the
    staged one: a canary check before ``promote``). When it does not, or another version
    answered, ``VersionMismatch`` is raised rather than values of another version returned. Each lookup
    method also takes ``version=``, for one call. Without a pin, a ``get_many`` or ``scan``
    that takes several requests still answers from one version: it holds the version of its
    first answer.

    Every request is a read and is retried, up to ``retries`` times after the first attempt,
    when the server cannot be reached, times out (``timeout`` seconds for each of connecting,
    sending, waiting and reading), or answers 429, 502, 503 or 504. Waits between attempts grow
    exponentially from ``backoff`` to at most ``backoff_max`` seconds, with random jitter, and
    are at least what ``Retry-After`` asks for (up to a minute). Other errors are not retried.

    Errors: ``DatasetNotFound`` (no such dataset), ``HttpError`` (any other refusal, with the
    status and the server's code and message), ``VersionMismatch`` and ``ConnectionFailed``;
    all are ``snapkv.SnapkvError``. Bad keys raise ``TypeError`` or ``ValueError`` as
    ``Snapshot`` does.

    The client keeps up to ``max_connections`` connections open to the server and is safe to
    use from several threads at once. ``close()`` (or leaving a ``with`` block) closes them.
    ``headers`` are sent with every request (an ``Authorization`` for a proxy, say).
    """

    def __init__(
        self,
        url: str,
        *,
        version: Optional[str] = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        backoff_max: float = 5.0,
        batch_size: int = 1000,
        max_body_bytes: int = 1 << 20,
        max_connections: int = 64,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        base = httpx.URL(url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError(f"url must be http://HOST[:PORT][/PATH] or https://…, not {url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be more than 0 seconds")
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        if backoff < 0 or backoff_max < 0:
            raise ValueError("backoff and backoff_max must be 0 or more seconds")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1 (a batch holds one key at least)")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._url = str(base).rstrip("/")
        self._version = version
        self._retries = retries
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._http = httpx.Client(
            base_url=self._url,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            headers={"User-Agent": "snapkv-python", **dict(headers or {})},
            # Lookups are answered where they are asked: a redirect is an answer of its own.
            follow_redirects=False,
        )
        # Requests wait here, not in httpcore's pool: when requests queue in its sync pool,
        # it may close a connection it has just handed to a waiting request (encode/httpcore
        # #1110), which then fails or hangs until its read timeout. With at most as many
        # requests in flight as connections, and every connection kept alive, none queue.
        self._slots = threading.BoundedSemaphore(max_connections)
        # What a server has refused is learnt once and used by every later get_many; only
        # ever lowered, under the lock, by threads that saw a refusal.
        self._lock = threading.Lock()
        self._batch_size = batch_size
        self._max_body_bytes = max_body_bytes

    @property
    def url(self) -> str:
        """The server's base URL.

        >>> snapkv.Client("http://127.0.0.1:8080/").url
        'http://127.0.0.1:8080'
        """
        return self._url

    @property
    def version(self) -> Optional[str]:
        """The version every request about a dataset is pinned to, or ``None``.

        >>> snapkv.Client(url, version="v7").version
        'v7'
        """
        return self._version

    def __repr__(self) -> str:
        pinned = f", version={self._version!r}" if self._version is not None else ""
        return f"snapkv.Client({self._url!r}{pinned})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def close(self) -> None:
        """Closes the client's connections; it cannot be used afterwards. Closing twice is
        harmless.

        >>> c = snapkv.Client(url)
        >>> c.close()
        """
        self._http.close()

    # -- Lookups ---------------------------------------------------------------------------

    def get(
        self, dataset: str, key: Key, default: Any = None, *, version: Optional[str] = None
    ) -> Any:
        """The value of ``key`` in ``dataset``, or ``default`` when the key is absent: a JSON
        value as a Python object, a raw value as ``bytes``.

            >>> client.get("scores", 42)
            {'score': 0.93}
            >>> client.get("scores", 1234567, default={})
            {}
            >>> client.get("by_country", ("SE", 42))  # the key SE/42
            {'score': 0.88}

        Raises ``DatasetNotFound``, ``VersionMismatch`` (the answer is not from the pinned
        ``version``), ``HttpError`` and ``ConnectionFailed``.
        """
        raw = _key_bytes(key)
        if not 0 < len(raw) <= _MAX_KEY_BYTES:
            return default
        found, value, _ = self._get_one(dataset, raw, self._pin(version))
        return value if found else default

    def get_many(
        self,
        dataset: str,
        keys: Iterable[Key],
        default: Any = None,
        *,
        version: Optional[str] = None,
    ) -> List[Any]:
        """The values of ``keys`` in ``dataset``, in the order of ``keys``, ``default`` where
        a key is absent. Keys are looked up in batches of at most ``batch_size`` keys and
        ``max_body_bytes`` bytes (a repeated key is asked for once), and every batch is
        answered by the same snapshot version (else ``VersionMismatch``).

            >>> client.get_many("scores", [42, "43", b"44", 42])
            [{'score': 0.93}, {'score': 0.41}, None, {'score': 0.93}]

        Keys that are not UTF-8 cannot be named in an mget body: they are fetched one at a
        time. Raises as ``get`` does.
        """
        raws = [_key_bytes(k) for k in keys]
        pin = self._pin(version)
        wanted: Dict[bytes, None] = {}
        for raw in raws:
            if 0 < len(raw) <= _MAX_KEY_BYTES:
                wanted[raw] = None
        texts: List[str] = []
        one_at_a_time: List[bytes] = []
        for raw in wanted:
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                one_at_a_time.append(raw)
        found: Dict[bytes, Any] = {}
        if texts:
            pin = self._mget(dataset, texts, pin, found)
        for raw in one_at_a_time:
            hit, value, pin = self._get_one(dataset, raw, pin)
            if hit:
                found[raw] = value
        return [found.get(raw, default) for raw in raws]

    def scan(
        self,
        dataset: str,
        prefix: Optional[Key] = None,
        *,
        start: Optional[Key] = None,
        end: Optional[Key] = None,
        limit: Optional[int] = None,
        page_size: Optional[int] = None,
        version: Optional[str] = None,
    ) -> Iterator[Tuple[Union[str, bytes], Any]]:
        """``(key, value)`` pairs of ``dataset`` in key order (keys sort as bytes): those whose
        keys start with ``prefix``, or from ``start`` (inclusive) to ``end`` (exclusive), or
        all; at most ``limit`` of them. Keys are ``str``, or ``bytes`` when not UTF-8.

            >>> for key, value in client.scan("scores", prefix="4", limit=3):
            ...     print(key, value)
            4 {'score': 0.12}
            42 {'score': 0.93}
            43 {'score': 0.41}

        Pages are fetched as the iterator is consumed, ``page_size`` entries at most each (by
        default the server's page size), by following the server's cursor; every page must
        come from the version of the first one (else ``VersionMismatch``). Raises as ``get``
        does, from the iteration.
        """
        if prefix is not None and (start is not None or end is not None):
            raise ValueError("give a prefix, or start and end, not both")
        if limit is not None and limit < 0:
            raise ValueError("limit must be 0 or more")
        if page_size is not None and page_size < 1:
            raise ValueError("page_size must be at least 1")
        # The bounds' part of every page's query, percent-encoded once.
        bounds = [
            f"{name}={_path_segment(_key_bytes(bound))}"
            for name, bound in (("prefix", prefix), ("start", start), ("end", end))
            if bound is not None
        ]
        return self._scan(dataset, bounds, limit, page_size, self._pin(version))

    def datasets(self) -> List[Dict[str, Any]]:
        """The datasets the server serves, loaded or not: dicts with ``name``, ``ready``, and,
        once loaded, ``version``, ``keys`` and ``loaded_at``.

            >>> [d["name"] for d in client.datasets()]
            ['scores', 'users']
        """
        response = self._send("GET", "/v1/datasets", None)
        if response.status_code != 200:
            raise self._error(response, None)
        body = self._json(response)
        datasets = body.get("datasets") if isinstance(body, dict) else None
        if not isinstance(datasets, list):
            raise SnapkvError(f"unexpected answer from {response.request.url}: no datasets list")
        return datasets

    def info(self, dataset: str, *, version: Optional[str] = None) -> Dict[str, Any]:
        """What the server knows of ``dataset``: ``version``, ``keys``, ``built_at``,
        ``loaded_at``, ``content_type``, the snapshot's ``metadata``, the state of its
        ``sync`` with its source, and more (``spec/openapi.yaml``).

            >>> client.info("scores")["metadata"]["value_encoding"]
            'json'

        Raises ``DatasetNotFound``, and ``VersionMismatch`` when the dataset is served at
        another version than the pinned one.
        """
        pin = self._pin(version)
        response = self._send("GET", self._dataset_path(dataset), pin)
        if response.status_code != 200:
            raise self._error(response, dataset)
        self._check_version(response, dataset, pin)
        body = self._json(response)
        if not isinstance(body, dict):
            raise SnapkvError(f"unexpected answer from {response.request.url}: not an object")
        return body

    def query(
        self, dataset: str, query: Mapping[str, Any], *, version: Optional[str] = None
    ) -> Dict[str, Any]:
        """Runs ``query`` next to the data (``POST /v1/datasets/{ds}/query``): select
        (``keys``, ``prefix``, ``start``/``end``), ``filter``, ``fields``, ``group_by`` with
        ``aggregates``, ``order_by``, ``limit``. Returns ``{"version", "rows", "stats"}``, from
        one version.

            >>> client.query("views", {"prefix": "SE/", "group_by": ["genre"],
            ...                        "aggregates": {"n": {"count": "*"}}})["rows"]
            [{'genre': 'drama', 'n': 17}, ...]

        A bad query (unknown field, type mismatch, bad operator) or one over the server's
        limits raises ``SnapkvError`` with the server's message; others raise as ``get`` does.
        """
        pin = self._pin(version)
        body = json.dumps(query).encode("utf-8")
        response = self._send("POST", self._dataset_path(dataset) + "/query", pin, body)
        if response.status_code != 200:
            raise self._error(response, dataset)
        self._check_version(response, dataset, pin)
        answer = self._json(response)
        if not isinstance(answer, dict) or not isinstance(answer.get("rows"), list):
            raise SnapkvError(f"unexpected answer from {response.request.url}: no rows")
        return answer

    def query_table(
        self, dataset: str, query: Mapping[str, Any], *, version: Optional[str] = None
    ) -> Any:
        """Runs ``query`` as ``query`` does and returns the rows as a ``pyarrow.Table``, sent
        by the server as an Arrow IPC stream: a column per answer field in the query's order
        (``group_by`` fields, then aggregates), typed from the values. The schema's metadata
        holds ``snapkv.version`` (the version that answered) and ``snapkv.stats``.

            >>> client.query_table("views", {"prefix": "SE/", "group_by": ["genre"],
            ...                              "aggregates": {"n": {"count": "*"}}}).to_pandas()
        """
        import pyarrow.ipc

        pin = self._pin(version)
        body = json.dumps(query).encode("utf-8")
        response = self._send(
            "POST", self._dataset_path(dataset) + "/query", pin, body, accept=_ARROW_STREAM
        )
        if response.status_code != 200:
            raise self._error(response, dataset)
        self._check_version(response, dataset, pin)
        if response.headers.get("content-type", "") != _ARROW_STREAM:
            raise SnapkvError(
                f"unexpected answer from {response.request.url}: not an Arrow stream "
                f"({response.headers.get('content-type', 'no content type')})"
            )
        try:
            return pyarrow.ipc.open_stream(response.content).read_all()
        except pyarrow.ArrowInvalid as e:
            raise SnapkvError(f"unexpected answer from {response.request.url}: {e}") from e

    # -- Requests --------------------------------------------------------------------------

    def _pin(self, version: Optional[str]) -> Optional[str]:
        return self._version if version is None else version

    @staticmethod
    def _dataset_path(dataset: str) -> str:
        return "/v1/datasets/" + _path_segment(dataset.encode("utf-8"))

    def _get_one(
        self, dataset: str, raw: bytes, pin: Optional[str], by_mget: bool = True
    ) -> Tuple[bool, Any, Optional[str]]:
        """Looks up one key with a GET: (found, value, version that answered). A key whose
        GET is over the request target limit is asked for by mget, unless ``by_mget`` is
        false (the mget sent it here)."""
        path = f"{self._dataset_path(dataset)}/keys/{_path_segment(raw)}"
        response = self._send("GET", path, pin)
        status = response.status_code
        if status == 414 and by_mget:
            # A key of up to 4096 bytes may take three times as many percent-encoded, over
            # the server's request target limit; an mget body takes it as it is.
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self._error(response, dataset) from None
            found: Dict[bytes, Any] = {}
            served = self._mget(dataset, [text], pin, found)
            return raw in found, found.get(raw), served
        if status == 200 or (status == 404 and self._code(response) == "key_not_found"):
            served = self._check_version(response, dataset, pin)
            if status == 404:
                return False, None, served
            media = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if media == "application/json" or media.endswith("+json"):
                return True, self._json(response), served
            return True, response.content, served
        raise self._error(response, dataset)

    def _mget(
        self, dataset: str, texts: List[str], pin: Optional[str], found: Dict[bytes, Any]
    ) -> Optional[str]:
        """Looks up distinct UTF-8 keys in batches, adding the values found to ``found``.
        Returns the version that answered (``pin`` if given)."""
        path = f"{self._dataset_path(dataset)}/mget"
        pending: Deque[List[str]] = deque(self._batches(texts))
        while pending:
            batch = pending.popleft()
            body = self._mget_body(batch)
            response = self._send("POST", path, pin, body)
            if response.status_code == 200:
                pin = self._check_version(response, dataset, pin, "during a get_many")
                answer = self._json(response)
                try:
                    encoding = answer["encoding"]
                    for text, value in answer["values"].items():
                        found[text.encode("utf-8")] = _decode_value(encoding, value)
                except (KeyError, TypeError, AttributeError, ValueError) as e:
                    raise SnapkvError(
                        f"unexpected mget answer from {response.request.url}: {e!r}"
                    ) from e
                continue
            code = self._code(response)
            if code in ("too_many_keys", "body_too_large") and len(batch) > 1:
                # The server's limit is lower than the client's: halve the client's, for
                # this call and later ones, and split the batch by it.
                with self._lock:
                    if code == "too_many_keys":
                        self._batch_size = min(self._batch_size, len(batch) // 2)
                    else:
                        self._max_body_bytes = min(self._max_body_bytes, len(body) // 2)
                pending.extendleft(reversed(self._batches(batch)))
            elif code == "response_too_large" and len(batch) > 1:
                # These values are over the answer limit together; not a limit to remember.
                half = len(batch) // 2
                pending.extendleft([batch[:half], batch[half:]][::-1])
            elif code == "response_too_large":
                # One value over the answer limit of mget: a GET has none.
                raw = batch[0].encode("utf-8")
                hit, value, pin = self._get_one(dataset, raw, pin, by_mget=False)
                if hit:
                    found[raw] = value
            else:
                raise self._error(response, dataset)
        return pin

    def _batches(self, texts: List[str]) -> List[List[str]]:
        """``texts`` in runs of at most the batch size and whose bodies fit the body limit."""
        with self._lock:
            most_keys, most_bytes = self._batch_size, self._max_body_bytes
        batches: List[List[str]] = []
        batch: List[str] = []
        size = _MGET_BODY_OVERHEAD
        for text in texts:
            item = len(json.dumps(text, ensure_ascii=False).encode("utf-8")) + 1
            if batch and (len(batch) == most_keys or size + item > most_bytes):
                batches.append(batch)
                batch, size = [], _MGET_BODY_OVERHEAD
            batch.append(text)
            size += item
        if batch:
            batches.append(batch)
        return batches

    @staticmethod
    def _mget_body(texts: List[str]) -> bytes:
        return json.dumps({"keys": texts}, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8"
        )

    def _scan(
        self,
        dataset: str,
        bounds: List[str],
        limit: Optional[int],
        page_size: Optional[int],
        pin: Optional[str],
    ) -> Iterator[Tuple[Union[str, bytes], Any]]:
        path = f"{self._dataset_path(dataset)}/scan"
        remaining = limit
        cursor: Optional[str] = None
        # The server's largest page is not advertised. A page size it refused is not asked
        # for again: then pages are at most the largest page it has sent (any page it sent is
        # within its limit), else its default page.
        refused = False
        largest_page = 0
        while remaining is None or remaining > 0:
            wanted = min((n for n in (page_size, remaining) if n is not None), default=None)
            if refused and wanted is not None:
                wanted = min(wanted, largest_page) if largest_page else None
            query = list(bounds)
            if wanted is not None:
                query.append(f"limit={wanted}")
            if cursor is not None:
                query.append(f"after={_path_segment(cursor.encode('ascii'))}")
            target = path + ("?" + "&".join(query) if query else "")
            response = self._send("GET", target, pin)
            if response.status_code != 200:
                if self._code(response) == "bad_limit" and wanted is not None and not refused:
                    refused = True
                    continue
                raise self._error(response, dataset)
            pin = self._check_version(response, dataset, pin, "during a scan")
            page = self._json(response)
            try:
                encoding = page["encoding"]
                entries: List[Tuple[Union[str, bytes], Any]] = [
                    (
                        item["key"] if "key" in item else base64.b64decode(item["key_base64"]),
                        _decode_value(encoding, item["value"]),
                    )
                    for item in page["items"]
                ]
                cursor = page["next"]
            except (KeyError, TypeError, AttributeError, ValueError) as e:
                raise SnapkvError(
                    f"unexpected scan page from {response.request.url}: {e!r}"
                ) from e
            largest_page = max(largest_page, len(entries))
            if remaining is not None:
                entries = entries[:remaining]
                remaining -= len(entries)
            yield from entries
            if cursor is None:
                return

    def _send(
        self,
        method: str,
        path: str,
        pin: Optional[str],
        body: Optional[bytes] = None,
        accept: Optional[str] = None,
    ) -> httpx.Response:
        """Sends a request, retrying transport errors and retryable statuses with backoff.
        Returns the last answer, whatever its status."""
        headers: Dict[str, str] = {}
        if accept is not None:
            headers["Accept"] = accept
        if pin is not None:
            headers[_VERSION_HEADER] = pin
        if body is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            try:
                with self._slots:
                    response = self._http.request(method, path, content=body, headers=headers)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as e:
                if attempt >= self._retries:
                    tries = f"{attempt + 1} attempt" + ("s" if attempt else "")
                    raise ConnectionFailed(
                        f"{method} {self._url}{path} failed after {tries}: "
                        f"{type(e).__name__}: {e}"
                    ) from e
                wait = self._delay(attempt)
            else:
                if response.status_code not in _RETRY_STATUSES or attempt >= self._retries:
                    return response
                wait = max(self._delay(attempt), _retry_after(response))
            attempt += 1
            time.sleep(wait)

    def _delay(self, attempt: int) -> float:
        """The wait before retry ``attempt + 1``: exponential, with half of it random so that
        clients that failed together do not retry together."""
        ceiling = min(self._backoff_max, self._backoff * (2.0**attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _check_version(
        self,
        response: httpx.Response,
        dataset: str,
        pin: Optional[str],
        detail: str = "",
    ) -> Optional[str]:
        """The version that answered; ``VersionMismatch`` if it is not ``pin``."""
        served: Optional[str] = response.headers.get(_VERSION_HEADER)
        if pin is not None and served != pin:
            raise VersionMismatch(dataset, pin, served, detail)
        return served

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return json.loads(response.content)
        except ValueError as e:
            raise SnapkvError(f"the answer from {response.request.url} is not JSON: {e}") from e

    @staticmethod
    def _error_body(response: httpx.Response) -> Tuple[Optional[str], str]:
        """The API error's code and message, or no code and the status's reason when the
        answer is not one (hyper's own refusals have empty bodies; proxies send HTML)."""
        try:
            error = json.loads(response.content)["error"]
            code, message = error["code"], error["message"]
            if isinstance(code, str) and isinstance(message, str):
                return code, message
        except (ValueError, KeyError, TypeError):
            pass
        return None, response.reason_phrase or "no message"

    def _code(self, response: httpx.Response) -> Optional[str]:
        return self._error_body(response)[0]

    def _error(self, response: httpx.Response, dataset: Optional[str]) -> SnapkvError:
        code, message = self._error_body(response)
        pinned = response.request.headers.get(_VERSION_HEADER)
        if code == "version_not_held" and dataset is not None and pinned is not None:
            # The server holds no such version (any more): the same outcome as another
            # version answering.
            return VersionMismatch(dataset, pinned, None, f"({message})")
        cls = DatasetNotFound if code == "dataset_not_found" else HttpError
        return cls(
            response.status_code,
            code,
            message,
            method=response.request.method,
            url=str(response.request.url),
            version=response.headers.get(_VERSION_HEADER),
        )
