"""`sever upload`: staging (no network), then the real kaggle client against a stub server.

The stub (tests/kaggle/stub.py) listens on 127.0.0.1; the kaggle client reaches it through
KAGGLE_API_ENVIRONMENT=LOCALHOST and HTTP_PROXY. Nothing here touches the internet.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from sever.config import load_config
from sever.engine.trainer import train
from sever.inference.models import load_member
from tests.kaggle.stub import KEY, TOKEN, serve_kaggle, without_credentials
from tests.support import cli_output, write_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch run keeping checkpoint-epoch1.pth and checkpoint-epoch2.pth."""
    folder = tmp_path_factory.mktemp("upload-run")
    path = write_tiny(folder, tiny_data)
    overrides = ["trainer.epochs=2", "trainer.save_top_k=2", "trainer.steps_per_epoch=2"]
    return train(load_config(path, overrides))


@pytest.fixture
def offline(monkeypatch, tmp_path: Path) -> Path:
    without_credentials(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture
def kaggle(offline: Path, monkeypatch):
    with serve_kaggle(monkeypatch, offline) as stub:
        yield stub


def error_line(err: str) -> str:
    """The one error line (info lines about staging may come before it)."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and err.strip().endswith(lines[0]), err
    return lines[0]


def staged_folder(run: Path, root: Path) -> Path:
    return root / "upload" / run.parent.name / run.name


# ---------------------------------------------------------------------------- staging


def test_dry_run_stages_a_complete_folder(run: Path, offline: Path, capsys, monkeypatch) -> None:
    from sever.kaggle import client

    monkeypatch.setattr(client, "connect", lambda: pytest.fail("a dry run must not connect"))
    code, out, err = cli_output(capsys, "upload", "-r", run, "--best", "--dry-run")
    assert code == 0, err
    folder = staged_folder(run, offline)
    names = {p.name for p in folder.iterdir()}
    assert names == {
        "model_best.pth",
        "config.yml",
        "metrics.csv",
        "README.md",
        "dataset-metadata.json",
    }
    assert (folder / "config.yml").read_text() == (run / "config.yml").read_text()
    assert f"staged upload/tiny/{run.name}" in out and "dry run: nothing sent" in out

    slug = f"sever-tiny-{run.name}"
    meta = json.loads((folder / "dataset-metadata.json").read_text())
    assert meta["id"] == f"YOUR-KAGGLE-USERNAME/{slug}"
    assert meta["title"] == f"sever tiny {run.name}"
    assert meta["licenses"] == [{"name": "CC0-1.0"}]
    assert 20 <= len(meta["subtitle"]) <= 80
    assert meta["description"] == (folder / "README.md").read_text()
    assert "YOUR-KAGGLE-USERNAME" in err  # the warning says why

    card = (folder / "README.md").read_text()
    best = torch.load(run / "checkpoints" / "model_best.pth", weights_only=True)
    for fact in (
        "| architecture | Unet |",
        "| encoder | resnet18",
        "| input channel | r:",
        f"| `model_best.pth` | {best['epoch']} |",
        f"{best['metrics']['val_dice_mean']:.4f}",
        f"!sever predict -r /kaggle/input/{slug}/model_best.pth",
    ):
        assert fact in card


def test_dry_run_takes_the_username_from_the_environment(
    run: Path, offline: Path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    assert cli_output(capsys, "upload", "-r", run, "--dry-run")[0] == 0
    meta = json.loads((staged_folder(run, offline) / "dataset-metadata.json").read_text())
    assert meta["id"] == f"alice/sever-tiny-{run.name}"


def test_weights_only_is_three_times_smaller_and_still_predicts(
    run: Path, offline: Path, tiny_data: Path, capsys
) -> None:
    code, out, err = cli_output(
        capsys, "upload", "-r", run, "-e", "1", "--weights-only", "--dry-run"
    )
    assert code == 0, err
    staged = staged_folder(run, offline) / "checkpoint-epoch1.pth"
    original = run / "checkpoints" / "checkpoint-epoch1.pth"
    state = torch.load(staged, weights_only=True)
    assert set(state) == {"format", "model", "config", "epoch", "metrics", "versions"}
    ratio = original.stat().st_size / staged.stat().st_size
    assert ratio > 2.5, ratio
    assert staged.stat().st_mtime == original.stat().st_mtime  # lets uploads resume

    full = load_member(original, torch.device("cpu"))
    stripped = load_member(staged, torch.device("cpu"))
    pairs = zip(full.model.state_dict().values(), stripped.model.state_dict().values(), strict=True)
    for a, b in pairs:
        assert torch.equal(a, b)
    submission = offline / "submission.csv"
    args = ["predict", "-r", staged, "--images", tiny_data / "test_images", "--out", submission]
    code, out, err = cli_output(capsys, *args, "--workers", "0", "--device", "cpu")
    assert code == 0, err
    assert submission.is_file()


def test_restaging_replaces_the_folder_and_says_so(run: Path, offline: Path, capsys) -> None:
    assert cli_output(capsys, "upload", "-r", run, "--last", "--dry-run")[0] == 0
    folder = staged_folder(run, offline)
    (folder / "stray.txt").write_text("left over")
    code, out, _ = cli_output(capsys, "upload", "-r", run, "-e", "1", "-e", "2", "--dry-run")
    assert code == 0
    assert "replaced the earlier staging" in out
    names = {p.name for p in folder.iterdir()}
    assert "stray.txt" not in names and "last.pth" not in names
    assert {"checkpoint-epoch1.pth", "checkpoint-epoch2.pth"} <= names
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_with_deps_adds_wheels_and_the_notebook_cells(run: Path, offline: Path, capsys) -> None:
    code, out, err = cli_output(capsys, "upload", "-r", run, "--with-deps", "--dry-run")
    assert code == 0, err
    folder = staged_folder(run, offline)
    wheels = sorted(p.name for p in folder.glob("*.whl"))
    assert wheels == [
        "segmentation_models_pytorch-" + wheels[0].split("-")[1] + "-py3-none-any.whl",
        "sever-0.1.0-py3-none-any.whl",
    ]
    card = (folder / "README.md").read_text()
    slug = f"sever-tiny-{run.name}"
    assert f"!pip install --no-index --no-deps /kaggle/input/{slug}/*.whl" in card
    assert "from sever.inference import Ensemble, predict_folder" in card


def test_the_notebook_cell_predicts_from_python(
    run: Path, tiny_data: Path, offline: Path, capsys, monkeypatch
) -> None:
    # The card's Python cell as is, with the staged folder where Kaggle would attach it.
    code, _, err = cli_output(capsys, "upload", "-r", run, "--dry-run")
    assert code == 0, err
    folder = staged_folder(run, offline)
    card = (folder / "README.md").read_text()
    start = card.index("```python\nfrom pathlib import Path\nfrom sever.inference import")
    cell = card[start + len("```python\n") : card.index("```", start + 3)]
    cell = cell.replace(f"/kaggle/input/sever-tiny-{run.name}", str(folder))
    monkeypatch.chdir(offline)
    namespace = {"COMPETITION": tiny_data}
    exec(cell, namespace)
    assert namespace["ensemble"].tta == "hflip"
    frame = pd.read_csv(offline / "submission.csv", keep_default_na=False)
    assert len(frame) == 4 * 4  # the wide format: every test image and class


def test_model_target_writes_model_metadata(run: Path, offline: Path, capsys) -> None:
    args = ["upload", "-r", run, "--target", "model", "--model", "bob/steel-fpn", "--dry-run"]
    code, out, err = cli_output(capsys, *args)
    assert code == 0, err
    folder = staged_folder(run, offline)
    assert not (folder / "dataset-metadata.json").exists()
    model = json.loads((folder / "model-metadata.json").read_text())
    assert (model["ownerSlug"], model["slug"], model["isPrivate"]) == ("bob", "steel-fpn", True)
    instance = json.loads((folder / "model-instance-metadata.json").read_text())
    assert instance["framework"] == "pyTorch"
    assert instance["instanceSlug"] == f"run-{run.name}"
    assert instance["licenseName"] == "CC0: Public Domain"
    assert "${PATH}/model_best.pth" in instance["usage"]
    assert f"model variation bob/steel-fpn/pytorch/run-{run.name}" in out


def empty_run(offline: Path) -> Path:
    run = offline / "saved" / "tiny" / "1122-000000"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yml").write_text("name: tiny\n")
    return run


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unknown epoch", "no checkpoint for epoch 7; kept epochs: 1, 2"),
        ("no checkpoints", "this run has no checkpoints"),
        ("not a run", "not a run directory (no config.yml)"),
        ("missing credentials", "no Kaggle credentials: set KAGGLE_API_TOKEN"),
        ("bad dataset handle", "--dataset me: expected OWNER/SLUG"),
    ],
)
def test_errors_are_one_line(run: Path, offline: Path, capsys, case: str, expected: str) -> None:
    args = {
        "unknown epoch": ["-r", run, "-e", "7", "--dry-run"],
        "no checkpoints": ["-r", empty_run(offline), "--dry-run"],
        "not a run": ["-r", offline, "--dry-run"],
        "missing credentials": ["-r", run],
        "bad dataset handle": ["-r", run, "--dataset", "me", "--dry-run"],
    }[case]
    code, out, err = cli_output(capsys, "upload", *args)
    assert code == 1
    assert expected in error_line(err)
    assert not (offline / "upload" / "tiny" / run.name).exists()


# ---------------------------------------------------------------------- against the stub


def test_first_upload_creates_the_dataset_then_versions_it(
    run: Path, kaggle, offline: Path, capsys, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    ref = f"tester/sever-tiny-{run.name}"
    code, out, err = cli_output(capsys, "upload", "-r", run, "--best", "--weights-only")
    assert code == 0, err
    assert f"created: dataset {ref}: http://localhost/datasets/{ref}" in out
    folder = staged_folder(run, offline)
    dataset = kaggle.datasets[ref]
    request = dataset.request
    assert request["title"] == f"sever tiny {run.name}"
    assert request["licenseName"] == "CC0-1.0"
    assert request["isPrivate"] is True
    assert request["description"] == (folder / "README.md").read_text()
    sent = dataset.versions[0].files
    assert set(sent) == {"model_best.pth", "config.yml", "metrics.csv", "README.md"}
    for name, data in sent.items():
        assert data == (folder / name).read_bytes(), name

    args = ["upload", "-r", run, "-e", "1", "-m", "epoch 1 for the ensemble", "--public"]
    code, out, err = cli_output(capsys, *args)
    assert code == 0, err
    assert f"new version: dataset {ref}" in out
    assert len(kaggle.datasets) == 1
    version = kaggle.datasets[ref].versions[1]
    assert version.notes == "epoch 1 for the ensemble"
    assert "checkpoint-epoch1.pth" in version.files
    assert (
        version.files["checkpoint-epoch1.pth"]
        == (run / "checkpoints" / "checkpoint-epoch1.pth").read_bytes()
    )
    assert KEY not in out + err + caplog.text


def test_default_version_notes_name_the_checkpoints(run: Path, kaggle, capsys) -> None:
    assert cli_output(capsys, "upload", "-r", run, "--dataset", "tester/steel-models")[0] == 0
    assert (
        cli_output(capsys, "upload", "-r", run, "--last", "--dataset", "tester/steel-models")[0]
        == 0
    )
    notes = kaggle.datasets["tester/steel-models"].versions[1].notes
    assert notes.startswith(f"sever tiny/{run.name}: last.pth (epoch 2")


def test_model_target_creates_model_and_variation_then_versions(run: Path, kaggle, capsys) -> None:
    code, out, err = cli_output(capsys, "upload", "-r", run, "--target", "model", "--weights-only")
    assert code == 0, err
    assert kaggle.models["tester/sever-tiny"]["isPrivate"] is True
    instance = kaggle.instances[f"tester/sever-tiny/MODEL_FRAMEWORK_PY_TORCH/run-{run.name}"]
    assert instance.request["body"]["licenseName"] == "CC0: Public Domain"
    assert "model_best.pth" in instance.versions[0].files

    code, out, err = cli_output(
        capsys, "upload", "-r", run, "--target", "model", "--last", "-m", "final epoch"
    )
    assert code == 0, err
    assert "new version: model variation" in out
    assert kaggle.calls.count("CreateModel") == 1
    assert instance.versions[1].notes == "final epoch"
    assert "last.pth" in instance.versions[1].files


def test_an_access_token_works_too(run: Path, kaggle, capsys, monkeypatch) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    code, out, err = cli_output(capsys, "upload", "-r", run, "--last")
    assert code == 0, err
    assert "IntrospectToken" in kaggle.calls
    assert f"tester/sever-tiny-{run.name}" in kaggle.datasets
    assert TOKEN not in out + err


def test_a_refused_token_is_one_line(run: Path, kaggle, capsys, monkeypatch) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_API_TOKEN", "expired-token-0123456789")
    code, out, err = cli_output(capsys, "upload", "-r", run)
    assert code == 1
    assert "did not accept the credentials from KAGGLE_API_TOKEN" in error_line(err)
    assert "expired-token-0123456789" not in out + err


@pytest.mark.parametrize(
    "failure, expected",
    [
        (("CreateDataset", 500, "backend exploded"), "Kaggle answered HTTP 500: backend exploded"),
        (("GetDatasetStatus", 401, "Unauthorized"), "Kaggle rejected the credentials (401"),
        (("StartBlobUpload", 400, "bad blob"), "Kaggle answered HTTP 400: bad blob"),
    ],
)
def test_api_errors_keep_the_staged_folder(
    run: Path, kaggle, offline: Path, capsys, failure, expected: str
) -> None:
    method, status, message = failure
    kaggle.failures[method] = (status, message)
    code, out, err = cli_output(capsys, "upload", "-r", run)
    folder = staged_folder(run, offline)
    assert code == 1
    assert expected in error_line(err)
    assert f"(staged folder kept: {folder.relative_to(offline)})" in err
    assert (folder / "model_best.pth").is_file()
    assert not kaggle.datasets and KEY not in err


def test_a_wrong_key_is_refused_without_showing_it(run: Path, kaggle, capsys, monkeypatch) -> None:
    monkeypatch.setenv("KAGGLE_KEY", "wrong-key-0123456789")
    code, out, err = cli_output(capsys, "upload", "-r", run)
    assert code == 1
    assert "401" in err and "wrong-key-0123456789" not in out + err


def test_kaggle_json_credentials(run: Path, kaggle, offline: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = offline / "kaggle-config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "tester", "key": KEY}))
    (config / "kaggle.json").chmod(0o600)
    code, out, err = cli_output(capsys, "upload", "-r", run, "--dataset", "tester/from-json-file")
    assert code == 0, err
    assert "tester/from-json-file" in kaggle.datasets


def test_a_classifier_card_says_to_predict_beside_a_segmenter(
    tiny_data: Path, tmp_path: Path, offline: Path, capsys
) -> None:
    path = write_tiny(tmp_path, tiny_data)
    overrides = ["name=cls", "task=classify", "trainer.epochs=1", "trainer.steps_per_epoch=1"]
    classifier = train(load_config(path, overrides))
    code, _, err = cli_output(capsys, "upload", "-r", classifier, "--best", "--dry-run")
    assert code == 0, err
    card = (staged_folder(classifier, offline) / "README.md").read_text()
    slug = f"sever-cls-{classifier.name}"
    assert "| architecture | classifier: the encoder, pooled" in card
    assert "presence F1" in card
    assert f"!sever predict -r SEGMENTER.pth -r /kaggle/input/{slug}/model_best.pth" in card


def test_a_bad_tuned_file_is_refused_before_anything_is_staged(
    run: Path, offline: Path, capsys, tmp_path: Path, monkeypatch
) -> None:
    # A tuned file written when scale_c scaled the threshold (no format: 2) is refused in
    # one line before staging starts (checkpoints linked or stripped, wheels built).
    import sever.kaggle.publish

    def no_staging(*args, **kwargs):
        raise AssertionError("staging started")

    monkeypatch.setattr(sever.kaggle.publish, "stage", no_staging)
    copy = Path(shutil.copytree(run, tmp_path / "saved" / run.parent.name / run.name))
    (copy / "postprocess-tuned.yml").write_text("threshold: 0.5\nscale_c: 5.0\n")
    code, _, err = cli_output(capsys, "upload", "-r", copy, "--dry-run")
    assert code == 2
    assert error_line(err).startswith(
        f"error: {copy / 'postprocess-tuned.yml'}: PostProcess.scale_c: without 'format: 2'"
    )
    assert not (offline / "upload").exists()
