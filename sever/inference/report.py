"""`sever compare --html`: one self-contained page to look at before choosing.

Sections (each an `<h2 id=...>`): the picks, the scores with their intervals per class, the
pairwise differences, the threshold and minimum-size curves from tune's counts, the
predicted against the true share of images with each class, and the images on which the
two leading candidates disagree most. Plots are matplotlib PNGs embedded in the page, so
it opens anywhere, offline.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from sever.fileio import atomic_path, writing
from sever.inference.bootstrap import RESAMPLES, score_intervals
from sever.inference.compare import (
    CURVE_THRESHOLDS,
    Candidate,
    Comparison,
    disagreeing,
    leaders,
)
from sever.inference.search import MIN_PIXELS_GRID

SECTIONS = ("picks", "scores", "differences", "curves", "shares", "disagreements")
DISAGREEMENTS = 12  # images listed


def write_html(comparison: Comparison, path: Path) -> Path:
    """Write the report atomically; returns `path`.

    Raises:
        WriteError: it cannot be written (a full disk); an earlier file is kept.
    """
    with writing(path, "HTML report"), atomic_path(path) as tmp:
        tmp.write_text(render(comparison), encoding="utf-8")
    return path


def render(comparison: Comparison) -> str:
    """The page; with one candidate (evaluate --html) its scores, curves and shares."""
    several = len(comparison.names) > 1
    parts = [
        section("scores", "Scores with 95% intervals", scores_html(comparison)),
        section("curves", "Threshold and minimum-size curves", curves_html(comparison)),
        section("shares", "Images with each class: predicted and true", shares_html(comparison)),
    ]
    if several:
        parts[1:1] = [
            section("differences", "Pairwise differences", figure(differences_plot(comparison)))
        ]
        parts[:0] = [section("picks", "The picks", picks_html(comparison))]
        parts.append(
            section("disagreements", "Where the leaders disagree", disagreements_html(comparison))
        )
        title = f"sever compare: {len(comparison.names)} candidates on {comparison.images} images"
    else:
        title = f"sever evaluate: {comparison.names[0]} on {comparison.images} images"
    return PAGE.format(title=html.escape(title), body="\n".join(parts))


def single(candidate: Candidate) -> Comparison:
    """One candidate as a comparison of one, for its page."""
    return Comparison(
        [candidate.name],
        len(candidate.ids),
        candidate.dice.shape[1],
        RESAMPLES,
        {candidate.name: score_intervals(candidate.dice)},
        float(candidate.empty.mean()),
        [],
        {},
        {candidate.name: len(candidate.ids)},
        aligned=(candidate,),
    )


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head>
<body><h1>{title}</h1>
{body}
</body></html>
"""


def section(key: str, title: str, body: str) -> str:
    return f'<section><h2 id="{key}">{html.escape(title)}</h2>\n{body}\n</section>'


