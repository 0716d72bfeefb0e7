"""Serve an ASGI app with uvicorn on 127.0.0.1 in a background thread, for tests.

The socket is bound here, before the server starts, so the URL is known up front and no
other process can take the port in between.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


@contextmanager
def serve(app: Any, host_name: str = "127.0.0.1") -> Iterator[str]:
    """Yields the base URL (`http://{host_name}:{port}`); stops the server on exit.

    `host_name` only changes the URL (e.g. "localhost", to put the server on another site
    than one served as 127.0.0.1); the server always listens on 127.0.0.1.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="uvicorn-test", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host_name}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
