"""Small file helpers: atomic writes, output paths checked before the work, image reading,
and torch-file failures in a few words."""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image

from sever.errors import DataError, OptionError, SeverError, WriteError

log = logging.getLogger(__name__)


@contextmanager
def atomic_path(
    path: str | Path, clean: bool = True, what: str = "", then: str = ""
) -> Iterator[Path]:
    """Yield a temporary name beside `path`; rename it over `path` only on success.

    An interrupted writer leaves the previous file (or nothing) in place, never a
    half-written file under the real name. The temporary name (`temporary_name`) ends as
    `path` does, and what killed writers of `path` left is removed first.

    Args:
        clean: look for leftovers (a scan of the folder); a writer of many files in one
            folder (overlays) cleans the folder once with `remove_leftovers` instead.
        what: name the output for `writing`: the rename's failure becomes its WriteError,
            while the block's errors pass as they are (the block wraps its own writes):
            for a block that also reads or computes (export's parity check).
    """
    path = Path(path)
    if clean:
        remove_leftovers(path.parent, path.name)
    tmp = temporary_name(path)
    try:
        yield tmp
        with writing(path, what, then) if what else nullcontext():
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(
    path: str | Path, replace: bool = False, what: str = "", then: str = ""
) -> Iterator[Path]:
    """Yield a new empty folder beside `path`; rename it to `path` only on success.

    An interrupted writer leaves nothing under the real name, never a half-written folder
    that a later run would take for a finished one; the temporary folder is removed, and
    one that a killed writer of `path` left is removed before this one starts.

    Args:
        replace: an existing `path` is swapped out (renamed aside, then deleted) once the
            new folder is complete; without it `path` must not exist or be empty.
        what: name the folder for `writing`: a failure to create the temporary folder or to
            rename it becomes its WriteError, while the block's errors pass as they are
            (the block wraps its own writes, not its reads or compute).

    Raises:
        FileExistsError: `path` holds files and `replace` is False.
    """
    path = Path(path)
    if not replace and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path}: already exists and is not empty; refusing to overwrite it")
    tmp, old = temporary_name(path), temporary_name(path, "old")
    with writing(path, what, then) if what else nullcontext():
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path.parent, path.name)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    try:
        yield tmp
        with writing(path, what, then) if what else nullcontext():
            if replace and path.exists():
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
            os.replace(tmp, path)  # over a missing or empty folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def temporary_name(path: Path, kind: str = "tmp") -> Path:
    """`.NAME.tmp-HOST-PID.SUFFIX` beside `path`: hidden, this process's on this machine
    (a shared folder, NFS or two containers, is written from several), and ending as
    `path` does, for writers that go by the suffix (torch.export's `.pt2`, numpy's `.npz`)."""
    return path.with_name(f".{path.name}.{kind}-{HOST}-{os.getpid()}{path.suffix}")


