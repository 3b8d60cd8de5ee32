"""The sever CLI from a benchmark: each command in its own process, as a user runs it."""

from __future__ import annotations

import subprocess
import sys


def sever(*args: object) -> str:
    """Run `python -m sever ARGS`; its stdout (stderr shown on failure)."""
    done = subprocess.run(
        [sys.executable, "-m", "sever", *map(str, args)], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"sever {' '.join(map(str, args))} failed:\n{done.stderr[-3000:]}")
    return done.stdout
