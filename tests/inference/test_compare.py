"""sever compare: planted differences, the replayed shake-up, the two picks, and the command
on a tiny trained run (its per-image Dice checked against evaluate's)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sever.errors import ConfigError
from sever.inference.compare import Candidate, compare_candidates, pick_two
from tests.support import cli_output, write_tiny


def candidate(name: str, dice: np.ndarray, ids: list[str] | None = None) -> Candidate:
    ids = ids or [f"{i}.jpg" for i in range(len(dice))]
    dice = np.asarray(dice, np.float64)
    return Candidate(name, ids, dice, np.ones(dice.shape, bool), np.zeros(dice.shape, bool))


def planted(positives: int, images: int, rng: np.random.Generator) -> np.ndarray:
    """Class 3's change from B to A per image: +0.3 on `positives` images, -0.3 on the rest."""
    delta = np.full(images, -0.3)
    delta[:positives] = 0.3
    return rng.permutation(delta)


def shake_up() -> tuple[Candidate, Candidate]:
    """B scores 0.6 on class 3 of every image and 1 elsewhere; A differs on class 3 by +-0.3.
    On the first 150 images ('public') A is ahead on 80: mean +0.3 * 10 / 150 / 4 = +0.005.
    Over all 3,000 it is ahead on 1,350: mean +0.3 * (1350 - 1650) / 3000 / 4 = -0.0075."""
    rng = np.random.default_rng(7)
    delta = np.concatenate([planted(80, 150, rng), planted(1270, 2850, rng)])
    b = np.ones((3000, 4))
    b[:, 2] = 0.6
    a = b.copy()
    a[:, 2] += delta
    return candidate("rms.yml", a), candidate("mean.yml", b)


def test_the_shake_up_replayed_public_noise_private_direction():
    a, b = shake_up()
    public = [candidate(c.name, c.dice[:150]) for c in (a, b)]  # the first 150 images
    small = compare_candidates(public)
    diff = small.difference("rms.yml", "mean.yml").diff["mean"]
    assert diff.value == pytest.approx(0.005)  # the public score prefers rms...
    assert diff.low < 0 < diff.high  # ...within noise
    assert small.differences[0][2].verdict("rms.yml", "mean.yml") == "within noise"
    full = compare_candidates([a, b])
    diff = full.difference("rms.yml", "mean.yml").diff["mean"]
    assert diff.value == pytest.approx(-0.0075)
    assert diff.high < 0
    assert full.differences[0][2].verdict("rms.yml", "mean.yml") == "mean.yml better"
    assert pick_two(full).picks[0].name == "mean.yml"


def test_scores_and_agreement_by_hand():
    # two images, one class: A = (1, 0), B = (1, 1): A's mean 0.5, B's 1; they agree on
    # the first pair only (both >= 0.5), so 50%
    found = compare_candidates([candidate("A", [[1.0], [0.0]]), candidate("B", [[1.0], [1.0]])])
    assert found.scores["A"]["mean"].value == 0.5 and found.scores["B"]["1"].value == 1.0
    assert found.agreement["A", "B"] == 0.5
    assert found.difference("B", "A").diff["mean"].value == 0.5
    assert found.difference("A", "B").p_better["mean"] == pytest.approx(
        1 - found.difference("B", "A").p_better["mean"]
    )
    assert found.empty == 1.0


def test_candidates_are_compared_on_the_images_they_share():
    a = candidate("A", [[1.0], [0.0], [0.5]], ["x", "y", "z"])
    b = candidate("B", [[0.0], [1.0]], ["z", "x"])
    found = compare_candidates([a, b])
    assert found.images == 2 and found.scored_on == {"A": 3, "B": 2}
    # shared x and z: A (1, 0.5), B (1, 0)
    assert found.scores["A"]["mean"].value == 0.75 and found.scores["B"]["mean"].value == 0.5
    with pytest.raises(ConfigError, match=r"share no validation image \(A: 3, C: 1\)"):
        compare_candidates([a, candidate("C", [[1.0]], ["w"])])
    with pytest.raises(ConfigError, match="two candidates or more"):
        compare_candidates([a])


