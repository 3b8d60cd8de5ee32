"""The `--with-package` wheels: built offline from this environment, installable with
`pip install --no-index --no-deps`, and enough to run sever's post-processing API."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from sever.errors import SeverError
from sever.kaggle.wheels import KAGGLE_MISSING, build_wheel

POSTPROCESS = """
import numpy as np
import sever
from sever.inference.postprocess import PostProcess, postprocess

probs = np.zeros((4, 32, 64), np.float32)
probs[1, 4:20, 8:40] = 0.9   # 512 pixels of class 2
probs[3, 0:2, 0:3] = 0.8     # 6 pixels of class 4, under its min_pixels
masks = postprocess(probs, PostProcess(threshold=0.5, min_pixels=[0, 100, 0, 100]))
print(sever.__file__)
print(masks.sum(axis=(1, 2)).tolist())
"""


def test_wheels_are_reproducible_and_their_record_is_right(tmp_path: Path) -> None:
    first = build_wheel("sever", tmp_path / "a")
    second = build_wheel("sever", tmp_path / "b")
    assert first.name == "sever-0.1.0-py3-none-any.whl"
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as wheel:
        names = set(wheel.namelist())
        assert {
            "sever/cli/__init__.py",
            "sever/logging.yml",
            "sever/inference/postprocess.py",
        } <= names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        assert (
            "sever = sever.cli:main"
            in wheel.read("sever-0.1.0.dist-info/entry_points.txt").decode()
        )
        for line in wheel.read("sever-0.1.0.dist-info/RECORD").decode().splitlines():
            name, digest, size = line.split(",")
            if digest:
                data = wheel.read(name)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
                assert digest == f"sha256={expected.decode()}" and int(size) == len(data)


def test_a_compiled_package_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SeverError, match="numpy is not a pure-Python package; fetch the wheel"):
        build_wheel("numpy", tmp_path)


@pytest.mark.slow
def test_wheels_install_offline_and_run_postprocessing(tmp_path: Path) -> None:
    wheels = [build_wheel(name, tmp_path / "wheels") for name in ("sever", *KAGGLE_MISSING)]
    env_dir = tmp_path / "kaggle-like"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    # Install with this environment's pip into the new one, offline, sever without its
    # dependencies (as in a Kaggle notebook, whose image already has most of them).
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-index"]
    subprocess.run([*install, "--no-deps", *wheels], check=True, capture_output=True, timeout=120)
    # numpy, opencv and the rest come from this environment, as Kaggle's image provides them.
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(site) / "main-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    # Run outside the repository, so that `import sever` cannot find the source tree.
    result = subprocess.run(
        [python, "-c", POSTPROCESS], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    where, sums = result.stdout.splitlines()
    assert where.startswith(str(env_dir)), where
    assert sums == "[0, 512, 0, 0]"
    version = subprocess.run(
        [env_dir / "bin" / "sever", "--version"], cwd=tmp_path, capture_output=True, text=True
    )
    assert version.stdout.strip() == "sever, version 0.1.0", version.stderr
    smp = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; print(u.find_spec('segmentation_models_pytorch').origin)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert smp.stdout.startswith(str(env_dir)), smp.stderr
