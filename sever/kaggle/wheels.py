"""Wheels of installed pure-Python distributions, for `pip install --no-index` on Kaggle.

A wheel is a zip of the package files plus a `.dist-info` folder. Building it from what is
installed here (the source tree for an editable install such as sever's own, else the
files the installation recorded) needs no network, no build backend and no subprocess, and
packs exactly the code that trained and staged the model. Entries carry a fixed date, so
the same code gives the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import zipfile
from importlib.metadata import Distribution, PackageNotFoundError, distribution, distributions
from pathlib import Path

from sever.errors import SeverError
from sever.fileio import atomic_path

# sever's dependencies that Kaggle's Python image lacks (it has torch, torchvision, timm,
# albumentations, opencv, pandas, pydantic, click, pyyaml, tqdm): pure Python, so their
# wheels built here install there.
KAGGLE_MISSING = ("segmentation-models-pytorch",)
WHEEL_FILE = "Wheel-Version: 1.0\nGenerator: sever\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
DIST_INFO_COPIED = ("METADATA", "entry_points.txt", "top_level.txt")
EPOCH = (1980, 1, 1, 0, 0, 0)


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def is_editable(dist: Distribution) -> bool:
    try:
        return bool(json.loads(dist.read_text("direct_url.json") or "{}")["dir_info"]["editable"])
    except (KeyError, TypeError, ValueError):
        return False


def top_level_names(dist: Distribution) -> list[str]:
    names = (dist.read_text("top_level.txt") or "").split()
    return names or [normalise(dist.metadata["Name"])]


def source_files(dist: Distribution) -> list[tuple[str, Path]]:
    """(name in the wheel, file) for the distribution's code.

    Raises:
        SeverError: the distribution is not pure Python or its files cannot be found.
    """
    name = dist.metadata["Name"]
    if is_editable(dist):
        files = []
        for top in top_level_names(dist):
            spec = importlib.util.find_spec(top)
            if spec is None or spec.origin is None:
                raise SeverError(f"{name}: cannot find its package '{top}'")
            if not spec.submodule_search_locations:
                files.append((Path(spec.origin).name, Path(spec.origin)))
                continue
            root = Path(next(iter(spec.submodule_search_locations)))
            for path in sorted(root.rglob("*")):
                relative = path.relative_to(root.parent)
                if path.is_file() and not skipped(relative):
                    files.append((relative.as_posix(), path))
        return files
    wheel = dist.read_text("WHEEL") or ""
    if "Root-Is-Purelib: true" not in wheel or "py3-none-any" not in wheel.replace("py2.", ""):
        raise SeverError(
            f"{name} is not a pure-Python package; fetch the wheel for Kaggle's platform "
            f"with `pip download {name} --no-deps --platform manylinux2014_x86_64 "
            "--only-binary :all:` instead"
        )
    files = []
    for record in dist.files or []:
        posix = record.as_posix()
        if posix.startswith("..") or ".dist-info/" in posix or skipped(Path(posix)):
            continue
        files.append((posix, Path(str(dist.locate_file(record)))))
    return files


def skipped(relative: Path) -> bool:
    """Caches and hidden files, which a wheel never carries."""
    return (
        relative.suffix in (".pyc", ".pyo")
        or "__pycache__" in relative.parts
        or any(part.startswith(".") for part in relative.parts)
    )


def record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def installed(name: str) -> Distribution:
    """The installed .dist-info of `name`. Run from a source checkout, importlib would find
    the checkout's .egg-info first (the working directory is on sys.path), which holds no
    wheel metadata."""
    found = [
        d for d in distributions(name=name) if str(getattr(d, "_path", "")).endswith(".dist-info")
    ]
    if not found:
        try:
            return distribution(name)
        except PackageNotFoundError:
            raise SeverError(f"{name} is not installed here, so no wheel can be built") from None
    return found[0]


def build_wheel(name: str, out_dir: Path) -> Path:
    """Write `<name>-<version>-py3-none-any.whl` into `out_dir` from the installed copy.

    Raises:
        SeverError: `name` is not installed, or not pure Python.
    """
    filename, entries = wheel_contents(name)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return write_wheel(Path(out_dir) / filename, entries)


def wheel_contents(name: str) -> tuple[str, list[tuple[str, bytes]]]:
    """The file name and the (archive name, bytes) entries of `name`'s wheel, read from
    the installed copy (the reads apart from the write: staging reports only the write's
    failure as its own).

    Raises:
        SeverError: `name` is not installed, or not pure Python.
    """
    dist = installed(name)
    project, version = normalise(dist.metadata["Name"]), dist.version
    info = f"{project}-{version}.dist-info"
    entries = [(arc, path.read_bytes()) for arc, path in source_files(dist)]
    for meta in DIST_INFO_COPIED:
        text = dist.read_text(meta)
        if text is not None:
            entries.append((f"{info}/{meta}", text.encode()))
    for record in dist.files or []:
        parts = record.as_posix().split("/")
        if len(parts) > 2 and parts[0].endswith(".dist-info") and parts[1] == "licenses":
            entries.append(
                (f"{info}/{'/'.join(parts[1:])}", Path(str(dist.locate_file(record))).read_bytes())
            )
    entries.append((f"{info}/WHEEL", WHEEL_FILE.encode()))
    listing = "\n".join([*(record_line(a, d) for a, d in entries), f"{info}/RECORD,,"]) + "\n"
    entries.append((f"{info}/RECORD", listing.encode()))
    return f"{project}-{version}-py3-none-any.whl", entries


def write_wheel(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    """Write the wheel of `entries` (see wheel_contents) at `path`; returns `path`."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for arcname, data in entries:
            entry = zipfile.ZipInfo(arcname, date_time=EPOCH)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(entry, data)
    return path
