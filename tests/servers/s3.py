"""An S3-compatible server on 127.0.0.1 for the remote-read tests: moto's server mode, in this process.

Why moto: it is pure Python from the package index (``pip install "moto[server]"``), and its server mode
is a real HTTP server speaking the S3 REST protocol (path-style bucket URLs, SigV4-signed requests, ranged
GETs with 206 and ``Content-Range``), so GDAL's ``/vsis3/`` talks to it exactly as to AWS, over a socket.
MinIO would be the other choice, but it is a Go binary that is not on the package index.

What moto's S3 does not do, and how the tests live with it:

- It does not check signatures (any access key and secret are accepted): the tests prove GDAL signs and
  sends its requests to this endpoint, not that a wrong secret would be refused.
- A multi-range GET (``bytes=a-b,c-d``) is answered 200 with the whole object, as AWS S3 itself does;
  so never ``GDAL_HTTP_MULTIRANGE=SINGLE_GET`` against it (GDAL's default, parallel single-range GETs,
  is what S3 serves).
- Its state lives in this process (moto's backends): a ``moto.mock_aws`` started elsewhere in the same
  test session would reset the bucket.

Nothing here can reach AWS: boto3 gets the endpoint explicitly, GDAL gets ``AWS_S3_ENDPOINT`` with
``AWS_HTTPS=NO`` and path-style addressing, credentials are dummies, and :func:`aws_environ` turns off
the EC2 metadata lookups of boto3 and points GDAL at no AWS config or credentials file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from servers.range_http import HOST, RequestRecord

ACCESS_KEY = "geoseg-test-access-key"
SECRET_KEY = "geoseg-test-secret-key"
REGION = "us-east-1"
BUCKET = "geoseg-test"  # the tests' bucket
NO_FILE = "/nonexistent/geoseg-test-no-aws-file"
# Environment variables that would send a test's AWS clients elsewhere or with other credentials: unset.
AWS_UNSET = (
    "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
    "AWS_REQUEST_PAYER", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_S3_SESSION_TOKEN",
)  # fmt: skip


def _moto_server_class() -> type:
    """A ThreadedMotoServer that serves on a quiet, logging request handler with socket timeouts.

    moto builds its werkzeug server in ``ThreadedMotoServer._server_entry``; this subclass builds it the
    same way with another handler, so that requests go to :attr:`S3Server.requests` rather than stderr.
    """
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class _Handler(MotoRequestHandler):
        """moto's handler, with a socket timeout and the request log instead of werkzeug's stderr lines."""

        timeout = 10.0
        owner: S3Server

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """Record the request when its status line goes out (before the body: no client outruns it)."""
            status = getattr(code, "value", code)
            record = RequestRecord(self.command, self.path, self.headers.get("Range"), self.client_address[0])
            record.headers = dict(self.headers.items())
            record.status = int(status) if str(status).isdigit() else None
            self.owner._log(record)

        def log(self, type: str, message: str, *args: object) -> None:
            """Quiet: errors show up as 5xx in the request log."""

    class _Server(ThreadedMotoServer):
        """moto's threaded server with :class:`_Handler`."""

        def __init__(self, owner: S3Server) -> None:
            """On 127.0.0.1, any free port."""
            super().__init__(ip_address=HOST, port=0, verbose=False)
            self._handler = type("_BoundHandler", (_Handler,), {"owner": owner})

        def _server_entry(self) -> None:
            """Build and run the werkzeug server (as moto does, with our handler)."""
            app = DomainDispatcherApplication(create_backend_app)
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=self._handler)
            self._server.block_on_close = False  # server_close must not wait for idle keep-alive threads
            self._server_ready_event.set()
            self._server.serve_forever(poll_interval=0.05)

    return _Server