def table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def figure(fig: Any) -> str:
    """A matplotlib figure as an embedded PNG; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def picks_html(comparison: Comparison) -> str:
    if not comparison.picks:
        return "<p>No picks asked for (<code>--pick 2</code> proposes two).</p>"
    items = "".join(
        f"<li><b>{html.escape(p.name)}</b>: {html.escape(p.why)}</li>" for p in comparison.picks
    )
    return f"<ol>{items}</ol>"


def scores_html(comparison: Comparison) -> str:
    keys = ["mean", *(str(c) for c in range(1, comparison.classes + 1))]
    rows = [[name, *(comparison.scores[name][k].text() for k in keys)] for name in comparison.names]
    rows.append(["all empty", f"{comparison.empty:.4f}", *([""] * comparison.classes)])
    head = ["candidate", "mean Dice", *(f"class {k}" for k in keys[1:])]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3.5))
    width = 0.8 / len(comparison.names)
    for i, name in enumerate(comparison.names):
        scores = [comparison.scores[name][k] for k in keys]
        values = np.array([s.value for s in scores])
        errors = np.array([[s.value - s.low for s in scores], [s.high - s.value for s in scores]])
        x = np.arange(len(keys)) + (i - (len(comparison.names) - 1) / 2) * width
        ax.bar(x, values, width, yerr=errors, capsize=3, label=name)
    ax.set_xticks(np.arange(len(keys)), ["mean", *(f"class {k}" for k in keys[1:])])
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    return table(head, rows) + figure(fig)


def differences_plot(comparison: Comparison) -> Any:
    plt = pyplot()
    pairs = comparison.differences
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(pairs)))
    for row, (_, _, d) in enumerate(pairs):
        i = d.diff["mean"]
        ax.plot([i.low, i.high], [row, row], color="tab:blue")
        ax.plot([i.value], [row], "o", color="tab:blue")
    ax.axvline(0, color="grey", linestyle="--")
    ax.set_yticks(range(len(pairs)), [f"{a} - {b}" for a, b, _ in pairs])
    ax.set_xlabel("difference of mean Dice (95% interval); the dashed line is no difference")
    return fig


def curves_html(comparison: Comparison) -> str:
    drawn = [c for c in comparison.aligned if c.curves is not None]
    if not drawn:
        return (
            "<p>No curves: they come from tune's counts (sever compare), and these scores "
            "come from masks.</p>"
        )
    plt = pyplot()
    classes = comparison.classes
    fig, axes = plt.subplots(2, classes, figsize=(3 * classes, 5.5), squeeze=False)
    for candidate in drawn:
        assert candidate.curves is not None
        by_threshold, by_size = candidate.curves
        for c in range(classes):
            axes[0, c].plot(CURVE_THRESHOLDS, by_threshold[c], label=candidate.name)
            axes[1, c].plot(MIN_PIXELS_GRID, by_size[c], label=candidate.name)
    for c in range(classes):
        axes[0, c].set_title(f"class {c + 1}")
        axes[0, c].set_xlabel("threshold")
        axes[1, c].set_xlabel("minimum size (pixels)")
    axes[0, 0].set_ylabel("mean Dice")
    axes[1, 0].set_ylabel("mean Dice")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    note = (
        "<p>Each class's mean Dice as one setting moves and the others stay as the "
        "candidate has them, from the counts tune keeps.</p>"
    )
    return note + figure(fig)


def shares_html(comparison: Comparison) -> str:
    first = comparison.aligned[0]
    truth = 1 - first.empty.mean(axis=0)
    rows = [["truth", *(f"{v:.1%}" for v in truth)]]
    rows += [[c.name, *(f"{v:.1%}" for v in c.predicted.mean(axis=0))] for c in comparison.aligned]
    head = ["", *(f"class {c}" for c in range(1, comparison.classes + 1))]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3))
    series = [("truth", truth), *((c.name, c.predicted.mean(axis=0)) for c in comparison.aligned)]
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series):
        x = np.arange(comparison.classes) + (i - (len(series) - 1) / 2) * width
        ax.bar(x, values, width, label=name)
    ax.set_xticks(range(comparison.classes), [f"class {c + 1}" for c in range(comparison.classes)])
    ax.set_ylabel("share of images")
    ax.legend(fontsize=8)
    return table(head, rows) + figure(fig)


def disagreements_html(comparison: Comparison) -> str:
    a, b = leaders(comparison)
    order = disagreeing(comparison, DISAGREEMENTS)
    if not order:
        return f"<p>{html.escape(a.name)} and {html.escape(b.name)} agree on every image.</p>"
    rows = []
    for i in order:
        truth = ",".join(str(c + 1) for c in np.flatnonzero(~a.empty[i])) or "none"
        rows.append(
            [
                a.ids[i],
                truth,
                " ".join(f"{v:.2f}" for v in a.dice[i]),
                " ".join(f"{v:.2f}" for v in b.dice[i]),
            ]
        )
    head = ["image", "true classes", f"{a.name}: Dice per class", f"{b.name}: Dice per class"]
    pictures = [
        f"<figure><figcaption>{html.escape(image_id)}: truth, {html.escape(a.name)}, "
        f"{html.escape(b.name)}</figcaption>"
        f'<img alt="{html.escape(image_id)}" src="data:image/png;base64,'
        f'{base64.b64encode(png).decode()}"></figure>'
        for image_id, png in comparison.overlays.items()
    ]
    return table(head, rows) + "".join(pictures)
