"""A threaded HTTP/1.1 server on 127.0.0.1 that serves a folder read-only, with byte ranges and faults.

It is what a COG host looks like to GDAL's ``/vsicurl/``: HEAD and GET, ``Content-Length``,
``Accept-Ranges: bytes``, ``ETag`` and ``Last-Modified``; one range (``bytes=a-b``, ``bytes=a-``,
``bytes=-n``) answered 206 with ``Content-Range``, several answered with a ``multipart/byteranges`` 206
body, an unsatisfiable one 416; 404 for what is missing, 403 for a path that climbs out of the folder.

``tls=True`` serves HTTPS with a certificate made for this server (SubjectAltName IP 127.0.0.1 and DNS
localhost); :attr:`RangeServer.ca_bundle` is the PEM file a client trusts to verify it for real.

Faults, changeable while it runs (thread-safe, deterministic): :attr:`RangeServer.latency_s` (a sleep
before every answer) and :attr:`RangeServer.faults`, rules applied to the next matching requests:
``"503"`` (with ``Retry-After: 0``), any other status (``"403"``, ``"404"``, ``"500"``...), ``"drop"``
(the connection closed without a response), ``"reset"`` (closed with a TCP RST), ``"truncate"`` (the
headers with the full ``Content-Length``, half the body, then closed). Every request is logged
(:attr:`RangeServer.requests`).

A path ``/_n<k>/real/path`` serves ``real/path``: :meth:`RangeServer.unique_url` hands out such
aliases, so a test can reach a file under a URL that GDAL has never seen (and so has nothing cached for).

Run as a script for manual use::

    python tests/servers/range_http.py ROOT --port 8000 --latency-ms 20 [--tls]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import email.utils
import ipaddress
import itertools
import mimetypes
import re
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOST = "127.0.0.1"
ALIAS = re.compile(r"_n\d+")  # first path segment of a unique alias: /_n<k>/real/path
MAX_RANGES = 256  # more ranges than this in one request: the whole file is sent (200)
CHUNK = 64 * 1024
MAX_LATENCY_S = 30.0


# ---------------------------------------------------------------------------------------------------------
# Faults


@dataclass
class Fault:
    """One fault rule: ``kind`` for the next ``remaining`` matching requests (``None``: for every one).

    A request matches when its method is in ``methods`` and its path contains ``path_contains``; the
    rule lets the first ``skip`` matching requests (counted from when it was added, whatever another rule
    did to them) pass, to fail, say, a block read but not the header read.
    """

    kind: str
    remaining: int | None = 1
    path_contains: str = ""
    methods: tuple[str, ...] = ("GET", "HEAD")
    skip: int = 0
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        """Whether a request with this method and path is one this rule is about."""
        return method in self.methods and self.path_contains in path


class Faults:
    """Thread-safe fault rules, applied in the order they were added; the first that fires wins."""

    KINDS = ("drop", "reset", "truncate")

    def __init__(self) -> None:
        """No rules."""
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self.fired: list[tuple[str, str, str]] = []  # (kind, method, path) of every fault applied

    def add(
        self,
        kind: str,
        count: int | None = 1,
        path_contains: str = "",
        methods: tuple[str, ...] = ("GET", "HEAD"),
        skip: int = 0,
    ) -> Fault:
        """Apply ``kind`` to the next ``count`` matching requests (``None``: to all of them, for good).

        ``kind`` is ``"drop"``, ``"reset"``, ``"truncate"`` or an HTTP status from 400 to 599 (``"503"``).
        """
        if kind not in self.KINDS and not (kind.isdigit() and 400 <= int(kind) <= 599):
            raise ValueError(f"unknown fault {kind!r}: one of {self.KINDS} or a status 400..599")
        if count is not None and count < 1:
            raise ValueError(f"count must be >= 1 or None, not {count}")
        rule = Fault(kind, count, path_contains, tuple(m.upper() for m in methods), skip)
        with self._lock:
            self._rules.append(rule)
        return rule

    def fail_always(self, path_contains: str, status: int = 503) -> Fault:
        """Answer every request whose path contains ``path_contains`` with ``status``, until cleared."""
        return self.add(str(status), count=None, path_contains=path_contains)

    def clear(self) -> None:
        """Drop every rule and the record of applied faults."""
        with self._lock:
            self._rules.clear()
            self.fired.clear()

    def pending(self) -> int:
        """How many faults the counted rules still have to apply (rules for good not included)."""
        with self._lock:
            return sum(r.remaining for r in self._rules if r.remaining is not None)

    def take(self, method: str, path: str) -> str | None:
        """The fault to apply to this request, if any (counted down as it is handed out)."""
        with self._lock:
            chosen = None
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                if rule.skip > 0:  # every matching request counts, whichever rule (if any) fires on it
                    rule.skip -= 1
                elif chosen is None:
                    chosen = rule
            if chosen is None:
                return None
            chosen.fired += 1
            if chosen.remaining is not None:
                chosen.remaining -= 1
            self.fired.append((chosen.kind, method, path))
            self._rules = [r for r in self._rules if r.remaining != 0]
            return chosen.kind


# ---------------------------------------------------------------------------------------------------------
# Ranges


def parse_ranges(header: str | None, size: int) -> list[tuple[int, int]] | None:
    """The byte ranges of a ``Range`` header as (first, last) pairs clipped to ``size``.

    ``None``: no header, or one that is not a valid ``bytes=`` list (RFC 9110: then it is ignored and the
    whole file is sent); ``[]``: valid but no range is satisfiable (416).
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) > MAX_RANGES:
        return None
    ranges: list[tuple[int, int]] = []
    for part in parts:
        m = re.fullmatch(r"(\d*)-(\d*)", part)
        if not m or (not m[1] and not m[2]):
            return None
        if m[1]:
            first = int(m[1])
            last = int(m[2]) if m[2] else size - 1
            if m[2] and last < first:
                return None
            if first < size:
                ranges.append((first, min(last, size - 1)))
        else:
            suffix = int(m[2])
            if suffix > 0 and size > 0:
                ranges.append((max(size - suffix, 0), size - 1))
    return ranges