class S3Server:
    """An S3 endpoint at ``http://127.0.0.1:PORT`` (moto), with boto3 helpers and GDAL's config for it.

    >>> with S3Server() as s3:
    ...     s3.create_bucket("geoseg-test")
    ...     s3.upload_folder(cog_root, "geoseg-test")
    ...     url = s3.url("geoseg-test", "sen1floods11/x.tif")  # s3://geoseg-test/sen1floods11/x.tif
    """

    def __init__(self) -> None:
        """Not started yet."""
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._server = None

    def start(self) -> S3Server:
        """Serve in a daemon thread."""
        if self._server is None:
            server = _moto_server_class()(self)
            server.start()
            self._server = server
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and close the listening socket (open connections end with their socket timeout)."""
        server, self._server = self._server, None
        if server is None:
            return
        if server._server is not None:
            server._server.shutdown()
            server._server.server_close()
        if server._thread is not None:
            server._thread.join(timeout_s)

    def __enter__(self) -> S3Server:
        """Started."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stopped."""
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self._server is None:
            raise RuntimeError("the server is not running")
        return self._server.get_host_and_port()[1]

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT``, the form of GDAL's ``AWS_S3_ENDPOINT``."""
        return f"{HOST}:{self.port}"

    @property
    def endpoint_url(self) -> str:
        """``http://127.0.0.1:PORT``, the form of boto3's ``endpoint_url``."""
        return f"http://{self.endpoint}"

    def client(self) -> Any:  # a boto3 S3 client (botocore makes its class at run time)
        """A boto3 S3 client for this endpoint only (endpoint, dummy keys and region given explicitly)."""
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=5, read_timeout=10
        )
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=REGION, config=config,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )  # fmt: skip

    def create_bucket(self, bucket: str) -> None:
        """Make ``bucket`` (no error if it exists)."""
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if bucket not in existing:
            client.create_bucket(Bucket=bucket)

    def upload(self, path: str | Path, bucket: str, key: str) -> str:
        """Upload a file as ``s3://bucket/key``; returns that URL."""
        self.client().upload_file(str(path), bucket, key)
        return self.url(bucket, key)

    def upload_folder(self, folder: str | Path, bucket: str, prefix: str = "") -> list[str]:
        """Upload every file under ``folder`` to ``bucket``, keyed ``prefix`` + the path under ``folder``."""
        folder = Path(folder)
        files: Iterable[Path] = sorted(p for p in folder.rglob("*") if p.is_file())
        return [self.upload(p, bucket, f"{prefix}{p.relative_to(folder).as_posix()}") for p in files]

    @staticmethod
    def url(bucket: str, key: str) -> str:
        """``s3://bucket/key`` (what rasterio opens through GDAL's ``/vsis3/``)."""
        return f"s3://{bucket}/{key.lstrip('/')}"

    def gdal_env(self) -> dict[str, str]:
        """GDAL's config for ``/vsis3/`` against this server: the endpoint over plain HTTP, path-style
        URLs, dummy credentials and region, and no AWS config or credentials file read."""
        return {
            "AWS_S3_ENDPOINT": self.endpoint,
            "AWS_HTTPS": "NO",
            "AWS_VIRTUAL_HOSTING": "FALSE",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_NO_SIGN_REQUEST": "NO",
            "CPL_AWS_CREDENTIALS_FILE": NO_FILE,
            "AWS_CONFIG_FILE": NO_FILE,
        }

    def aws_environ(self) -> dict[str, str]:
        """Environment variables for a test: :meth:`gdal_env` (GDAL falls back to the environment; boto3
        and rasterio's AWS session read the credentials from it) and no EC2 metadata lookups."""
        return {
            **self.gdal_env(),
            "AWS_DEFAULT_REGION": REGION,
            "AWS_SHARED_CREDENTIALS_FILE": NO_FILE,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def reset_log(self) -> None:
        """An empty request log."""
        with self._lock:
            self.requests.clear()

    def log(self, path_contains: str = "") -> list[RequestRecord]:
        """A snapshot of the request log (only paths containing ``path_contains``)."""
        with self._lock:
            return [r for r in self.requests if path_contains in r.path]

    def _log(self, record: RequestRecord) -> None:
        """Append to the request log."""
        with self._lock:
            self.requests.append(record)
