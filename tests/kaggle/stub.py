"""A stand-in for Kaggle's API on 127.0.0.1, for driving the real kaggle client in tests.

How the client gets here: with KAGGLE_API_ENVIRONMENT=LOCALHOST the kaggle client sends
its requests to http://localhost/api/v1/<service>/<method> (POST, JSON bodies), and with
HTTP_PROXY pointing at this server, `requests` hands every such request (and the blob
uploads and file downloads it is redirected to) to us in proxy form. HTTPS_PROXY points
here too and any CONNECT is refused and recorded, so nothing can reach the internet.

It imitates the endpoints sever uses: dataset status/create/new version, blob uploads
(StartBlobUpload, then a PUT of the bytes), models (get/create), model instances
(get/create/new version), the competition download (a redirect to a zip that honours
Range requests) and token introspection. It keeps what arrives so tests can assert files,
metadata and version notes.
"""

from __future__ import annotations

import base64
import json
import tempfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

LAST_MODIFIED = "Mon, 01 Jul 2019 12:00:00 GMT"
USERNAME = "tester"
KEY = "stub-key-0123456789abcdef"
TOKEN = "stub-token-fedcba9876543210"
PROXIES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def without_credentials(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """No Kaggle credentials anywhere (HOME and KAGGLE_CONFIG_DIR under `folder`), and
    `folder` as the working directory."""
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_API_ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(folder / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(folder / "kaggle-config"))
    monkeypatch.chdir(folder)


@contextmanager
def serve_kaggle(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Iterator[KaggleStub]:
    """The stub Kaggle, legacy credentials for it, and proxies that send everything there.

    Afterwards it checks that nothing tried to reach the internet.
    """
    with KaggleStub(USERNAME, KEY, TOKEN) as stub:
        for name in PROXIES:
            monkeypatch.setenv(name, stub.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
        monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", KEY)
        # The client keeps its resumable-upload notes under the temporary directory.
        (folder / "tmp").mkdir(exist_ok=True)
        monkeypatch.setattr(tempfile, "tempdir", str(folder / "tmp"))
        yield stub
        assert not stub.refused_connects, f"tried to reach the internet: {stub.refused_connects}"


@dataclass
class Version:
    notes: str | None
    files: dict[str, bytes]


@dataclass
class Published:
    """A dataset, or a model instance: its creation request and its versions."""

    request: dict
    versions: list[Version] = field(default_factory=list)


class KaggleStub:
    """The fake Kaggle; `url` is its address, for HTTP_PROXY.

    Args:
        username, key: the legacy credentials it accepts (HTTP basic auth).
        token: an access token it accepts (bearer auth, and IntrospectToken).
    """

    def __init__(self, username: str, key: str, token: str | None = None) -> None:
        self.username, self.key, self.token = username, key, token
        self.datasets: dict[str, Published] = {}
        self.models: dict[str, dict] = {}
        self.instances: dict[str, Published] = {}
        self.blobs: dict[str, dict] = {}
        self.calls: list[str] = []
        self.refused_connects: list[str] = []
        self.range_requests: list[str] = []
        self.files: dict[str, bytes] = {}  # competition name -> zip bytes
        self.rules_accepted = True
        self.failures: dict[str, tuple[int, str]] = {}  # method -> (status, message)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> KaggleStub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def etag(self, competition: str) -> str:
        return f'"{zlib.crc32(self.files[competition]):08x}"'

    # ----------------------------------------------------------------------- endpoints

    def authorised(self, header: str | None) -> bool:
        basic = base64.b64encode(f"{self.username}:{self.key}".encode()).decode()
        accepted = {f"Basic {basic}"} | ({f"Bearer {self.token}"} if self.token else set())
        return header in accepted

    def files_of(self, listed: list[dict]) -> dict[str, bytes]:
        """The uploaded blobs that a create request names by token."""
        files = {}
        for item in listed:
            blob = self.blobs[item["token"]]
            assert blob["data"] is not None, f"{blob['name']} was announced but never uploaded"
            files[blob["name"]] = blob["data"]
        return files

    def api(self, method: str, body: dict) -> tuple[int, dict, dict]:
        """(status, JSON reply, extra headers) for one API call."""
        if method in self.failures:
            status, message = self.failures[method]
            return status, {"code": status, "message": message}, {}
        if method == "IntrospectToken":
            active = body.get("token") == self.token
            return 200, {"active": active, "username": self.username if active else ""}, {}
        if method == "GetDatasetStatus":
            ref = f"{body['ownerSlug']}/{body['datasetSlug']}"
            if ref not in self.datasets:
                return 404, {"code": 404, "message": f"Dataset {ref} not found"}, {}
            return 200, {"status": "READY"}, {}
        if method == "StartBlobUpload":
            token = f"blob-{len(self.blobs) + 1}"
            self.blobs[token] = {"name": body["name"], "type": body.get("type"), "data": None}
            return 200, {"token": token, "createUrl": f"http://localhost/upload/{token}"}, {}
        if method == "CreateDataset":
            ref = f"{body['ownerSlug']}/{body['slug']}"
            self.datasets[ref] = Published(body, [Version(None, self.files_of(body["files"]))])
            return 200, {"ref": ref, "url": f"http://localhost/datasets/{ref}", "status": "ok"}, {}
        if method == "CreateDatasetVersion":
            ref = f"{body['ownerSlug']}/{body['datasetSlug']}"
            version = Version(
                body["body"].get("versionNotes"), self.files_of(body["body"]["files"])
            )
            self.datasets[ref].versions.append(version)
            return 200, {"ref": ref, "url": f"http://localhost/datasets/{ref}", "status": "ok"}, {}
        if method == "GetModel":
            ref = f"{body['ownerSlug']}/{body['modelSlug']}"
            if ref not in self.models:
                return 404, {"code": 404, "message": f"Model {ref} not found"}, {}
            return 200, {"id": 1, "ref": ref, "title": self.models[ref]["title"]}, {}
        if method == "CreateModel":
            ref = f"{body['ownerSlug']}/{body['slug']}"
            self.models[ref] = body
            return 200, {"id": 1, "ref": ref, "url": f"http://localhost/models/{ref}"}, {}
        if method in ("GetModelInstance", "CreateModelInstance", "CreateModelInstanceVersion"):
            return self.model_instance(method, body)
        if method == "DownloadDataFiles":
            name = body["competitionName"]
            if not self.rules_accepted:
                message = "You must accept this competition's rules before downloading files."
                return 403, {"code": 403, "message": message}, {}
            if name not in self.files:
                return 404, {"code": 404, "message": f"Competition {name} not found"}, {}
            return 302, {}, {"Location": f"http://localhost/files/{name}.zip"}
        return 404, {"code": 404, "message": f"the stub does not know {method}"}, {}

    def model_instance(self, method: str, body: dict) -> tuple[int, dict, dict]:
        model = f"{body['ownerSlug']}/{body['modelSlug']}"
        inner = body.get("body") or {}
        framework = body.get("framework") or inner.get("framework")
        slug = body.get("instanceSlug") or inner.get("instanceSlug")
        ref = f"{model}/{framework}/{slug}"
        url = f"http://localhost/models/{model}/{slug}"
        if method == "GetModelInstance":
            if ref not in self.instances:
                return 404, {"code": 404, "message": f"Instance {ref} not found"}, {}
            return 200, {"id": 2, "slug": slug}, {}
        if model not in self.models:
            return 404, {"code": 404, "message": f"Model {model} not found"}, {}
        files = self.files_of(inner["files"])
        if method == "CreateModelInstance":
            self.instances[ref] = Published(body, [Version(None, files)])
        else:
            self.instances[ref].versions.append(Version(inner.get("versionNotes"), files))
        return 200, {"id": 2, "ref": ref, "url": url}, {}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().strip(), 16)
                        chunk = self.rfile.read(size)
                        self.rfile.readline()
                        if size == 0:
                            return data
                        data += chunk
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def reply(self, status: int, payload: bytes, headers: dict) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_CONNECT(self) -> None:
                stub.refused_connects.append(self.path)
                self.reply(403, b"no internet in tests", {})

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                data = self.body()
                if not path.startswith("/api/v1/"):
                    return self.reply(404, b"", {})
                method = path.rsplit("/", 1)[-1]
                with stub.lock:
                    stub.calls.append(method)
                    if method != "IntrospectToken" and not stub.authorised(
                        self.headers.get("Authorization")
                    ):
                        status, reply, headers = 401, {"code": 401, "message": "Unauthorized"}, {}
                    else:
                        status, reply, headers = stub.api(method, json.loads(data or b"{}"))
                payload = json.dumps(reply).encode() if reply else b""
                content = {"Content-Type": "application/json"} if reply else {}
                self.reply(status, payload, content | headers)

            def do_PUT(self) -> None:
                token = urlsplit(self.path).path.rsplit("/", 1)[-1]
                data = self.body()
                with stub.lock:
                    if token not in stub.blobs:
                        return self.reply(404, b"", {})
                    stub.blobs[token]["data"] = data
                self.reply(200, b"{}", {"Content-Type": "application/json"})

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                name = path.rsplit("/", 1)[-1].removesuffix(".zip")
                if not path.startswith("/files/") or name not in stub.files:
                    return self.reply(404, b"", {})
                data = stub.files[name]
                headers = {
                    "Content-Type": "application/zip",
                    "Last-Modified": LAST_MODIFIED,
                    "ETag": stub.etag(name),
                    "Accept-Ranges": "bytes",
                }
                wanted = self.headers.get("Range")
                if wanted:
                    stub.range_requests.append(wanted)
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                    return self.reply(206, data[start:], headers)
                self.reply(200, data, headers)

        return Handler