def http_date(timestamp: float) -> str:
    """An HTTP date (RFC 9110 IMF-fixdate) for a POSIX time."""
    return email.utils.formatdate(timestamp, usegmt=True)


# ---------------------------------------------------------------------------------------------------------
# TLS


def make_certificate(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for IP 127.0.0.1 and DNS localhost and its key, as PEM files in ``folder``.

    Returns (certificate, key); the certificate is also the CA bundle a client trusts to verify it.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"geoseg test {name} 127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    unused_usages = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement", "crl_sign",
         "encipher_only", "decipher_only"), False,
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, **unused_usages), critical=True
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


# ---------------------------------------------------------------------------------------------------------
# Server


@dataclass
class RequestRecord:
    """One request as the server saw it and answered it (``status`` None: no answer was sent).

    Logged on arrival and filled in as it is answered (``status`` before the status line goes out,
    ``body_bytes`` before each write), so what a client has received is always in the log.
    """

    method: str
    path: str
    range: str | None
    client: str
    status: int | None = None
    fault: str | None = None
    body_bytes: int = 0
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    time: float = field(default_factory=time.monotonic)


class _Refused(Exception):
    """A request answered with an error status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        """The status, a one-line body and extra headers."""
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _Handler(BaseHTTPRequestHandler):
    """Serves one connection (HTTP/1.1 keep-alive) of a :class:`RangeServer`."""

    protocol_version = "HTTP/1.1"
    server_version = "geoseg-range-test/1"
    server: _HTTPServer

    def setup(self) -> None:
        """A socket timeout (nothing blocks forever), TLS when the server has it, then the streams."""
        owner = self.server.owner
        self.request.settimeout(owner.timeout_s)
        self.raw_socket = self.request
        if owner.ssl_context is not None:
            self.request = owner.ssl_context.wrap_socket(self.request, server_side=True)
        owner._connection_opened(self.request)
        super().setup()

    def finish(self) -> None:
        """Flush and close this connection (the TLS socket too, which socketserver would leave open)."""
        with contextlib.suppress(OSError):
            super().finish()
        self.server.owner._connection_closed(self.request)
        if self.request is not self.raw_socket:
            self._close(reset=False)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the request log is :attr:`RangeServer.requests`."""

    def do_GET(self) -> None:
        """A file, a range of it or several ranges."""
        self._serve(head=False)

    def do_HEAD(self) -> None:
        """A file's headers (a ``Range`` header is ignored, as RFC 9110 says for HEAD)."""
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        """Latency, then a fault or the file, recorded in the request log."""
        owner = self.server.owner
        record = RequestRecord(self.command, self.path, self.headers.get("Range"), self.client_address[0])
        record.headers = dict(self.headers.items())
        owner._log(record)  # logged (and then filled in) before any answer: a client never outruns the log
        try:
            latency = owner.latency_s
            if latency > 0:
                time.sleep(min(latency, MAX_LATENCY_S))
            record.fault = owner.faults.take(self.command, self.path)
            if record.fault in ("drop", "reset"):
                self._close(reset=record.fault == "reset")
                return
            if record.fault is not None and record.fault.isdigit():
                status = int(record.fault)
                retry = {"Retry-After": "0"} if status in (429, 503) else {}
                self._send_error(record, _Refused(status, f"injected fault {status}", retry), head)
                return
            try:
                self._send_file(record, head, truncate=record.fault == "truncate")
            except _Refused as refused:
                self._send_error(record, refused, head)
        except OSError as exc:  # the client went away, or a socket timeout
            record.error = f"{type(exc).__name__}: {exc}"
            self.close_connection = True

    def _send_file(self, record: RequestRecord, head: bool, truncate: bool) -> None:
        """200 (the whole file), 206 (one range or a multipart/byteranges body) or 416."""
        path = self.server.owner.resolve(self.path)
        stat = path.stat()
        size = stat.st_size
        etag = f'"{stat.st_mtime_ns:x}-{size:x}"'
        modified = http_date(stat.st_mtime)
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        ranges = None if head else parse_ranges(self.headers.get("Range"), size)
        if_range = self.headers.get("If-Range")
        if ranges is not None and if_range is not None and if_range not in (etag, modified):
            ranges = None  # the file changed since the client's copy: all of it
        if ranges == []:
            raise _Refused(416, "range not satisfiable", {"Content-Range": f"bytes */{size}"})
        segments: list[bytes | tuple[int, int]]  # literal bytes or (offset, length) slices of the file
        headers = {"Accept-Ranges": "bytes", "ETag": etag, "Last-Modified": modified}
        if ranges is None:
            status, segments = 200, [(0, size)]
            headers["Content-Type"] = ctype
        elif len(ranges) == 1:
            (first, last), status = ranges[0], 206
            segments = [(first, last - first + 1)]
            headers.update({"Content-Type": ctype, "Content-Range": f"bytes {first}-{last}/{size}"})
        else:
            status, boundary = 206, f"geoseg_range_{next(_boundaries):08d}"
            segments = []
            for first, last in ranges:
                part = f"--{boundary}\r\nContent-Type: {ctype}\r\nContent-Range: bytes {first}-{last}/{size}"
                segments += [f"{part}\r\n\r\n".encode(), (first, last - first + 1), b"\r\n"]
            segments.append(f"--{boundary}--\r\n".encode())
            headers["Content-Type"] = f"multipart/byteranges; boundary={boundary}"
        length = sum(len(s) if isinstance(s, bytes) else s[1] for s in segments)
        record.status = status
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if head:
            return
        budget = length // 2 if truncate else length
        with path.open("rb") as f:
            for segment in segments:
                if budget <= 0:
                    break
                if isinstance(segment, bytes):
                    chunk = segment[:budget]
                    record.body_bytes += len(chunk)
                    self.wfile.write(chunk)
                    budget -= len(chunk)
                    continue
                offset, remaining = segment
                f.seek(offset)
                while remaining > 0 and budget > 0:
                    chunk = f.read(min(CHUNK, remaining, budget))
                    if not chunk:
                        raise OSError(f"{path} shrank while being served")
                    record.body_bytes += len(chunk)
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
                    budget -= len(chunk)
        if truncate:
            self.wfile.flush()
            self._close(reset=False)

    def _send_error(self, record: RequestRecord, refused: _Refused, head: bool) -> None:
        """An error status with a one-line text body."""
        body = f"{refused.status} {refused.message}\n".encode()
        record.status = refused.status
        record.body_bytes = 0 if head else len(body)
        self.send_response(refused.status)
        for name, value in refused.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _close(self, reset: bool) -> None:
        """End this connection now, without a response: a FIN (or a RST when ``reset``)."""
        self.close_connection = True
        with contextlib.suppress(OSError, ValueError):  # ValueError: already closed
            self.wfile.flush()
        with contextlib.suppress(OSError):
            if reset:
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.request.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.request.close()


