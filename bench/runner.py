"""The sever CLI from a benchmark: each command in its own process, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def sever(*args: object) -> str:
    """Run `python -m sever ARGS`; its stdout (stderr shown on failure)."""
    done = subprocess.run(
        [sys.executable, "-m", "sever", *map(str, args)], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"sever {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def train(config: Path, overrides: list[str]) -> tuple[Path, float]:
    """(run directory, seconds) of `sever train -c config -o ...`."""
    started = time.perf_counter()
    out = sever("train", "-c", config, *[a for o in overrides for a in ("-o", o)])
    run = Path(out.strip().splitlines()[-1].removeprefix("run: "))
    return run, time.perf_counter() - started
