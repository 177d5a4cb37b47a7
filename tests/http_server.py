"""A small local HTTP server for download tests: byte ranges, errors and broken connections.

``FileServer`` serves the bytes in ``files`` at ``/<name>`` on 127.0.0.1 (a free port) with:

* ``Range: bytes=N-`` answered by ``206 Partial Content`` (unless ``/norange/<name>``),
* ``/status/<code>`` answering that HTTP status,
* ``/drop/<name>``: the first request gets the full ``Content-Length`` but only the first half
  of the body before the connection closes; later requests are served normally,
* ``requests``: a log of ``(path, Range header or None)`` for each request.
"""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.requests: list[tuple[str, str | None]] = []
        self.dropped: set[str] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            server.requests.append((self.path, self.headers.get("Range")))
            parts = self.path.strip("/").split("/")
            if parts[0] == "status":
                self._send(int(parts[1]), b"error page\n")
                return
            mode = parts[0] if parts[0] in ("drop", "norange") else ""
            name = "/".join(parts[1:] if mode else parts)
            if name not in server.files:
                self._send(404, b"not found\n")
                return
            body = server.files[name]
            if mode == "drop" and name not in server.dropped:
                server.dropped.add(name)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if match and mode != "norange":
                start = int(match.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])
                return
            self._send(200, body)

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