_boundaries = itertools.count(1)


class _HTTPServer(ThreadingHTTPServer):
    """socketserver's threaded server, with its handler threads tracked (and joined with a time limit)."""

    daemon_threads = True
    block_on_close = False  # RangeServer.stop joins the threads itself, with a bound
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, owner: RangeServer) -> None:
        """Bound to 127.0.0.1 on ``owner.port`` (0: a free port)."""
        self.owner = owner
        super().__init__((owner.host, owner.requested_port), _Handler)

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        """One daemon thread per connection, remembered for :meth:`RangeServer.stop`."""
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True,
            name=f"range-http-{client_address[1]}",
        )  # fmt: skip
        self.owner._thread_started(thread)
        thread.start()

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """No traceback on stderr: a failed TLS handshake (say) is recorded in ``owner.errors``."""
        exc = sys.exc_info()[1]
        self.owner.errors.append(f"{client_address[0]}:{client_address[1]}: {type(exc).__name__}: {exc}")


class RangeServer:
    """A folder served read-only over HTTP (or HTTPS) on 127.0.0.1, with ranges, faults and a request log.

    >>> with RangeServer(root) as srv:
    ...     url = srv.url("sen1floods11/x.tif")
    ...     srv.faults.add("503", count=2, path_contains=".tif")
    """

    def __init__(
        self,
        root: str | Path,
        tls: bool = False,
        port: int = 0,
        latency_s: float = 0.0,
        timeout_s: float = 10.0,
    ) -> None:
        """Serve ``root`` on 127.0.0.1:``port`` (0: any free port) once started; ``timeout_s`` bounds every
        socket wait of a connection (an idle keep-alive connection is closed after it)."""
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(self.root)
        self.tls = tls
        self.host = HOST
        self.requested_port = port
        self.latency_s = latency_s
        self.timeout_s = timeout_s
        self.faults = Faults()
        self.requests: list[RequestRecord] = []
        self.errors: list[str] = []
        self.ca_bundle: Path | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._aliases = itertools.count(1)
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()
        self._server: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> RangeServer:
        """Bind, make the TLS certificate when asked for, and serve in a daemon thread."""
        if self._server is not None:
            return self
        if self.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="geoseg-range-tls-")
            cert, key = make_certificate(Path(self._tmp.name))
            self.ca_bundle = cert
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(cert, key)
            ctx.set_alpn_protocols(["http/1.1"])
            self.ssl_context = ctx
        self._server = _HTTPServer(self)
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"range-http-serve-{self.port}",
        )  # fmt: skip
        self._serve_thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, close open connections, join the threads (at most ``timeout_s`` in all)."""
        server, self._server = self._server, None
        if server is None:
            return
        deadline = time.monotonic() + timeout_s
        if self._serve_thread is not None and self._serve_thread.is_alive():
            server.shutdown()  # returns within poll_interval: serve_forever is running
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in [*threads, self._serve_thread]:
            if thread is not None:
                thread.join(max(deadline - time.monotonic(), 0.0))
        server.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RangeServer:
        """Started."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stopped."""
        self.stop()

    # -- addresses -------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (``https://`` with TLS), no trailing slash."""
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def url(self, relpath: str | Path = "", unique: bool = False) -> str:
        """The URL of ``relpath`` (relative to the root); ``unique``: under a fresh ``/_n<k>/`` alias."""
        rel = urllib.parse.quote(Path(relpath).as_posix().lstrip("/")) if str(relpath) else ""
        prefix = f"/_n{next(self._aliases)}" if unique else ""
        return f"{self.base_url}{prefix}/{rel}"

    def unique_url(self, relpath: str | Path) -> str:
        """The URL of ``relpath`` under an alias no earlier request used (no GDAL cache state for it)."""
        return self.url(relpath, unique=True)

    def resolve(self, request_path: str) -> Path:
        """The file a request path names: 403 for ``..`` or an escape from the root, 404 if there is none."""
        parsed = urllib.parse.urlsplit(request_path)
        parts = [urllib.parse.unquote(p) for p in parsed.path.split("/") if p]
        if any(p in (".", "..") or "/" in p or "\\" in p or "\x00" in p for p in parts):
            raise _Refused(403, "path traversal refused")
        if parts and ALIAS.fullmatch(parts[0]):
            parts = parts[1:]
        target = self.root.joinpath(*parts).resolve()
        if target != self.root and self.root not in target.parents:
            raise _Refused(403, "outside the served folder")
        if not target.is_file():
            raise _Refused(404, "not found")
        return target

    # -- state for tests -------------------------------------------------------------------------------

    def reset(self) -> None:
        """No faults, no latency, an empty request log."""
        self.faults.clear()
        self.latency_s = 0.0
        with self._lock:
            self.requests.clear()
            self.errors.clear()

    def log(self, path_contains: str = "") -> list[RequestRecord]:
        """A snapshot of the request log (only paths containing ``path_contains``)."""
        with self._lock:
            return [r for r in self.requests if path_contains in r.path]

    def count(self, method: str | None = None, status: int | None = None, path_contains: str = "") -> int:
        """How many logged requests have this method, status and path fragment (None: any)."""
        return sum(
            1 for r in self.log(path_contains)
            if (method is None or r.method == method) and (status is None or r.status == status)
        )  # fmt: skip

    def clients(self) -> set[str]:
        """The client addresses every logged request came from."""
        return {r.client for r in self.log()}

    # -- internals -------------------------------------------------------------------------------------

    def _log(self, record: RequestRecord) -> None:
        """Append to the request log."""
        with self._lock:
            self.requests.append(record)

    def _thread_started(self, thread: threading.Thread) -> None:
        """Remember a handler thread (forgetting the finished ones, so the list stays short)."""
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _connection_opened(self, conn: socket.socket) -> None:
        """Remember an open connection, for :meth:`stop` to close."""
        with self._lock:
            self._connections.add(conn)

    def _connection_closed(self, conn: socket.socket) -> None:
        """Forget a closed connection."""
        with self._lock:
            self._connections.discard(conn)