def host_name() -> str:
    """This machine's name as a temporary name holds it: letters, digits and `_` only
    (`-` separates it from the PID)."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


HOST = host_name()
# `.tmp-HOST-PID`, or an earlier sever's `.tmp-PID` (no host)
LEFTOVER = re.compile(r"\.(?:tmp|old)-(?:(\w+)-)?(\d+)")
# A temporary of another machine (or one whose PID says nothing here) goes only once it has
# not changed for this long: its writer's PID cannot be asked from here, and every write
# renames its temporary or adds to it (a folder's time changes with each file) far sooner.
STALE_HOURS = 24


def remove_leftovers(folder: Path, name: str = "*") -> list[Path]:
    """Delete what killed writers left in `folder`: the temporary files and folders of
    `atomic_path` and `atomic_folder` (`.NAME.tmp-HOST-PID...`, `.NAME.old-HOST-PID...`) of
    `name` (a file name; `*`: every name).

    A temporary of this machine goes when its process runs no more; this process's own
    counts as left over only for one `name`, whose writer has not started yet (a container
    reuses PIDs from one run to the next); a live writer's is kept (two commands writing one
    folder). Another machine's (a shared folder: its PID means nothing here) goes only once
    unchanged for STALE_HOURS. An earlier sever's name, without a host, goes as before when
    its PID runs no more here, and otherwise only once unchanged for STALE_HOURS (it may be
    another machine's).

    Returns:
        What was removed, each also logged.
    """
    if not folder.is_dir():
        return []
    pattern = "*" if name == "*" else glob.escape(name)
    removed = []
    for path in [*folder.glob(f".{pattern}.tmp-*"), *folder.glob(f".{pattern}.old-*")]:
        at = len(name) + 1  # just after `.NAME`
        found = LEFTOVER.search(path.name) if name == "*" else LEFTOVER.match(path.name, at)
        if found is None or not left_over(path, found.group(1), int(found.group(2)), name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted write", path)
        removed.append(path)
    return removed


def left_over(path: Path, host: str | None, pid: int, name: str) -> bool:
    """Whether temporary `path` of `host` (None: an earlier sever's name) and `pid` was
    left by a writer that is gone (see remove_leftovers)."""
    if host in (None, HOST) and pid == os.getpid():
        return name != "*"
    if host == HOST:
        return not running(pid)
    if host is None and not running(pid):
        return True
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:  # gone already
        return False
    return age > STALE_HOURS * 3600


def running(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie, killed but not yet reaped,
    does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    except (OverflowError, ValueError):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def read_gray(path: str | Path) -> np.ndarray:
    """Read an image file as one grey channel.

    Returns:
        (H, W) uint8.

    Raises:
        DataError: the file is missing, unreadable or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None:
        raise DataError(f"{path}: not a readable image")
    if is_truncated_jpeg(data):
        # libjpeg pads a truncated file with grey and only warns: catch it here.
        raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
    return image


def is_truncated_jpeg(data: np.ndarray) -> bool:
    """True for a JPEG byte stream that lacks its end-of-image marker (FF D9)."""
    if data.size < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return False
    return not ends_with_eoi(data[-64:].tobytes())


def ends_with_eoi(tail: bytes) -> bool:
    """The last bytes of a JPEG end with FF D9 (zero padding after it allowed)."""
    return tail.rstrip(b"\x00").endswith(b"\xff\xd9")


def image_shape(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file from its header, without decoding the pixels; a JPEG must
    also end with its end-of-image marker, which catches most truncated copies. JPEG and
    PNG headers are read here (about 0.05 ms a file); other formats go through Pillow.

    Raises:
        DataError: the file is missing, not an image, or a truncated JPEG.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            start = handle.read(24)
            if start[:2] == b"\xff\xd8":
                shape = jpeg_shape(handle)
                handle.seek(max(0, handle.seek(0, os.SEEK_END) - 64))
                if not ends_with_eoi(handle.read()):
                    raise DataError(f"{path}: truncated JPEG (no end-of-image marker)")
            elif start[:8] == b"\x89PNG\r\n\x1a\n" and start[12:16] == b"IHDR":
                shape = int.from_bytes(start[20:24], "big"), int.from_bytes(start[16:20], "big")
            else:
                shape = None
        if shape is None or 0 in shape:
            with Image.open(path) as image:  # any other format, or an unusual JPEG
                shape = image.size[::-1]
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise DataError(f"{path}: not a readable image") from None
    return shape


# SOF markers: C0-CF but DHT (C4), JPG (C8) and DAC (CC); D0-D7 (RST), D8 (SOI) and 01 (TEM)
# stand alone; SOS (DA) or EOI (D9) before an SOF means there is none to find.
SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
STANDALONE = frozenset([*range(0xD0, 0xD9), 0x01])


def jpeg_shape(handle: BinaryIO) -> tuple[int, int] | None:
    """(H, W) from a JPEG's frame header, hopping from segment to segment from byte 2;
    None where the stream is not what a JPEG should be."""
    handle.seek(2)
    while True:
        marker = handle.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        code = marker[1]
        while code == 0xFF:  # fill bytes before a marker
            code = (handle.read(1) or b"\x00")[0]
        if code in STANDALONE:
            continue
        if code in (0xD9, 0xDA):
            return None
        size = handle.read(2)
        if len(size) < 2:
            return None
        if code in SOF:
            frame = handle.read(5)  # precision, height, width
            if len(frame) < 5:
                return None
            return int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
        handle.seek(int.from_bytes(size, "big") - 2, os.SEEK_CUR)


# ---------------------------------------------------------------- output paths


def existing_ancestor(path: Path) -> Path:
    """The nearest folder above `path` that exists (`.` for a relative path)."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    return ancestor


def check_output_file(path: Path, option: str) -> None:
    """Refuse an output file that cannot be written, before any work is done.

    Args:
        option: how the user gave it, for the message (`--out`).

    Raises:
        OptionError: `path` is a folder, or its folder cannot be created or refuses a new
            file (`probe_writable`: tried, not asked of `os.access`).
    """
    path = Path(path)
    if path.is_dir():
        raise OptionError(f"{option} {path}: is a folder; give a file name inside it")
    probe_writable(path.parent, f"{option} {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OptionError(f"{option} {path}: the file exists and is read-only")


def check_output_folder(path: Path, option: str) -> None:
    """Refuse an output folder that is a file or cannot be created (see check_output_file)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OptionError(f"{option} {path}: is a file, not a folder")
    probe_writable(path, f"{option} {path}")


def check_distinct(outputs: list[tuple[str, Path]], whole: tuple[str, ...] = ()) -> None:
    """Refuse two outputs of one command that are the same file or folder (through `..`,
    links or spelling), before any work: the one written last would silently replace
    the other.

    Args:
        outputs: (how the user gave it, the path): `("--out x.csv", Path("x.csv"))`.
        whole: the labels of folders written whole under a temporary name and renamed
            (`--save-probs`), which no other output may be inside.

    Raises:
        OptionError: naming both outputs and the path they share.
    """
    seen: dict[str, str] = {}
    for label, path in outputs:
        real = os.path.realpath(path)
        if real in seen:
            raise OptionError(
                f"{seen[real]} and {label} are the same file ({path}); give each its own name"
            )
        seen[real] = label
    for folder_label, folder in outputs:
        if folder_label not in whole:
            continue
        inside = os.path.realpath(folder) + os.sep
        for label, path in outputs:
            if label != folder_label and os.path.realpath(path).startswith(inside):
                raise OptionError(
                    f"{label} is inside {folder_label}, which is written whole and must be "
                    "empty; write it elsewhere"
                )


# ---------------------------------------------------------------- failed writes

# What an OSError's errno means for a write, in the words the user acts on.
WRITE_PROBLEMS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "the file is too large for its file system",
    errno.EIO: "an input/output error (a failing disk or a lost network share)",
}


def os_reason(exc: OSError) -> str:
    """An OSError in a few words: `the disk is full`, else its own strerror."""
    return WRITE_PROBLEMS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


def write_problem(exc: BaseException) -> str | None:
    """Why a write failed, in a few words; None for an error that is not a failed write.

    The rule: an OSError with an errno; an error raised `from` one (its `__cause__`,
    followed down); and a RuntimeError raised while the OSError was being handled (its
    `__context__`, one step): torch.save writing to an open file turns the file's OSError
    into a RuntimeError this way. Any other error raised while an OSError was handled (a
    read error caught and turned into a library's error) is not taken for a write failure;
    `writing` goes around the writes alone, so a RuntimeError there is the write's.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return os_reason(seen)
        context = seen.__context__ if not seen.__suppress_context__ else None
        if isinstance(seen, RuntimeError) and isinstance(context, OSError):
            seen = seen.__cause__ or context
        else:
            seen = seen.__cause__
    return None


@contextmanager
def writing(path: str | Path, what: str, then: str = "") -> Iterator[None]:
    """Turn a failed write of `path` into one WriteError line: the path, what it is, why
    (`the disk is full`) and `then` (what to do); other errors pass through.

    Put it around the writes only (see write_problem): a read or a computation in the
    block whose OSError is no write's would be reported as the output's. Use it around
    `atomic_path`, so the temporary file is gone before the error shows; a block that
    also reads or computes gives `atomic_path` or `atomic_folder` `what` instead and
    wraps its writes.
    """
    try:
        yield
    except (OSError, RuntimeError) as exc:
        problem = write_problem(exc)
        if problem is None:
            raise
        message = f"{path}: cannot write the {what}: {problem}{then}"
        raise WriteError(message, Path(path)) from None


def probe_writable(path: str | Path, what: str, error: type[SeverError] = OptionError) -> None:
    """Refuse an output folder that cannot be written, by creating (and removing) a
    temporary file in it, or in the nearest folder above it that exists.

    `os.access` is no test: it says yes to root on a read-only mount, on /proc and on
    /sys. The probe leaves nothing behind, the folder's modification time included.

    Args:
        path: the output folder (or the folder an output file goes in), existing or not.
        what: how the user gave it, for the message (`--out x`, `trainer.save_dir`).
        error: the error to raise (OptionError for an option, ConfigError for a key).

    Raises:
        error: `path` (or the nearest existing path above it) is a file, or the folder
            refuses a new file (read-only, permission denied, a pseudo file system).
    """
    refused = write_refusal(path)
    if refused is not None:
        choose = "a folder you can write to"
        if refused.endswith("not a folder"):
            choose = "another folder"
        raise error(f"{what}: {refused}; choose {choose}")


def write_refusal(path: str | Path) -> str | None:
    """Why no file can be created in folder `path` (or the nearest folder above it that
    exists), found as `probe_writable` finds it: `cannot write in X (the file system is
    read-only)`, `X is a file, not a folder`; None when one can."""
    path = Path(path)
    folder = path if path.exists() else existing_ancestor(path)
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    stat = folder.stat()
    try:
        handle, name = tempfile.mkstemp(prefix=".sever-probe-", dir=folder)
    except OSError as exc:
        return f"cannot write in {folder} ({os_reason(exc)})"
    os.close(handle)
    os.unlink(name)
    try:
        os.utime(folder, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    except OSError:  # not ours to restore (another owner): the probe is gone all the same
        pass
    return None


def writable_or(preferred: Path, fallback: Path, what: str) -> Path:
    """`preferred` (a folder) when a file can be created in it (`write_refusal`), else
    `fallback`, said once in the log: a run on a read-only mount (a Kaggle notebook's
    /kaggle/input) still gets its report or cache written, elsewhere.

    Raises:
        OptionError: neither folder takes a file (naming `what` and both).
    """
    refused = write_refusal(preferred)
    if refused is None:
        return preferred
    probe_writable(fallback, f"{what}: {refused}, and in {fallback}")
    log.info("%s goes to %s: %s", what, fallback, refused)
    return fallback


@contextmanager
def folders_made(folder: str | Path) -> Iterator[Path]:
    """Create `folder` and the missing folders above it; if the block fails, remove those
    of them that are still empty, so a failed write (a full disk) leaves no empty folders.
    """
    folder = Path(folder)
    missing = [p for p in [folder, *folder.parents] if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
    except BaseException:
        for made in missing:
            try:
                made.rmdir()  # only an empty folder goes
            except FileNotFoundError:
                continue
            except OSError:
                break
        raise


# ---------------------------------------------------------------- torch files


def torch_load_problem(exc: BaseException, path: Path) -> str:
    """Why torch.load failed on `path`, in a few words instead of torch's paragraphs."""
    text = str(exc)
    refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if refused:
        return (
            f"it holds a pickled {refused.group(1)}, which safe loading (weights_only) refuses; "
            "only tensors and plain values load"
        )
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        return "the file is empty"
    if isinstance(exc, EOFError) or "zip archive" in text or "central directory" in text:
        return "the file is damaged or truncated (copy it again)"
    return "not a PyTorch file"
