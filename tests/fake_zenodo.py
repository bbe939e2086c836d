"""A stand-in for Zenodo on 127.0.0.1: the record's JSON and its file URLs, with Range support.

Like the real record, links.self points at /api/records/ID/files/NAME/content; the public
/records/ID/files/NAME serves the same bytes. Every request is logged with its Range header and
User-Agent, so a test can tell which files were fetched, from where, by which client. A file can be
served corrupt, or cut off: the whole answer's Content-Length announced, the connection closed early.
"""

import hashlib
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from utils.zenodo import RECORD


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Talk to 127.0.0.1 directly, whatever proxy the environment names (subprocesses inherit it)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


class FakeZenodo:
    def __init__(self, files, corrupt=None, no_link=(), ranges=True, cut=None):
        """files: name -> bytes; corrupt: name -> how many times to serve wrong bytes first; ranges: False
        answers every request with 200 and the whole file; cut: name -> byte counts, one per request
        for the file's bytes, after which the connection closes (the answer's bytes, not the file's)."""
        self.files, self.corrupt, self.no_link, self.ranges = dict(files), dict(corrupt or {}), set(no_link), ranges
        self.cut = {name: list(counts) for name, counts in (cut or {}).items()}
        self.requests = []  # (path, Range header, User-Agent)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def record_json(self):
        entries = []
        for name, data in self.files.items():
            entry = dict(key=name, size=len(data), checksum=f"md5:{hashlib.md5(data).hexdigest()}")
            if name not in self.no_link:
                entry["links"] = dict(self=f"{self.url}/api/records/{RECORD}/files/{name}/content")
            entries.append(entry)
        return json.dumps(dict(id=RECORD, files=entries)).encode()

    def fetched(self, name):
        """The requests for one file's bytes."""
        return [r for r in self.requests if r[0].endswith(f"/files/{name}") or r[0].endswith(f"/files/{name}/content")]


def _handler(fake):
    file_path = re.compile(rf"^/(?:api/)?records/{RECORD}/files/([^/]+?)(/content)?$")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            fake.requests.append((self.path, self.headers.get("Range"), self.headers.get("User-Agent", "")))
            if self.path == f"/api/records/{RECORD}":
                return self._send(200, fake.record_json(), {"Content-Type": "application/json"})
            match = file_path.match(self.path)
            if not match or match.group(1) not in fake.files:
                return self._send(404, b"not found")
            name = match.group(1)
            data = fake.files[name]
            if fake.corrupt.get(name, 0) > 0:
                fake.corrupt[name] -= 1
                data = bytes(b ^ 0xFF for b in data)  # same length, every byte wrong
            cut = fake.cut[name].pop(0) if fake.cut.get(name) else None
            start = int(re.match(r"bytes=(\d+)-", self.headers.get("Range") or "bytes=0-").group(1))
            if not fake.ranges or not self.headers.get("Range"):
                return self._send(200, data, cut=cut)
            if start >= len(data):
                return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
            self._send(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}, cut=cut)

        def _send(self, status, body, headers=None, cut=None):
            """The answer; with cut, Content-Length still announces all of body but only body[:cut] is sent."""
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body if cut is None else body[:cut])
            if cut is not None:
                self.close_connection = True

        def log_message(self, *args):
            pass  # keep the test output clean

    return Handler


def free_port():
    """A loopback port nothing listens on: bound by the system's choice, then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_port_url():
    """The address of a server that just shut down: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"