def iter_multipart(body: bytes, content_type: str) -> Iterator[tuple[str, bytes]]:
    """The (Content-Range, data) parts of a ``multipart/byteranges`` body, for tests of the server."""
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            return
        head, _, data = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        ranges = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n") if b"content-range" in
                  line.lower()]  # fmt: skip
        yield ranges[0].decode(), data[:-2] if data.endswith(b"\r\n") else data


def main(argv: list[str] | None = None) -> None:
    """Serve a folder until Ctrl-C: ``range_http.py ROOT --port 8000 --latency-ms 20 [--tls]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="the folder to serve")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="a sleep before every answer")
    parser.add_argument("--tls", action="store_true", help="HTTPS with a fresh self-signed certificate")
    args = parser.parse_args(argv)
    with RangeServer(args.root, tls=args.tls, port=args.port, latency_s=args.latency_ms / 1000) as srv:
        print(f"serving {srv.root} at {srv.url()}", flush=True)
        if srv.ca_bundle is not None:
            # GDAL_CURL_CA_BUNDLE, not CURL_CA_BUNDLE: rasterio sets the former (to certifi), GDAL prefers it.
            print(f"CA bundle: {srv.ca_bundle}  (GDAL: GDAL_CURL_CA_BUNDLE={srv.ca_bundle})", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a kill stops it cleanly too
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", flush=True)


if __name__ == "__main__":
    main()
