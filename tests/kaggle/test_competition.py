"""`sever download` and download.sh against the stub Kaggle (tests/kaggle/stub.py)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.kaggle.stub import KEY, serve_kaggle, without_credentials
from tests.support import cli_output

COMPETITION = "severstal-steel-defect-detection"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def competition_zip(tiny_data: Path) -> bytes:
    """The tiny synthetic dataset zipped like the competition's download."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(tiny_data.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(tiny_data).as_posix())
    return buffer.getvalue()


@pytest.fixture
def offline(monkeypatch, tmp_path: Path) -> Path:
    without_credentials(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture
def kaggle(offline: Path, monkeypatch, competition_zip: bytes):
    with serve_kaggle(monkeypatch, offline) as stub:
        stub.files[COMPETITION] = competition_zip
        yield stub


def test_download_unzips_checks_and_is_idempotent(
    kaggle, offline: Path, tiny_data: Path, capsys
) -> None:
    code, out, err = cli_output(capsys, "download")
    assert code == 0, err
    data = offline / "data" / "raw" / COMPETITION
    assert (data / ".complete").is_file()
    assert not (data / f"{COMPETITION}.zip").exists()
    assert (data / "train.csv").read_bytes() == (tiny_data / "train.csv").read_bytes()
    assert len(list((data / "train_images").iterdir())) == 32
    assert "downloaded" in out and "no problems found" in out

    code, out, err = cli_output(capsys, "download")
    assert code == 0, err
    assert "already downloaded" in out and "no problems found" in out
    assert kaggle.calls.count("DownloadDataFiles") == 1
    assert KEY not in out + err


def test_an_interrupted_download_resumes(kaggle, offline: Path, competition_zip: bytes, capsys):
    data = offline / "elsewhere"
    data.mkdir()
    partial = data / f"{COMPETITION}.zip"
    partial.write_bytes(competition_zip[:1000])
    # What the kaggle client leaves beside a partial file: the object's identity and size.
    marker = {"validator": kaggle.etag(COMPETITION), "size": len(competition_zip)}
    (data / f"{COMPETITION}.zip.kaggle-partial").write_text(json.dumps(marker))
    code, out, err = cli_output(capsys, "download", data)
    assert code == 0, err
    assert kaggle.range_requests == ["bytes=1000-"]
    assert (data / ".complete").is_file() and (data / "train.csv").is_file()


def test_unaccepted_rules_say_where_to_accept_them(kaggle, offline: Path, capsys) -> None:
    kaggle.rules_accepted = False
    code, out, err = cli_output(capsys, "download")
    assert code == 1
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "403 Forbidden" in line
    assert f"accept the competition's rules at https://www.kaggle.com/c/{COMPETITION}/rules" in line
    assert not (offline / "data" / "raw" / COMPETITION / ".complete").exists()


def test_missing_credentials_are_one_line(offline: Path, capsys) -> None:
    code, out, err = cli_output(capsys, "download")
    assert code == 1
    assert err.startswith("error: no Kaggle credentials: set KAGGLE_API_TOKEN")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_download_sh_calls_sever_download(kaggle, offline: Path) -> None:
    data = offline / "via-script"
    result = subprocess.run(
        [REPO / "download.sh", data],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr
    assert f"{data}: downloaded" in result.stdout
    assert (data / ".complete").is_file()
    assert kaggle.calls.count("DownloadDataFiles") == 1
