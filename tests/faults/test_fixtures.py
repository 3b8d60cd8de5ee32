"""The fault fixtures themselves: the small disk really fills, the read-only mount really refuses (as root)."""

import errno, pytest
from pathlib import Path
from tests.faults.conftest import fill


def test_small_disk_fills(small_disk):
    d = small_disk(64)
    fill(d)
    with pytest.raises(OSError) as e:
        (d / "x").write_bytes(b"1" * 8192)
    assert e.value.errno == errno.ENOSPC


def test_read_only(read_only, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("x")
    ro = read_only(src)
    assert (ro / "a").read_text() == "x"
    with pytest.raises(OSError) as e:
        (ro / "b").write_text("y")
    assert e.value.errno == errno.EROFS
