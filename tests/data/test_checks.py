"""check-data on a tiny synthetic dataset: clean, then one planted problem at a time."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from sever.data import checks
from sever.data.checks import check_dataset
from sever.data.synth import generate

H, W = 64, 256
N_TRAIN, N_TEST = 24, 4


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """A pristine dataset per format, with the generator's summary; copy before changing."""
    datasets = {}
    for fmt in ("long", "wide"):
        out = tmp_path_factory.mktemp(fmt) / "data"
        datasets[fmt] = out, generate(out, N_TRAIN, N_TEST, H, W, fmt, seed=0)
    return datasets


@pytest.fixture
def fresh(generated, tmp_path: Path) -> Callable[[str], Path]:
    def copy(fmt: str) -> Path:
        return Path(shutil.copytree(generated[fmt][0], tmp_path / fmt))

    return copy


@pytest.mark.parametrize("fmt", ["long", "wide"])
def test_clean_dataset(generated, fmt: str):
    data, made = generated[fmt]
    report = check_dataset(data)
    assert report.ok and report.problems == []
    summary = report.summary
    assert summary["format"] == fmt
    assert summary["image size"] == f"{H}x{W}"
    assert summary["images"] == made["train_images"] == N_TRAIN
    assert summary["defect-free images"] == made["defect_free"]
    assert summary["multi-class images"] == made["multi_class"]
    for class_id, count in made["images_per_class"].items():
        assert summary[f"class {class_id} images"] == count
        assert (summary[f"class {class_id} pixels"] > 0) == (count > 0)
    assert summary["test images"] == made["test_images"] == N_TEST


def test_pixel_counts_are_the_decoded_mask_areas(generated):
    data, _ = generated["long"]
    total = {c: 0 for c in range(1, 5)}
    for line in (data / "train.csv").read_text().splitlines()[1:]:
        _, class_id, encoded = line.split(",")
        total[int(class_id)] += sum(int(n) for n in encoded.split()[1::2])
    summary = check_dataset(data, full=False).summary
    assert {c: summary[f"class {c} pixels"] for c in total} == total


# ---------------------------------------------------------------- planted problems


def lines(data: Path) -> list[str]:
    return (data / "train.csv").read_text().splitlines()


def set_lines(data: Path, rows: list[str]) -> None:
    (data / "train.csv").write_text("\n".join(rows) + "\n")


def first_defect(data: Path) -> tuple[int, str, int]:
    """(line number, ImageId, ClassId) of the first row with a defect."""
    for number, row in enumerate(lines(data)[1:], start=2):
        fields = row.split(",")
        if fields[-1]:
            if len(fields) == 2:  # wide: <image>_<class>,<rle>
                image, class_id = fields[0].rsplit("_", 1)
            else:
                image, class_id = fields[0], fields[1]
            return number, image, int(class_id)
    raise AssertionError("the generated dataset has no defects")


def replace_rle(data: Path, line: int, encoded: str) -> None:
    rows = lines(data)
    rows[line - 1] = rows[line - 1].rsplit(",", 1)[0] + "," + encoded
    set_lines(data, rows)


def missing_image(data: Path) -> str:
    _, image, _ = first_defect(data)
    (data / "train_images" / image).unlink()
    # the image's first row is the one named
    line = next(n for n, row in enumerate(lines(data)[1:], 2) if row.startswith(image))
    csv, folder = data / "train.csv", data / "train_images"
    return re.escape(f"{csv}: line {line}: ImageId {image}: no such file in {folder}")


def extra_image(data: Path) -> str:
    folder = data / "train_images"
    shutil.copy(next(folder.iterdir()), folder / "000000000.jpg")
    return f"{folder / '000000000.jpg'}: extra image with no rows in {data / 'train.csv'}"


