"""sever.fileio: atomic writes and reading images, broken ones included."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from sever import fileio
from sever.errors import DataError
from sever.fileio import atomic_path, is_truncated_jpeg, read_gray


@pytest.fixture
def jpeg(tmp_path: Path) -> Path:
    """A 3-channel grey JPEG, as the competition stores them."""
    gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (24, 2))  # (24, 64)
    path = tmp_path / "a.jpg"
    assert cv2.imwrite(str(path), cv2.merge([gray] * 3), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def test_atomic_path_replaces_on_success(tmp_path: Path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_text("new")
        assert target.read_text() == "old"  # not visible until the block ends
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "out.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]


def test_read_gray(jpeg: Path):
    image = read_gray(jpeg)
    assert image.shape == (24, 64) and image.dtype == np.uint8
    expected = np.tile(np.arange(0, 256, 8), (24, 2))
    assert np.abs(image.astype(int) - expected).max() <= 8  # JPEG is lossy


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "image file not found"),
        (b"", "not a readable image"),
        (b"GIF89a not really" * 20, "not a readable image"),
    ],
)
def test_read_gray_errors(tmp_path: Path, content: bytes | None, message: str):
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=f"^{path}: {message}$"):
        read_gray(path)


def test_read_gray_rejects_a_truncated_jpeg(jpeg: Path):
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"^{jpeg}: (not a readable image|truncated JPEG)"):
        read_gray(jpeg)


def test_read_gray_catches_a_truncated_jpeg_that_decodes(jpeg: Path, monkeypatch):
    # Some libjpeg builds pad a truncated file with grey and only warn; simulate one.
    data = jpeg.read_bytes()
    jpeg.write_bytes(data[:-2])  # no end-of-image marker
    monkeypatch.setattr(fileio.cv2, "imdecode", lambda *_: np.zeros((24, 64), np.uint8))
    with pytest.raises(DataError, match=f"^{jpeg}: truncated JPEG"):
        read_gray(jpeg)


@pytest.mark.parametrize(
    "tail, truncated",
    [
        (b"", False),  # intact: ends with FF D9
        (b"\x00\x00\x00", False),  # zero padding after the marker is harmless
        (None, True),  # cut short
    ],
)
def test_is_truncated_jpeg(jpeg: Path, tail: bytes | None, truncated: bool):
    data = jpeg.read_bytes()
    data = data[: len(data) // 2] if tail is None else data + tail
    assert is_truncated_jpeg(np.frombuffer(data, np.uint8)) is truncated


def test_is_truncated_jpeg_ignores_other_formats(tmp_path: Path):
    ok, png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))
    assert ok and not is_truncated_jpeg(png[:-5].ravel())


# ---------------------------------------------------------------- image headers


def write_image(path: Path, shape: tuple[int, int], *params: int) -> Path:
    rng = np.random.default_rng(0)
    assert cv2.imwrite(str(path), rng.integers(0, 256, (*shape, 3), dtype=np.uint8), list(params))
    return path


def with_exif(jpeg: Path, size: int) -> Path:
    """The JPEG with an APP1 segment of `size` bytes after SOI, before the frame header."""
    data = jpeg.read_bytes()
    segment = b"\xff\xe1" + (size + 2).to_bytes(2, "big") + bytes(size)
    jpeg.write_bytes(data[:2] + segment + data[2:])
    return jpeg


@pytest.mark.parametrize(
    ("name", "shape", "params"),
    [
        ("base.jpg", (256, 1600), []),
        ("odd.jpg", (37, 1001), [cv2.IMWRITE_JPEG_QUALITY, 50]),
        ("progressive.jpg", (64, 256), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        ("restarts.jpg", (64, 256), [cv2.IMWRITE_JPEG_RST_INTERVAL, 4]),
        ("a.png", (48, 320), []),
        ("a.bmp", (20, 30), []),  # through Pillow
        ("a.tif", (21, 31), []),
    ],
)
def test_image_shape_reads_headers_like_pillow(tmp_path, name, shape, params):
    from PIL import Image

    path = write_image(tmp_path / name, shape, *params)
    assert fileio.image_shape(path) == shape
    with Image.open(path) as image:
        assert image.size[::-1] == shape


def test_image_shape_skips_large_segments_before_the_frame(tmp_path):
    path = with_exif(write_image(tmp_path / "exif.jpg", (70, 90)), 60_000)
    assert fileio.image_shape(path) == (70, 90)
    assert read_gray(path).shape == (70, 90)  # still a valid JPEG


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-300], "truncated JPEG (no end-of-image marker)"),
        (lambda b: b[:40], "truncated JPEG (no end-of-image marker)"),
        (lambda b: b"not an image at all", "not a readable image"),
        (lambda b: b"", "not a readable image"),
        (lambda b: b[:2] + b"\x00" * 200 + b"\xff\xd9", "not a readable image"),
    ],
)
def test_image_shape_refuses_damaged_files(tmp_path, damage, message):
    path = write_image(tmp_path / "x.jpg", (64, 96))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError) as error:
        fileio.image_shape(path)
    assert str(error.value) == f"{path}: {message}"


def test_image_shape_of_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="image file not found"):
        fileio.image_shape(tmp_path / "gone.jpg")


# ---------------------------------------------------------------- atomic folders


def test_atomic_folder_appears_whole_or_not_at_all(tmp_path: Path):
    target = tmp_path / "data"
    with pytest.raises(RuntimeError), fileio.atomic_folder(target) as folder:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary folder
    with fileio.atomic_folder(target) as folder:
        (folder / "a.txt").write_text("a")
        assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    assert (target / "a.txt").read_text() == "a"


def test_atomic_folder_refuses_or_replaces_an_existing_one(tmp_path: Path):
    target = tmp_path / "staged"
    target.mkdir()
    (tmp_path / "empty").mkdir()
    with fileio.atomic_folder(tmp_path / "empty") as folder:  # an empty folder is taken
        (folder / "x").write_text("x")
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError), fileio.atomic_folder(target):
        pass
    with pytest.raises(RuntimeError), fileio.atomic_folder(target, replace=True) as folder:
        raise RuntimeError("interrupted")
    assert (target / "old.txt").read_text() == "old"  # a failed replacement keeps the old
    with fileio.atomic_folder(target, replace=True) as folder:
        (folder / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "staged"]


def test_probe_writable_refuses_what_os_access_allows_root(tmp_path: Path):
    # os.access(W_OK) is True for root on /proc; creating a file there is not possible.
    with pytest.raises(fileio.OptionError, match=r"^--out /proc/saved: cannot write in /proc \("):
        fileio.probe_writable(Path("/proc/saved"), "--out /proc/saved")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(fileio.OptionError, match="a-file is a file, not a folder"):
        fileio.probe_writable(tmp_path / "a-file" / "runs", "trainer.save_dir")


def test_probe_writable_leaves_nothing_behind(tmp_path: Path):
    folder = tmp_path / "out"
    folder.mkdir()
    os.utime(folder, ns=(1_000_000_000, 2_000_000_000))
    fileio.probe_writable(folder / "new" / "deeper", "--out")
    fileio.probe_writable(folder, "--out")
    assert list(folder.iterdir()) == []
    assert folder.stat().st_mtime_ns == 2_000_000_000


def test_writing_names_the_file_and_the_full_disk(tmp_path: Path):
    target = tmp_path / "last.pth"
    then = "; free space"
    with pytest.raises(fileio.WriteError) as e, fileio.writing(target, "checkpoint", then):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:  # as torch.save over an open file does: a RuntimeError over it
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")  # noqa: B904
    assert str(e.value) == f"{target}: cannot write the checkpoint: the disk is full; free space"
    with pytest.raises(ValueError), fileio.writing(target, "checkpoint"):
        raise ValueError("not a write")


def raised_over(error: BaseException, over: BaseException) -> BaseException:
    """`error` as raised while `over` was being handled (its `__context__`)."""
    try:
        try:
            raise over
        except BaseException:
            raise error  # noqa: B904
    except BaseException as exc:
        return exc


def test_only_a_write_failure_is_one():
    full = OSError(errno.ENOSPC, "No space left on device")
    missing = FileNotFoundError(errno.ENOENT, "No such file or directory", "model.onnx")
    assert fileio.write_problem(full) == "the disk is full"
    # torch.save over an open file: a RuntimeError raised while handling the OSError
    assert fileio.write_problem(raised_over(RuntimeError("unexpected pos"), full))
    try:
        raise ValueError("wrapped") from full
    except ValueError as exc:
        assert fileio.write_problem(exc) == "the disk is full"
    # a library's errors raised while it handled a read error are not a write's failure
    library = raised_over(RuntimeError("session failed"), raised_over(KeyError("x"), missing))
    assert fileio.write_problem(library) is None
    assert fileio.write_problem(raised_over(ValueError("bad"), missing)) is None
    with pytest.raises(ValueError), fileio.writing("x.onnx", "export"):
        raise raised_over(ValueError("bad"), missing)


# ---------------------------------------------------------------- leftovers and collisions


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_temporary_name_ends_as_the_real_one(tmp_path: Path):
    tmp = fileio.temporary_name(tmp_path / "model.pt2")
    host, pid = fileio.HOST, os.getpid()
    assert tmp.name == f".model.pt2.tmp-{host}-{pid}.pt2"
    assert fileio.temporary_name(tmp_path / "probs", "old").name == f".probs.old-{host}-{pid}"


def test_a_host_name_is_letters_digits_and_underscores(monkeypatch):
    monkeypatch.setattr(fileio.socket, "gethostname", lambda: "node-3.cluster.local")
    assert fileio.host_name() == "node_3_cluster_local"


def test_leftovers_of_a_shared_folder_go_by_host(tmp_path: Path, monkeypatch):
    dead, here = dead_pid(), fileio.HOST
    monkeypatch.setattr(fileio, "running", lambda pid: pid != dead)
    names = {
        "ours_dead": f".sub.csv.tmp-{here}-{dead}.csv",
        "old_format_dead": f".sub.csv.tmp-{dead}.csv",  # an earlier sever's: as before
        "other_host": f".sub.csv.tmp-node_2-{dead}.csv",  # its PID means nothing here
        "other_host_stale": f".sub.csv.tmp-node_2-{dead + 1}.csv",
        "ours_live": f".sub.csv.tmp-{here}-{os.getppid()}.csv",  # kept, however old
        "old_format_live_stale": f".sub.csv.tmp-{os.getppid()}.csv",  # maybe another host's
    }
    for name in names.values():
        (tmp_path / name).write_text("half")
    long_ago = 1e9  # 2001: far more than STALE_HOURS ago
    for key in ("other_host_stale", "ours_live", "old_format_live_stale"):
        os.utime(tmp_path / names[key], (long_ago, long_ago))
    removed = fileio.remove_leftovers(tmp_path, "sub.csv")
    assert sorted(p.name for p in removed) == sorted(
        names[k]
        for k in ("ours_dead", "old_format_dead", "other_host_stale", "old_format_live_stale")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names["other_host"], names["ours_live"]]
    )
    # the same for a whole folder (overlays), and for folders (saved probabilities)
    (tmp_path / f".probs.tmp-node_2-{dead}").mkdir()
    (tmp_path / f".probs.tmp-{here}-{dead}").mkdir()
    assert [p.name for p in fileio.remove_leftovers(tmp_path)] == [f".probs.tmp-{here}-{dead}"]


def test_leftovers_of_dead_writers_go_those_of_live_ones_stay(tmp_path: Path):
    dead, live = dead_pid(), os.getppid()
    (tmp_path / f".sub.csv.tmp-{dead}.csv").write_text("half")
    (tmp_path / f".sub.csv.tmp-{live}.csv").write_text("being written")
    (tmp_path / f".probs.tmp-{dead}").mkdir()
    (tmp_path / f".probs.tmp-{dead}" / "a.npz").write_text("x")
    (tmp_path / f".probs.old-{dead}").mkdir()
    (tmp_path / f".other.csv.tmp-{os.getpid()}.csv").write_text("this process's, in use")
    (tmp_path / ".sub.csv.tmp-notapid").write_text("not ours")
    with atomic_path(tmp_path / "sub.csv") as tmp:
        tmp.write_text("new")
    with fileio.atomic_folder(tmp_path / "probs") as folder:
        (folder / "b.npz").write_text("y")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "sub.csv",
            "probs",
            f".sub.csv.tmp-{live}.csv",
            f".other.csv.tmp-{os.getpid()}.csv",
            ".sub.csv.tmp-notapid",
        ]
    )
    # one name: this process's own temporary of it is a leftover (a container reuses PIDs)
    removed = fileio.remove_leftovers(tmp_path, "other.csv")
    assert [p.name for p in removed] == [f".other.csv.tmp-{os.getpid()}.csv"]


def test_a_folder_is_cleaned_of_every_dead_writers_leftovers(tmp_path: Path):
    dead = dead_pid()
    for name in ("a.png", "b.png"):
        (tmp_path / f".{name}.tmp-{dead}.png").write_text("half")
    (tmp_path / f".c.png.tmp-{os.getpid()}.png").write_text("this process's, in use")
    assert len(fileio.remove_leftovers(tmp_path)) == 2
    assert [p.name for p in tmp_path.iterdir()] == [f".c.png.tmp-{os.getpid()}.png"]


def test_outputs_that_are_one_file_are_refused(tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    out = ("--out a.csv", tmp_path / "real" / "a.csv")
    same = ("--instances a.jsonl (its .csv)", tmp_path / "link" / ".." / "real" / "a.csv")
    with pytest.raises(fileio.OptionError) as e:
        fileio.check_distinct([out, same])
    assert str(e.value) == (
        f"--out a.csv and --instances a.jsonl (its .csv) are the same file ({same[1]}); "
        "give each its own name"
    )
    probs = ("--save-probs real", tmp_path / "link")
    with pytest.raises(fileio.OptionError, match="--out a.csv is inside --save-probs real"):
        fileio.check_distinct([out, probs], whole=("--save-probs real",))
    fileio.check_distinct([out, ("--overlays o", tmp_path / "o")], whole=("--save-probs",))


def test_output_checks_try_writing_rather_than_ask_os_access(tmp_path: Path):
    with pytest.raises(fileio.OptionError, match=r"^--out /proc/x.csv: cannot write in /proc"):
        fileio.check_output_file(Path("/proc/x.csv"), "--out")
    with pytest.raises(fileio.OptionError, match=r"^--overlays /proc/o: cannot write in /proc"):
        fileio.check_output_folder(Path("/proc/o"), "--overlays")
    fileio.check_output_file(tmp_path / "new" / "x.csv", "--out")
    assert list(tmp_path.iterdir()) == []


def test_writable_or_falls_back_once_and_refuses_when_neither_is(tmp_path: Path, caplog):
    with caplog.at_level("INFO", logger="sever"):
        assert fileio.writable_or(Path("/proc/run"), tmp_path, "the report") == tmp_path
    assert caplog.messages == [f"the report goes to {tmp_path}: cannot write in /proc ("
                               "no such file or directory)"]  # fmt: skip
    assert fileio.writable_or(tmp_path, Path("/proc"), "the report") == tmp_path
    with pytest.raises(fileio.OptionError, match=r"^the report: cannot write in /proc .*, and in"):
        fileio.writable_or(Path("/proc/run"), Path("/sys/x"), "the report")
