"""Console and per-run file logging from logging.yml."""

from __future__ import annotations

import logging
import logging.config
import os
from pathlib import Path

import yaml

PACKAGED = Path(__file__).with_name("logging.yml")
_file_format: dict = {}


def setup_logging(verbose: bool = False) -> None:
    """Configure logging from $SEVER_LOGGING, ./logging.yml, or the packaged default."""
    candidates = [os.environ.get("SEVER_LOGGING"), "logging.yml", PACKAGED]
    path = next(Path(p) for p in candidates if p and Path(p).is_file())
    config = yaml.safe_load(path.read_text())
    logging.config.dictConfig(config)
    _file_format.update(config.get("formatters", {}).get("detailed", {}))
    if verbose:
        for handler in logging.getLogger("sever").handlers:
            handler.setLevel(logging.DEBUG)


def add_file_log(path: Path) -> logging.Handler:
    """Also log everything from sever into `path` (the run's log file); returns the handler."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(_file_format.get("format"), _file_format.get("datefmt")))
    handler.setLevel(logging.DEBUG)
    logging.getLogger("sever").addHandler(handler)
    return handler


def remove_handler(handler: logging.Handler) -> None:
    logging.getLogger("sever").removeHandler(handler)
    handler.close()
