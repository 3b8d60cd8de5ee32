"""Reading and writing train.csv / sample_submission.csv in the wide and long formats.

Images are 4x3 (H x W), 12 pixels, so every RLE below can be checked by hand: pixel k
(1-based) is column (k - 1) // 4, row (k - 1) % 4.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sever.data.tables import Labels, read_image_ids, read_labels, read_table, write_labels
from sever.errors import DataError

SHAPE = (4, 3)  # H, W
LONG_HEADER = "ImageId,ClassId,EncodedPixels"
WIDE_HEADER = "ImageId_ClassId,EncodedPixels"


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """train_images/ with four images (names only; tables never decodes them) and a stray file."""
    folder = tmp_path / "train_images"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.PNG", "notes.txt"):
        (folder / name).write_bytes(b"")
    return folder


# ---------------------------------------------------------------- formats


def test_long_format_keeps_defect_free_images_from_the_folder(tmp_path: Path, images: Path):
    csv = write(tmp_path / "train.csv", LONG_HEADER, "b.jpg,2,12 1", "a.jpg,3,5 3", "a.jpg,1,1 2")
    labels = read_labels(csv, images, SHAPE)
    assert labels.format == "long"
    # c.jpg and d.PNG have no row: they are defect-free images, not lost; notes.txt is no image
    assert labels.images == ["a.jpg", "b.jpg", "c.jpg", "d.PNG"]
    assert labels.rles() == {"a.jpg": {1: "1 2", 3: "5 3"}, "b.jpg": {2: "12 1"}}
    # sorted by image then class, each row remembering its CSV line
    assert labels.defects[["ImageId", "ClassId", "line"]].values.tolist() == [
        ["a.jpg", 1, 4],
        ["a.jpg", 3, 3],
        ["b.jpg", 2, 2],
    ]
    assert labels.class_sets().to_dict() == {"a.jpg": "1,3", "b.jpg": "2", "c.jpg": "", "d.PNG": ""}


def test_long_format_without_folder_trusts_the_csv(tmp_path: Path):
    csv = write(tmp_path / "train.csv", LONG_HEADER, "a.jpg,1,1 2")
    assert read_labels(csv, None, SHAPE).images == ["a.jpg"]


def test_long_format_columns_in_any_order(tmp_path: Path):
    csv = write(tmp_path / "train.csv", "EncodedPixels,ImageId,ClassId", "1 2,a.jpg,4")
    frame, fmt = read_table(csv)
    assert fmt == "long"
    assert frame[["ImageId", "ClassId", "EncodedPixels"]].values.tolist() == [["a.jpg", 4, "1 2"]]


def test_wide_format(tmp_path: Path, images: Path):
    csv = write(
        tmp_path / "train.csv",
        WIDE_HEADER,
        "a.jpg_1,1 2",
        "a.jpg_2,",
        "a.jpg_3,5 3",
        "a.jpg_4,",
        # an ImageId with underscores of its own: split on the last one
        "my_b_1.jpg_1,",
        "my_b_1.jpg_2,",
        "my_b_1.jpg_3,",
        "my_b_1.jpg_4,9 4",
        # no defect at all: four empty rows
        "c.jpg_1,",
        "c.jpg_2,",
        "c.jpg_3,",
        "c.jpg_4,",
    )
    labels = read_labels(csv, images, SHAPE)
    assert labels.format == "wide"
    # the wide CSV lists every image itself; files without rows (b.jpg, d.PNG) are not added
    assert labels.images == ["a.jpg", "c.jpg", "my_b_1.jpg"]
    assert labels.rles() == {"a.jpg": {1: "1 2", 3: "5 3"}, "my_b_1.jpg": {4: "9 4"}}
    assert labels.defects["line"].tolist() == [2, 4, 9]
    assert labels.class_sets().to_dict() == {"a.jpg": "1,3", "c.jpg": "", "my_b_1.jpg": "4"}


def test_all_images_defect_free(tmp_path: Path):
    csv = write(tmp_path / "train.csv", WIDE_HEADER, *(f"a.jpg_{c}," for c in range(1, 5)))
    labels = read_labels(csv, None, SHAPE)
    assert labels.images == ["a.jpg"] and labels.defects.empty and labels.rles() == {}
    assert labels.class_sets().to_dict() == {"a.jpg": ""}


@pytest.mark.parametrize("header", [WIDE_HEADER, LONG_HEADER])
def test_header_only_is_an_empty_table(tmp_path: Path, header: str):
    frame, _ = read_table(write(tmp_path / "train.csv", header))
    assert frame.empty


def test_encoded_pixels_are_stripped(tmp_path: Path):
    csv = write(tmp_path / "train.csv", LONG_HEADER, 'a.jpg,1," 1 2 "')
    assert read_labels(csv, None, SHAPE).rles() == {"a.jpg": {1: "1 2"}}


def test_rle_bounds_are_inclusive(tmp_path: Path):
    # touching runs are allowed; a run ending on the last pixel (12) is inside the image
    csv = write(tmp_path / "train.csv", LONG_HEADER, "a.jpg,1,1 2 3 1 10 3")
    assert read_labels(csv, None, SHAPE).rles() == {"a.jpg": {1: "1 2 3 1 10 3"}}


def test_no_shape_skips_rle_validation(tmp_path: Path):
    csv = write(tmp_path / "train.csv", LONG_HEADER, "a.jpg,1,1 100")
    assert read_labels(csv, None, None).rles() == {"a.jpg": {1: "1 100"}}
    with pytest.raises(DataError, match="ends past the image's 12 pixels"):
        read_labels(csv, None, SHAPE)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "header",
    ["ImageId,EncodedPixels", "ImageId,ClassId,EncodedPixels,Extra", "Image_Class,EncodedPixels"],
)
def test_header_of_neither_format(tmp_path: Path, header: str):
    csv = write(tmp_path / "train.csv", header, ",".join(["x"] * header.count(",")) + ",x")
    with pytest.raises(DataError) as info:
        read_table(csv)
    message = str(info.value)
    assert message.startswith(f"{csv}: header {header} ")
    assert "neither the wide format" in message and "nor the long format" in message


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "not a readable CSV"),
        (None, "file not found"),
    ],
)
def test_unreadable_or_missing_csv(tmp_path: Path, text: str | None, message: str):
    csv = tmp_path / "train.csv"
    if text is not None:
        csv.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_table(csv)
    assert str(info.value).startswith(str(csv))


@pytest.mark.parametrize("class_id", ["0", "5", "x", ""])
def test_unknown_class_id_long(tmp_path: Path, class_id: str):
    csv = write(tmp_path / "train.csv", LONG_HEADER, "a.jpg,1,1 2", f"b.jpg,{class_id},3 1")
    with pytest.raises(DataError) as info:
        read_labels(csv, None, SHAPE)
    assert str(info.value) == (
        f"{csv}: line 3: ImageId b.jpg: ClassId {class_id!r} is not one of 1, 2, 3, 4"
    )


@pytest.mark.parametrize("class_id", ["0", "5", "x"])
def test_unknown_class_id_wide(tmp_path: Path, class_id: str):
    csv = write(tmp_path / "train.csv", WIDE_HEADER, "a.jpg_1,", f"a.jpg_{class_id},1 1")
    with pytest.raises(DataError, match=f"{csv}: line 3: ImageId a.jpg: ClassId '{class_id}'"):
        read_labels(csv, None, SHAPE)


def test_unknown_class_ids_are_listed_when_collecting(tmp_path: Path):
    csv = write(tmp_path / "train.csv", LONG_HEADER, "a.jpg,7,1 2", "b.jpg,2,3 1", "c.jpg,0,1 1")
    problems: list[str] = []
    frame, _ = read_table(csv, problems)
    assert frame["ImageId"].tolist() == ["b.jpg"]
    assert [p.split(": ClassId")[0] for p in problems] == [
        f"{csv}: line 2: ImageId a.jpg",
        f"{csv}: line 4: ImageId c.jpg",
    ]


@pytest.mark.parametrize(
    "rows, line", [(["a.jpg_1,", "b.jpg,1 1"], 3), (["b.jpg,1 1", "c.jpg,"], 2)]
)
def test_wide_row_without_class_suffix(tmp_path: Path, rows: list[str], line: int):
    csv = write(tmp_path / "train.csv", WIDE_HEADER, *rows)
    with pytest.raises(DataError, match=f"{csv}: line {line}: ImageId_ClassId 'b.jpg' is not of"):
        read_table(csv)


@pytest.mark.parametrize(
    "header, rows, line",
    [
        (LONG_HEADER, ["a.jpg,1,1 2", "b.jpg,3,", "a.jpg,1,5 1"], 4),
        (WIDE_HEADER, ["a.jpg_1,1 2", "a.jpg_2,", "a.jpg_2,"], 4),
    ],
)
def test_duplicate_image_class_row(tmp_path: Path, header: str, rows: list[str], line: int):
    csv = write(tmp_path / "train.csv", header, *rows)
    with pytest.raises(DataError, match=f"{csv}: line {line}: ImageId a.jpg ClassId [12]: dup"):
        read_labels(csv, None, SHAPE)


BAD_RLES = [
    ("1 2 3", "odd number of tokens"),
    ("1 x", "token 2 is not a positive integer: 'x'"),
    ("1.5 2", "token 1 is not a positive integer: '1.5'"),
    ("1 -2", "token 2 is not a positive integer: '-2'"),
    ("1 0", "token 2 is not a positive integer: '0'"),
    ("0 2", "start 0 is below 1"),
    ("11 3", "run 11+3 ends past the image's 12 pixels"),
    ("13 1", "ends past the image's 12 pixels"),
    ("5 1 1 1", "runs not sorted or overlapping"),
    ("1 3 3 1", "runs not sorted or overlapping"),
]


@pytest.mark.parametrize("encoded, reason", BAD_RLES)
def test_bad_rle_long(tmp_path: Path, encoded: str, reason: str):
    csv = write(tmp_path / "train.csv", LONG_HEADER, "a.jpg,1,1 2", f"b.jpg,3,{encoded}")
    with pytest.raises(DataError) as info:
        read_labels(csv, None, SHAPE)
    prefix = f"{csv}: line 3: ImageId b.jpg ClassId 3: bad EncodedPixels: "
    assert str(info.value).startswith(prefix)
    assert reason in str(info.value)


@pytest.mark.parametrize("encoded, reason", BAD_RLES[::3])
def test_bad_rle_wide(tmp_path: Path, encoded: str, reason: str):
    rows = ["a.jpg_1,1 2", "a.jpg_2,", "a.jpg_3,", f"a.jpg_4,{encoded}"]
    csv = write(tmp_path / "train.csv", WIDE_HEADER, *rows)
    with pytest.raises(DataError, match=f"{csv}: line 5: ImageId a.jpg ClassId 4: bad") as info:
        read_labels(csv, None, SHAPE)
    assert reason in str(info.value)


def test_several_problems_report_the_first_and_a_count(tmp_path: Path):
    csv = write(tmp_path / "train.csv", LONG_HEADER, "a.jpg,1,0 1", "a.jpg,1,1 1", "b.jpg,2,1")
    with pytest.raises(DataError) as info:
        read_labels(csv, None, SHAPE)
    message = str(info.value)
    # duplicates are listed before RLE problems
    assert message.startswith(f"{csv}: line 3: ImageId a.jpg ClassId 1: duplicate")
    assert message.endswith("(and 2 more; run sever check-data)")


# ---------------------------------------------------------------- writing


def test_write_labels_wide_lists_every_image_and_class(tmp_path: Path):
    defects = pd.DataFrame(
        {"ImageId": ["b.jpg", "a.jpg"], "ClassId": [2, 4], "EncodedPixels": ["3 1", "1 12"]}
    )
    path = tmp_path / "out.csv"
    write_labels(defects, ["a.jpg", "b.jpg", "c.jpg"], path, "wide")
    assert path.read_text().splitlines() == [
        WIDE_HEADER,
        *["a.jpg_1,", "a.jpg_2,", "a.jpg_3,", "a.jpg_4,1 12"],
        *["b.jpg_1,", "b.jpg_2,3 1", "b.jpg_3,", "b.jpg_4,"],
        *["c.jpg_1,", "c.jpg_2,", "c.jpg_3,", "c.jpg_4,"],
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left


def test_write_labels_long_writes_defect_rows_only(tmp_path: Path):
    defects = pd.DataFrame(
        {"ClassId": [3, 1], "EncodedPixels": ["2 2", "1 1"], "ImageId": ["a.jpg", "a.jpg"]}
    )
    path = tmp_path / "out.csv"
    write_labels(defects, ["a.jpg", "z.jpg"], path, "long")
    assert path.read_text().splitlines() == [LONG_HEADER, "a.jpg,1,1 1", "a.jpg,3,2 2"]


def test_write_labels_rejects_unknown_format(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown CSV format 'tall'"):
        write_labels(
            pd.DataFrame(columns=["ImageId", "ClassId", "EncodedPixels"]),
            [],
            tmp_path / "x.csv",
            "tall",
        )


def _same(a: Labels, b: Labels) -> None:
    assert a.images == b.images
    columns = ["ImageId", "ClassId", "EncodedPixels"]
    pd.testing.assert_frame_equal(a.defects[columns], b.defects[columns])


@pytest.mark.parametrize("fmt_in", ["wide", "long"])
@pytest.mark.parametrize("fmt_out", ["wide", "long"])
def test_write_labels_round_trip(tmp_path: Path, images: Path, fmt_in: str, fmt_out: str):
    if fmt_in == "long":
        csv = write(tmp_path / "in.csv", LONG_HEADER, "b.jpg,2,12 1", "a.jpg,3,5 3", "a.jpg,1,1 2")
    else:
        rows = [f"{i}_{c}," for i in ("a.jpg", "b.jpg", "c.jpg", "d.PNG") for c in range(1, 5)]
        rows[0], rows[2], rows[5] = "a.jpg_1,1 2", "a.jpg_3,5 3", "b.jpg_2,12 1"
        csv = write(tmp_path / "in.csv", WIDE_HEADER, *rows)
    labels = read_labels(csv, images, SHAPE)
    assert labels.images == ["a.jpg", "b.jpg", "c.jpg", "d.PNG"]
    out = tmp_path / "out.csv"
    write_labels(labels.defects, labels.images, out, fmt_out)
    again = read_labels(out, images, SHAPE)
    assert again.format == fmt_out
    _same(labels, again)
    if fmt_out == "wide":
        assert len(out.read_text().splitlines()) == 1 + 4 * 4  # defect-free images included


# ---------------------------------------------------------------- templates


def test_read_image_ids_wide_template(tmp_path: Path):
    rows = [f"{i}_{c},1 1" for i in ("b_2.jpg", "a.jpg") for c in range(1, 5)]
    assert read_image_ids(write(tmp_path / "s.csv", WIDE_HEADER, *rows)) == ["a.jpg", "b_2.jpg"]


def test_read_image_ids_long_template_with_class_zero(tmp_path: Path):
    # the later Kaggle file: one row per image, whole-image RLE, ClassId 0
    csv = write(tmp_path / "s.csv", "ImageId,EncodedPixels,ClassId", "b.jpg,1 12,0", "a.jpg,1 12,0")
    assert read_image_ids(csv) == ["a.jpg", "b.jpg"]


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "file not found"),
        ("ImageId,Pixels\na.jpg,1 1\n", "header ImageId,Pixels is neither"),
        ("", "not a readable CSV"),
    ],
)
def test_read_image_ids_errors(tmp_path: Path, text: str | None, message: str):
    csv = tmp_path / "s.csv"
    if text is not None:
        csv.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_image_ids(csv)
    assert str(info.value).startswith(str(csv))
