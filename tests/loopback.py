"""A loopback HTTP server for download tests (tests/data, tests/faults): files in memory, Range support,
dropped connections, corruption in flight and throttling on demand. Imported as ``loopback``:
pytest puts tests/ on sys.path for tests/conftest.py (no __init__.py files, rootdir-relative imports).
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time


class RangeServer:
    """Loopback HTTP server for in-memory files that honours ``Range: bytes=N-``.

    ``cut_once[name] = k`` makes the next full response for ``name`` stop after ``k`` bytes and
    hang up (as a dropped connection would); ``ignore_range`` makes it answer 200 to everything;
    ``corrupt_at`` flips the byte at that file offset in every answer that covers it; ``throttle``
    sleeps that many seconds per 64 KiB sent (so a client can be killed mid-transfer).
    ``requests`` records ``(path, range_header, status, bytes_sent)``; ``bytes_sent`` counts what
    was really written, also when the client went away.
    """

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.cut_once: dict[str, int] = {}
        self.ignore_range = False
        self.corrupt_at: int | None = None
        self.throttle = 0.0
        self.requests: list[tuple[str, str | None, int, int]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                # Each request is recorded before its answer goes out: the client may assert on
                # server.requests as soon as it has the answer.
                if name not in server.files:
                    server.requests.append((self.path, rng, 404, 0))
                    self.send_error(404)
                    return
                body = server.files[name]
                start = 0
                if rng and not server.ignore_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        server.requests.append((self.path, rng, 416, 0))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if start == 0 and name in server.cut_once:
                    payload = payload[: server.cut_once.pop(name)]
                    self.close_connection = True
                if server.corrupt_at is not None and start <= server.corrupt_at < start + len(payload):
                    k = server.corrupt_at - start
                    payload = payload[:k] + bytes([payload[k] ^ 0xFF]) + payload[k + 1:]
                if not server.throttle:
                    server.requests.append((self.path, rng, 206 if start else 200, len(payload)))
                    self.wfile.write(payload)
                    return
                server.requests.append([self.path, rng, 206 if start else 200, 0])
                record = server.requests[-1]
                for k in range(0, len(payload), 65536):
                    try:
                        self.wfile.write(payload[k:k + 65536])
                    except OSError:  # the client is gone
                        return
                    record[3] += len(payload[k:k + 65536])
                    time.sleep(server.throttle)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval keeps shutdown (one per test) from costing half a second.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def dead_url() -> str:
    """A loopback URL nothing listens on, so connecting fails at once (simulates offline)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
