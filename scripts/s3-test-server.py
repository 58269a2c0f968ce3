#!/usr/bin/env python3
"""An S3-compatible server for the tests: moto's S3 over HTTP on 127.0.0.1.

Usage: s3-test-server.py PORT_FILE
Binds 127.0.0.1 on a free port, writes the port number to PORT_FILE, and serves until killed.

Real S3 applies a conditional write (If-Match / If-None-Match on PUT) atomically. moto checks the
condition and then stores the object in two steps, and its server runs requests on threads, so
two racing conditional writes could both pass. The middleware below runs conditional writes one at
a time, which gives them S3's atomicity; every other request still runs concurrently.
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


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
    app = serialize_conditional_writes(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_port))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
