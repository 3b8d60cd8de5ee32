"""`sever download`: the competition's files through the kaggle API, unzipped in place.

Idempotent: a finished download leaves `DATA_DIR/.complete` and is not fetched again. An
interrupted one resumes where the API allows: the kaggle client appends to a partial zip
when the server supports ranges and the file has not changed, and a complete zip that was
not yet unzipped is only unzipped.
"""

from __future__ import annotations

import logging
import time
import zipfile
from pathlib import Path

from sever.errors import DataError
from sever.fileio import atomic_path, check_output_folder
from sever.kaggle import KaggleError, client
from sever.kaggle.transfers import shown_transfers

log = logging.getLogger(__name__)

COMPETITION = "severstal-steel-defect-detection"
DEFAULT_DIR = Path("data/raw") / COMPETITION
MARKER = ".complete"
KAGGLE_INPUT = Path("/kaggle/input")


def find_competition(root: Path | str = KAGGLE_INPUT, name: str = COMPETITION) -> Path:
    """The competition's data folder in a Kaggle notebook, wherever it is attached.

    Notebooks now attach competitions under `/kaggle/input/competitions/<name>`; older
    ones under `/kaggle/input/<name>`. This looks there, then one and two levels deeper
    (`root/*/<name>`, `root/*/*/<name>`), for the folder that holds `test_images/`.

    Raises:
        DataError: no such folder under `root`.
    """
    root = Path(root)
    places = [root / "competitions" / name, root / name]
    places += sorted(root.glob(f"*/{name}")) + sorted(root.glob(f"*/*/{name}"))
    for place in dict.fromkeys(places):
        if (place / "test_images").is_dir():
            return place
    raise DataError(
        f"{root}: no {name} folder with test_images (looked for {root}/competitions/{name}, "
        f"{root}/{name} and deeper); attach the competition's data to the notebook"
    )


def download_competition(
    data_dir: Path = DEFAULT_DIR, force: bool = False, competition: str = COMPETITION
) -> bool:
    """Download and unzip the competition's files into `data_dir`.

    Returns:
        True if it downloaded, False if `data_dir` was already complete.

    Raises:
        KaggleError: no credentials, the rules not accepted, Kaggle unreachable.
        DataError: the downloaded archive is damaged.
    """
    data_dir = Path(data_dir)
    marker = data_dir / MARKER
    if marker.is_file() and not force:
        log.info("%s: already downloaded (--force fetches it again)", data_dir)
        return False
    check_output_folder(data_dir, "DATA_DIR")
    api = client.connect()
    data_dir.mkdir(parents=True, exist_ok=True)
    rules = f"https://www.kaggle.com/c/{competition}/rules"
    log.info("downloading %s into %s", competition, data_dir)
    with (
        client.kaggle_errors(
            f"downloading {competition}",
            forbidden=f"; accept the competition's rules at {rules} with this Kaggle account, "
            "then run again",
        ),
        client.quiet_client(),
        shown_transfers(api),
    ):
        api.competition_download_files(competition, path=str(data_dir), force=force, quiet=False)
    archive = find_archive(data_dir, competition)
    log.info("unzipping %s", archive)
    unzip(archive, data_dir)
    archive.unlink()
    with atomic_path(marker) as tmp:
        tmp.write_text(f"{competition} downloaded {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return True


def find_archive(data_dir: Path, competition: str) -> Path:
    archive = data_dir / f"{competition}.zip"
    if archive.is_file():
        return archive
    zips = sorted(data_dir.glob("*.zip"))
    if len(zips) != 1:
        raise KaggleError(
            f"{data_dir}: expected the downloaded {archive.name}, found "
            f"{', '.join(p.name for p in zips) or 'no zip file'}"
        )
    return zips[0]


def unzip(archive: Path, folder: Path) -> None:
    """Extract `archive` into `folder` (names are sanitised: no absolute paths or '..')."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(folder)
    except zipfile.BadZipFile:
        raise DataError(
            f"{archive}: the download is damaged (not a zip file); delete it and run again"
        ) from None