def middle_image(data: Path) -> Path:
    return sorted((data / "train_images").iterdir())[N_TRAIN // 2]


def garbage_image(data: Path) -> str:
    path = middle_image(data)
    path.write_bytes(b"this is not a JPEG at all" * 10)
    return re.escape(f"{path}: not a readable image")


def truncated_image(data: Path) -> str:
    path = middle_image(data)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    # libjpeg either refuses it or pads it with grey; both must be reported
    return re.escape(f"{path}: ") + "(not a readable image|truncated JPEG.*)"


def wrong_size(data: Path) -> str:
    path = middle_image(data)
    cv2.imwrite(str(path), np.full((H // 2, W), 90, np.uint8))
    return re.escape(f"{path}: size {H // 2}x{W}, expected {H}x{W} like the others")


def unsorted_rle(data: Path) -> str:
    line, image, class_id = first_defect(data)
    replace_rle(data, line, "5 3 1 1")
    return (
        re.escape(
            f"{data / 'train.csv'}: line {line}: ImageId {image} ClassId {class_id}: "
            "bad EncodedPixels: runs not sorted or overlapping: "
        )
        + ".*"
    )


def rle_past_the_image(data: Path) -> str:
    line, image, class_id = first_defect(data)
    replace_rle(data, line, f"1 1 {H * W} 2")  # the size comes from the images
    return re.escape(
        f"{data / 'train.csv'}: line {line}: ImageId {image} ClassId {class_id}: bad "
        f"EncodedPixels: run {H * W}+2 ends past the image's {H * W} pixels (pair 2)"
    )


def duplicate_row(data: Path) -> str:
    line, image, class_id = first_defect(data)
    rows = lines(data)
    set_lines(data, [*rows, rows[line - 1]])
    return re.escape(
        f"{data / 'train.csv'}: line {len(rows) + 1}: ImageId {image} ClassId {class_id}: "
        "duplicate (image, class) row"
    )


def unknown_class(data: Path) -> str:
    line, image, class_id = first_defect(data)
    rows = lines(data)
    wide = rows[0].count(",") == 1
    old, new = (f"_{class_id},", "_5,") if wide else (f",{class_id},", ",5,")
    rows[line - 1] = rows[line - 1].replace(old, new, 1)
    set_lines(data, rows)
    return re.escape(
        f"{data / 'train.csv'}: line {line}: ImageId {image}: ClassId '5' is not one of 1, 2, 3, 4"
    )


def bad_header(data: Path) -> str:
    rows = lines(data)
    rows[0] = "ImageId,Class,EncodedPixels" if rows[0].count(",") == 2 else "Image,EncodedPixels"
    set_lines(data, rows)
    return re.escape(f"{data / 'train.csv'}: header {rows[0]} is neither the wide format ") + ".*"


def missing_train_csv(data: Path) -> str:
    (data / "train.csv").unlink()
    return re.escape(f"{data / 'train.csv'}: file not found")


def unlisted_test_image(data: Path) -> str:
    folder = data / "test_images"
    shutil.copy(next(folder.iterdir()), folder / "fffffffff.jpg")
    return re.escape(f"{folder / 'fffffffff.jpg'}: not listed in {data / 'sample_submission.csv'}")


def missing_test_image(data: Path) -> str:
    path = sorted((data / "test_images").iterdir())[0]
    path.unlink()
    return re.escape(
        f"{data / 'sample_submission.csv'}: ImageId {path.name}: no such file in {path.parent}"
    )


PLANTS = [
    missing_image,
    garbage_image,
    truncated_image,
    wrong_size,
    unsorted_rle,
    rle_past_the_image,
    duplicate_row,
    unknown_class,
    bad_header,
    missing_train_csv,
    unlisted_test_image,
    missing_test_image,
]


@pytest.mark.parametrize("fmt", ["long", "wide"])
@pytest.mark.parametrize("plant", PLANTS, ids=lambda f: f.__name__)
def test_planted_problem_is_reported(fresh, fmt: str, plant: Callable[[Path], str]):
    data = fresh(fmt)
    expected = plant(data)
    report = check_dataset(data)
    assert not report.ok
    assert len(report.problems) == 1, report.problems
    assert re.fullmatch(expected, report.problems[0]), report.problems[0]


def test_extra_image_is_a_problem_in_the_wide_format(fresh):
    data = fresh("wide")
    expected = extra_image(data)
    assert check_dataset(data).problems == [expected]


def test_extra_image_is_a_defect_free_image_in_the_long_format(fresh, generated):
    data = fresh("long")
    extra_image(data)
    report = check_dataset(data)
    assert report.ok, report.problems
    made = generated["long"][1]
    assert report.summary["images"] == N_TRAIN + 1
    assert report.summary["defect-free images"] == made["defect_free"] + 1


def test_every_problem_is_listed(fresh):
    data = fresh("long")
    planted = [missing_image, garbage_image, duplicate_row, unlisted_test_image]
    expected = [plant(data) for plant in planted]
    problems = check_dataset(data).problems
    assert len(problems) == len(planted)
    for pattern in expected:
        assert any(re.fullmatch(pattern, p) for p in problems), (pattern, problems)


def test_problems_are_listed_in_the_order_of_the_files(fresh):
    """train.csv by line, train_images/ by name, then sample_submission.csv and
    test_images/ by name; found in another order (CSV rows first, a bad image's decoding
    before another's size)."""
    data = fresh("long")
    csv, folder = data / "train.csv", data / "train_images"
    sample, tests = data / "sample_submission.csv", data / "test_images"
    rows = lines(data)  # long: one row per defect, line 2 on
    image = [row.split(",")[0] for row in rows]  # image[k - 1]: the image of line k
    class_id = [row.split(",")[1] for row in rows]
    assert image[4] not in image[:4] and len(rows) == 14
    (folder / image[4]).unlink()  # line 5's image is missing
    rows[9] = f"{image[9]},5,{rows[9].split(',')[2]}"  # line 10: a bad ClassId
    rows[12] = rows[12].rsplit(",", 1)[0] + ",5 3 1 1"  # line 13: a bad RLE
    set_lines(data, [*rows, rows[2]])  # line 15: line 3 again
    names = sorted(p.name for p in folder.iterdir())
    small, garbage = names[3], names[5]  # found: the garbage first, then the size
    assert {small, garbage}.isdisjoint(image)
    cv2.imwrite(str(folder / small), np.full((H // 2, W), 90, np.uint8))
    (folder / garbage).write_bytes(b"this is not a JPEG at all" * 10)
    first_test = sorted(tests.iterdir())[0]
    shutil.copy(first_test, tests / "fffffffff.jpg")
    first_test.unlink()
    expected = [
        f"{csv}: line 5: ImageId {image[4]}: no such file in {folder}",
        f"{csv}: line 10: ImageId {image[9]}: ClassId '5' is not one of 1, 2, 3, 4",
        f"{csv}: line 13: ImageId {image[12]} ClassId {class_id[12]}: bad EncodedPixels: "
        "runs not sorted",
        f"{csv}: line 15: ImageId {image[2]} ClassId {class_id[2]}: duplicate (image, class) row",
        f"{folder / small}: size {H // 2}x{W}, expected {H}x{W} like the others",
        f"{folder / garbage}: not a readable image",
        f"{sample}: ImageId {first_test.name}: no such file in {tests}",
        f"{tests / 'fffffffff.jpg'}: not listed in {sample}",
    ]
    problems = check_dataset(data).problems
    assert len(problems) == len(expected), problems
    for problem, start in zip(problems, expected, strict=True):
        assert problem.startswith(start), (problem, start)


def test_a_problem_of_a_whole_folder_comes_first(fresh):
    data = fresh("long")
    folder = data / "train_images"
    for path in folder.iterdir():
        path.unlink()
    problems = check_dataset(data).problems
    assert problems[0] == f"{folder}: no images (.jpg, .jpeg, .png) in this folder"
    numbers = [int(p.split(": line ")[1].split(":")[0]) for p in problems[1:]]
    assert numbers == sorted(numbers) and len(numbers) >= 2  # then every row's missing file


# ---------------------------------------------------------------- fast mode


@pytest.fixture
def count_reads(monkeypatch) -> list[str]:
    read = []
    real = checks.read_gray

    def counting(path):
        read.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(checks, "read_gray", counting)
    return read


def test_full_mode_decodes_every_image(generated, count_reads):
    assert check_dataset(generated["long"][0], full=True).ok
    assert len(count_reads) == N_TRAIN + N_TEST


def test_fast_mode_reads_one_image_for_the_size(generated, count_reads):
    report = check_dataset(generated["long"][0], full=False)
    assert report.ok and report.summary["image size"] == f"{H}x{W}"
    assert len(count_reads) == 1


def test_fast_mode_still_checks_tables_and_file_lists(fresh):
    data = fresh("wide")
    expected = [missing_image(data), garbage_image(data)]
    fast = check_dataset(data, full=False).problems
    assert len(fast) == 1 and re.fullmatch(expected[0], fast[0])  # the broken JPEG is not read
    full = check_dataset(data, full=True).problems
    assert len(full) == 2 and re.fullmatch(expected[1], full[1])  # train.csv's first
