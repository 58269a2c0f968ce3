#!/usr/bin/env python3
"""An S3-compatible server for the tests: moto's S3 over HTTP on 127.0.0.1.

Usage: s3-test-server.py PORT_FILE
Binds 127.0.0.1 on a free port, writes the port number to PORT_FILE, and serves until killed.

Real S3 applies a conditional write (If-Match / If-None-Match on PUT) atomically. moto checks the
condition and then stores the object in two steps, and its server runs requests on threads, so
two racing conditional writes could both pass. The middleware below runs conditional writes one at
a time, which gives them S3's atomicity; every other request still runs concurrently.

moto answers a ranged GET by reading the whole object, twice over: a delta fetch of a large file
makes thousands of small range reads. Plain `bytes=A-B` / `bytes=A-` reads of an existing object
without conditions are answered from the object's buffer directly (`fast_ranges`); everything
else (other range forms, conditions, a range past the end) goes to moto as before.
"""

import os
import re
import sys
import threading

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.s3.models import s3_backends
from werkzeug.serving import make_server

RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def fast_ranges(app):
    def wrapped(environ, start_response):
        match = RANGE.fullmatch(environ.get("HTTP_RANGE", ""))
        plain = (
            environ.get("REQUEST_METHOD") == "GET"
            and match is not None
            and not environ.get("QUERY_STRING")
            and not any(k.startswith("HTTP_IF_") for k in environ)
        )
        bucket, _, key = environ.get("PATH_INFO", "").lstrip("/").partition("/")
        obj = None
        if plain and key:
            backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
            if bucket in backend.buckets:
                obj = backend.get_object(bucket, key)
        if obj is None:
            return app(environ, start_response)
        size = obj.size
        start = int(match.group(1))
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        if start > end:
            return app(environ, start_response)
        with obj.lock:
            # The ETag is computed (once) by reading the buffer: not between a seek and a read.
            etag = obj.etag
            obj._value_buffer.seek(start)
            body = obj._value_buffer.read(end - start + 1)
        start_response(
            "206 Partial Content",
            [
                ("Content-Type", "binary/octet-stream"),
                ("Content-Length", str(len(body))),
                ("Content-Range", f"bytes {start}-{end}/{size}"),
                ("Accept-Ranges", "bytes"),
                ("ETag", etag),
                ("Last-Modified", obj.last_modified_RFC1123),
            ],
        )
        return [body]

    return wrapped


def serialize_conditional_writes(app):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        conditional = environ.get("REQUEST_METHOD") in ("PUT", "POST") and (
            "HTTP_IF_MATCH" in environ or "HTTP_IF_NONE_MATCH" in environ
        )
        if not conditional:
            return app(environ, start_response)
        with lock:
            # Consume the response inside the lock: the write happens while it is produced.
            return list(app(environ, start_response))

    return wrapped


def main():
    port_file = sys.argv[1]
    app = fast_ranges(serialize_conditional_writes(DomainDispatcherApplication(create_backend_app)))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_port))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
