"""Progress of long work, shown where users run it.

On a terminal, a tqdm bar on stderr. Anywhere else (a Kaggle notebook's `!` cell, a job
log, a pipe) a bar cannot redraw, so a plain line goes to the log (stderr) every
SEVER_PROGRESS_INTERVAL seconds (default 30): done / total, percent, rate and time left,
then one line when the work ends. Every long loop in sever (train, validate, predict, tune,
evaluate, pseudo-label, upload, download) goes through `Tracker`.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from tqdm import tqdm

from sever.errors import ConfigError

log = logging.getLogger("sever.progress")

INTERVAL_ENV = "SEVER_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0


def interval_from_env() -> float:
    """Seconds between plain progress lines: $SEVER_PROGRESS_INTERVAL, else 30."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ConfigError(
            f"{INTERVAL_ENV}={raw}: expected seconds between progress lines (a number >= 0, "
            f"default {DEFAULT_INTERVAL:g})"
        )
    return seconds


def on_terminal() -> bool:
    return sys.stderr.isatty()


def route() -> str | None:
    """Where plain lines go: 'log' (sever's logging, to stderr and a run's log file),
    'stderr' when sever's logging is not set up (its Python API in a notebook), or None
    where sever's messages are turned down (DDP ranks other than 0)."""
    sever = logging.getLogger("sever")
    if sever.level == logging.NOTSET and not sever.handlers:
        return "stderr"
    return "log" if log.isEnabledFor(logging.INFO) else None


def duration(seconds: float) -> str:
    """'45s', '3m05s', '2h07m'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


BYTE_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1, "B"))


def byte_unit(size: float) -> tuple[float, str]:
    """The unit that shows `size` bytes with a few digits: (bytes per unit, name)."""
    return next((scale, name) for scale, name in BYTE_UNITS if size >= scale or scale == 1)


class Tracker:
    """Counts work done towards a total and shows it: tqdm on a terminal, else log lines.

    Use as a context manager and call `update(n)`, or give `iterable` and iterate (one
    update per item). Plain lines look like
    `predict: 120/400 images (30%), 4.1 images/s, 1m08s left` (with `set_postfix`
    values appended), and at the end `predict: 400 images in 1m37s (4.1 images/s)`.

    Args:
        total: the amount of work (None when unknown).
        desc: what is being done, the start of every line.
        unit: what is counted ('images', 'batches'); 'B' counts bytes, shown in kB, MB or GB.
        iterable: iterate over this, one update per item.
        initial: work already done (a resumed download).
        leave: keep the bar and log the closing line (off for the per-epoch loops, whose
            summary the trainer prints).
        interval: seconds between plain lines (default: $SEVER_PROGRESS_INTERVAL or 30).
        terminal: draw a bar (default: stderr is a terminal).
    """

    def __init__(
        self,
        total: float | None,
        desc: str,
        unit: str = "it",
        *,
        iterable: Iterable | None = None,
        initial: float = 0,
        leave: bool = True,
        interval: float | None = None,
        terminal: bool | None = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.iterable, self.leave = iterable, leave
        self.done = self.initial = initial
        self.interval = interval_from_env() if interval is None else interval
        # Where sever's messages are off (other DDP ranks), so is progress.
        self.route = route()
        self.shown = self.route is not None
        self.terminal = self.shown and (on_terminal() if terminal is None else terminal)
        self.postfix: dict[str, Any] = {}
        self.start = self.last = time.monotonic()
        self.closed = False
        self.bar = None
        if self.terminal:
            scaled = unit == "B"
            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                unit_scale=scaled,
                unit_divisor=1024 if scaled else 1000,
                leave=leave,
                dynamic_ncols=True,
                file=sys.stderr,
            )

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self.close(finished=kind is None)

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("Tracker: give `iterable` to iterate")
        for item in self.iterable:
            yield item
            self.update()
        self.close()

    def update(self, n: float = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.shown and now - self.last >= self.interval:
            self.last = now
            self.emit(self.line(now))

    def set_postfix(self, **values: Any) -> None:
        """Values shown after the count (a loss, say): on the bar and in the plain lines."""
        self.postfix = values
        if self.bar is not None:
            self.bar.set_postfix(**values)

    def amount(self, n: float, of: float | None = None) -> str:
        """`n` in the unit: bytes in kB, MB or GB (chosen by `of`, default `n`), with the
        unit's name; other units as counted, without it."""
        if self.unit != "B":
            return f"{n:g}"
        scale, name = byte_unit(n if of is None else of)
        return f"{n / scale:.1f} {name}"

    def count(self) -> str:
        """'120/400 images (30%)', '12.0/57.0 MB (21%)', or without a total '120 images'."""
        if self.unit == "B":
            of = self.total or self.done
            if not self.total:
                return self.amount(self.done, of)
            done, total = self.amount(self.done, of).split()[0], self.amount(self.total, of)
            return f"{done}/{total} ({100 * self.done / self.total:.0f}%)"
        if not self.total:
            return f"{self.amount(self.done)} {self.unit}"
        return f"{self.amount(self.done)}/{self.amount(self.total)} {self.unit} " + (
            f"({100 * self.done / self.total:.0f}%)"
        )

    def speed(self, now: float) -> str:
        elapsed = now - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        if self.unit == "B":
            return f"{self.amount(rate)}/s"
        digits = 2 if rate < 10 else 1 if rate < 100 else 0
        return f"{rate:.{digits}f} {self.unit}/s"

    def line(self, now: float) -> str:
        """`desc: done/total unit (p%), rate unit/s, time left[, postfix]`."""
        parts = [self.count(), self.speed(now)]
        elapsed = now - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        if self.total and rate > 0:
            parts.append(f"{duration((self.total - self.done) / rate)} left")
        parts += [f"{k} {v}" for k, v in self.postfix.items()]
        return f"{self.desc}: " + ", ".join(parts)

    def close(self, finished: bool = True) -> None:
        """Close the bar; off a terminal, log the closing line (when the work finished)."""
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
            return
        if self.shown and self.leave and finished:
            now = time.monotonic()
            done = self.amount(self.done) + ("" if self.unit == "B" else f" {self.unit}")
            self.emit(f"{self.desc}: {done} in {duration(now - self.start)} ({self.speed(now)})")

    def emit(self, line: str) -> None:
        if self.route == "log":
            log.info(line)
        else:
            print(line, file=sys.stderr, flush=True)


@contextmanager
def tqdm_replaced(module: ModuleType, describe: Callable[[], str]) -> Iterator[None]:
    """Route a library's `tqdm` (the name its module imported) through `Tracker`.

    For the kaggle client, which draws byte bars for uploads and downloads: with this they
    also show as plain lines off a terminal. `describe()` names the work as each bar starts.
    """
    original = module.tqdm

    def factory(*args: Any, **kwargs: Any) -> Tracker:
        return Tracker(
            kwargs.get("total"),
            kwargs.get("desc") or describe(),
            kwargs.get("unit", "it"),
            iterable=args[0] if args else kwargs.get("iterable"),
            initial=kwargs.get("initial") or 0,
        )

    module.tqdm = factory  # type: ignore[attr-defined]
    try:
        yield
    finally:
        module.tqdm = original  # type: ignore[attr-defined]
