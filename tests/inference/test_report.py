"""sever compare's HTML report: its sections from planted candidates, and the page as a real
browser (headless Chromium) renders it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from sever.inference.compare import (
    CURVE_THRESHOLDS,
    Candidate,
    compare_candidates,
    pick_two,
)
from sever.inference.report import SECTIONS, render, single, write_html
from sever.inference.search import MIN_PIXELS_GRID


def planted() -> list[Candidate]:
    """Two candidates on 40 images of 2 classes: B misses class 2 on images 0 and 1."""
    ids = [f"{i:02d}.jpg" for i in range(40)]
    empty = np.ones((40, 2), bool)
    empty[:10, 1] = False  # images 0-9 have class 2
    dice_a = np.ones((40, 2))
    dice_b = dice_a.copy()
    dice_b[:2, 1] = 0.0
    predicted_a = ~empty
    predicted_b = predicted_a.copy()
    predicted_b[:2, 1] = False
    curve = (
        np.tile(np.linspace(0.2, 0.9, len(CURVE_THRESHOLDS)), (2, 1)),
        np.tile(np.linspace(0.9, 0.5, len(MIN_PIXELS_GRID)), (2, 1)),
    )
    return [
        Candidate("a<&>.yml", ids, dice_a, empty, predicted_a, curve),
        Candidate("b.yml", ids, dice_b, empty, predicted_b, None),
    ]


def test_the_page_has_every_section_and_the_numbers():
    page = render(pick_two(compare_candidates(planted())))
    for key in SECTIONS:
        assert f'<h2 id="{key}">' in page
    assert "a&lt;&amp;&gt;.yml" in page and "a<&>" not in page  # names are escaped
    assert "1.0000 [1.0000, 1.0000]" in page  # a's mean Dice, no spread at all
    assert "<td>25.0%</td>" in page  # class 2's true share: 10 of 40 images
    assert "<td>20.0%</td>" in page  # b predicts it on 8
    # the leaders disagree on images 00 and 01 only, in class 2
    rows = re.findall(r"<tr><td>(\d\d\.jpg)</td><td>([^<]*)</td>", page)
    assert rows == [("00.jpg", "2"), ("01.jpg", "2")]
    assert page.count("data:image/png;base64,") == 4  # scores, differences, curves, shares


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:  # make test installs it where it can (make browser)
        pytest.skip("no chromium: apt-get install chromium to render the report")
    return found


def test_a_browser_renders_the_report(tmp_path: Path):
    page = write_html(pick_two(compare_candidates(planted())), tmp_path / "report.html")
    chromium = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    url = page.resolve().as_uri()
    dom = subprocess.run(
        [*chromium, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    for key in SECTIONS:
        assert f'id="{key}"' in dom.stdout
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [*chromium, f"--screenshot={shot}", "--window-size=1200,2600", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    image = cv2.imread(str(shot))
    assert image.shape[:2] == (2600, 1200)
    # the embedded plots decoded and drew: matplotlib's first colour (tab:blue, BGR 180,
    # 119, 31) covers bars and points; a page of text alone has none of it
    blue = np.all(np.abs(image.astype(int) - (180, 119, 31)) < 12, axis=2)
    assert blue.sum() > 2000


def test_the_report_path_is_checked_before_any_work(tmp_path: Path, capsys):
    from tests.support import cli_output

    (tmp_path / "report.html").mkdir()
    args = ["compare", "-c", "nowhere-a.yml", "-c", "nowhere-b.yml"]
    code, _, err = cli_output(capsys, *args, "--html", tmp_path / "report.html")
    assert code == 2 and err.startswith(f"error: --html {tmp_path / 'report.html'}: is a folder")


def test_one_candidate_has_its_own_page():
    page = render(single(planted()[1]))
    assert "sever evaluate: b.yml on 40 images" in page
    assert '<h2 id="picks">' not in page and '<h2 id="differences">' not in page
    assert "0.9750 [" in page  # (38 + 2 * 0.5) / 40 images: class 2 missed on two
    assert "No curves" in page and "<td>20.0%</td>" in page


def test_a_disagreement_picture_stacks_the_truth_and_each_candidate():
    from sever.inference.overlays import picture

    image = np.full((64, 256), 90, np.uint8)
    masks = np.zeros((4, 64, 256), bool)
    masks[2, 10:20, 30:60] = True
    png = picture(image, [masks, masks, np.zeros_like(masks)])
    shown = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert shown.shape[:2] == ((3 * 64 + 2 * 4) // 2, 128)  # three rows and two gaps, halved
    top, bottom = shown[:32], shown[-32:]
    assert (top != top[0, 0]).any() and (bottom == bottom[0, 0]).all()  # tinted, then plain


def test_the_truth_of_a_disagreement_comes_from_the_labels(tiny_data: Path):
    import pandas as pd

    from sever.data import rle
    from sever.inference.overlays import true_masks

    labels = pd.read_csv(tiny_data / "train.csv")
    row = labels.iloc[0]
    found = true_masks(tiny_data / "train_images", [row["ImageId"]], 4)[row["ImageId"]]
    expected = rle.decode(row["EncodedPixels"], 64, 256) > 0
    assert (found[row["ClassId"] - 1] == expected).all() and found.shape == (4, 64, 256)