def test_the_second_pick_is_the_most_different_of_those_within_noise():
    rng = np.random.default_rng(0)
    best = rng.uniform(0.5, 1.0, (400, 2))
    twin = best.copy()
    twin[:4] -= 0.01  # a hair worse, within noise, agreeing on every pair
    twin[4:7] += 0.01
    rival = best.copy()
    rival[::2, 0], rival[1::2, 0] = 0.4, 1.0  # flips many pairs' outcome, mean about equal
    rival[:, 0] += best[:, 0].mean() - rival[:, 0].mean() - 0.001
    worse = best - 0.2  # significantly worse
    found = pick_two(
        compare_candidates(
            [
                candidate("twin", twin),
                candidate("best", best),
                candidate("rival", rival),
                candidate("worse", worse),
            ]  # fmt: skip
        )
    )
    assert [p.name for p in found.picks] == ["best", "rival"]
    assert "within noise of best" in found.picks[1].why
    assert "(the least of 2 candidates within noise)" in found.picks[1].why
    only_worse = pick_two(compare_candidates([candidate("best", best), candidate("w", worse)]))
    assert only_worse.picks[1].name == "w"
    assert "every other candidate is significantly worse than best" in only_worse.picks[1].why


@pytest.mark.slow
def test_compare_from_the_command_line(tiny_data: Path, tmp_path: Path, capsys):
    code, out, err = cli_output(
        capsys, "train", "-c", write_tiny(tmp_path, tiny_data), "-o", "trainer.epochs=2"
    )
    assert code == 0, err
    run = out.strip().splitlines()[-1].removeprefix("run: ")
    # thresholds at level midpoints, where the cached counts are exact
    a, b, c = tmp_path / "a.yml", tmp_path / "b.yml", tmp_path / "c.yml"
    a.write_text(f"models: [{{run: {run}}}]\npostprocess: {{threshold: {127.5 / 255}}}\n")
    b.write_text(f"models: [{{run: {run}}}]\npostprocess: {{threshold: {50.5 / 255}}}\n")
    # min_component needs the masks: scored by predicting, min_component 1 changes nothing
    c.write_text(
        f"models: [{{run: {run}}}]\npostprocess: {{threshold: {127.5 / 255}, min_component: 1}}\n"
    )
    page = tmp_path / "report.html"
    code, out, err = cli_output(
        capsys, "compare", "-c", a, "-c", b, "-c", c, "--pick", 2, "--workers", 2, "--json",
        "--html", page,
    )  # fmt: skip
    assert code == 0, err
    found = json.loads(out)
    assert found["images"] == 6 and found["classes"] == 4  # 32 images, val_fraction 0.2
    scores = found["candidates"]
    assert scores[str(a)]["mean"] == pytest.approx(scores[str(c)]["mean"])  # float32 masks
    differences = {(d["a"], d["b"]): d for d in found["differences"]}
    assert differences[str(a), str(c)]["mean"]["value"] == pytest.approx(0, abs=1e-7)
    assert differences[str(a), str(c)]["verdict"] == "within noise"
    assert len(found["picks"]) == 2
    html = page.read_text()
    assert '<h2 id="curves">' in html
    # the leaders' disagreements: a row and a picture (truth, then each) per image
    rows = html.count("<tr><td>") - 4 - 4  # minus the scores' and the shares' rows
    assert html.count("<figure>") == rows
    assert html.count("data:image/png;base64,") == 4 + rows
    # tune takes the same candidate file: its models, TTA and averaging; its post-processing
    # as the start
    code, out, err = cli_output(
        capsys, "tune", "-c", b, "--out", tmp_path / "b-pp.yml", "--workers", 0, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["before"]["dice_mean"] == pytest.approx(scores[str(b)]["mean"]["value"])
    page = tmp_path / "evaluate.html"
    args = ["evaluate", "-c", a, "--workers", 0, "--json", "--html", page]
    code, out, err = cli_output(capsys, *args)
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["dice_mean"] == pytest.approx(scores[str(a)]["mean"]["value"])
    # evaluate's interval is the same bootstrap (same seed, same images, same order)
    assert evaluated["intervals"]["dice_mean"] == pytest.approx(scores[str(a)]["mean"])
    interval = evaluated["intervals"]["dice_3"]
    assert interval["low"] <= evaluated["dice_3"] == interval["value"] <= interval["high"]
    html = page.read_text()  # one candidate: scores, curves (none from masks), shares
    assert '<h2 id="shares">' in html and '<h2 id="differences">' not in html
    assert scores[str(a)]["mean"]["value"] == pytest.approx(evaluated["dice_mean"])
