"""sever.kaggle.client and the pure parts of staging: imports, credentials, messages, slugs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sever.errors import SeverError
from sever.kaggle import client
from sever.kaggle.staging import make_target, parse_handle, slugify
from tests.kaggle.stub import without_credentials


@pytest.fixture
def offline(monkeypatch, tmp_path: Path) -> Path:
    without_credentials(monkeypatch, tmp_path)
    return tmp_path


def test_the_client_loads_without_authenticating(offline: Path) -> None:
    """The top-level kaggle module authenticates (and prints help) at import; we skip it."""
    code = (
        "import sys\n"
        "from sever.kaggle.client import kaggle_api_class\n"
        "api = kaggle_api_class()()\n"
        "print(type(api).__name__, 'kaggle' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=offline, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "KaggleApi False\n"


def test_credential_sources_in_the_clients_order(offline: Path, monkeypatch) -> None:
    assert client.credential_source() is None
    config = offline / "kaggle-config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "ann", "key": "k" * 32}))
    assert client.credential_source() == str(config / "kaggle.json")
    assert client.local_username() == "ann"
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    monkeypatch.setenv("KAGGLE_KEY", "x" * 32)
    assert client.credential_source() == "KAGGLE_KEY"
    assert client.local_username() == "bob"
    monkeypatch.setenv("KAGGLE_API_TOKEN", "t" * 40)
    assert client.credential_source() == "KAGGLE_API_TOKEN"


def test_oauth_credentials_count(offline: Path) -> None:
    folder = offline / "home" / ".kaggle"
    folder.mkdir(parents=True)
    (folder / "credentials.json").write_text(json.dumps({"refresh_token": "r" * 30}))
    assert client.credential_source() == str(folder / "credentials.json")


def test_messages_are_scrubbed_of_every_secret(offline: Path, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_KEY", "abcdef0123456789")
    token_file = offline / "token"
    token_file.write_text("tok-9876543210\n")
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(token_file))
    text = "key abcdef0123456789 and token tok-9876543210 in a URL"
    assert client.redact(text) == "key *** and token *** in a URL"


def test_missing_credentials_name_the_folder(offline: Path) -> None:
    with pytest.raises(
        SeverError, match=r"no Kaggle credentials: set KAGGLE_API_TOKEN .*kaggle-config"
    ):
        client.connect()


class Response:
    def __init__(self, status: int, message: str) -> None:
        self.status_code, self.message = status, message

    def json(self) -> dict:
        return {"code": self.status_code, "message": self.message}


@pytest.mark.parametrize(
    "status, expected",
    [
        (401, "Kaggle rejected the credentials (401 Unauthorized)"),
        (403, "Kaggle refused the request (403 Forbidden: nope); see the rules"),
        (404, "not found on Kaggle (404: nope)"),
        (429, "rate limit"),
        (502, "Kaggle answered HTTP 502: nope"),
    ],
)
def test_http_errors_read_as_one_line(status: int, expected: str) -> None:
    import requests

    error = requests.HTTPError("nope", response=Response(status, "nope"))
    assert expected in client.describe_http(error, forbidden="; see the rules")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("FPN_b5 (fold 2)", "fpn-b5-fold-2"),
        ("--a--b--", "a-b"),
    ],
)
def test_slugify(text: str, expected: str) -> None:
    assert slugify(text) == expected


def test_default_targets() -> None:
    run = Path("saved/Unet_B5/1122-101500")
    dataset = make_target("dataset", run, "me")
    assert (dataset.handle, dataset.title) == (
        "me/sever-unet-b5-1122-101500",
        "sever Unet_B5 1122-101500",
    )
    model = make_target("model", run, "me")
    assert model.handle == "me/sever-unet-b5/pytorch/run-1122-101500"
    long = make_target("dataset", Path("saved/" + "x" * 80 + "/1122-101500"), None)
    assert len(long.slug) <= 50 and long.slug.endswith("-1122-101500")
    assert len(long.title) <= 50 and long.owner == "YOUR-KAGGLE-USERNAME"


@pytest.mark.parametrize(
    "text, kind, expected",
    [
        ("me/my-models", "dataset", ("me", "my-models", None)),
        ("me/steel/fold-1", "model", ("me", "steel", "fold-1")),
        ("me", "dataset", "expected OWNER/SLUG"),
        ("me/a/b", "dataset", "expected OWNER/SLUG"),
        ("me/My_Models", "dataset", "'My_Models' is not a Kaggle slug"),
    ],
)
def test_parse_handle(text: str, kind: str, expected) -> None:
    if isinstance(expected, tuple):
        assert parse_handle(text, kind) == expected
    else:
        with pytest.raises(SeverError, match=expected):
            parse_handle(text, kind)
