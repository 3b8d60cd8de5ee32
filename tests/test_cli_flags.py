"""-v/--verbose and --debug before the subcommand or after it, for every command."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sever.cli import cli
from tests.support import cli_output


def run_process(*args: object, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sever", *map(str, args)],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_command_takes_both_flags_once() -> None:
    for name, command in cli.commands.items():
        options = [o for p in command.params for o in p.opts]
        for flag in ("-v", "--verbose", "--debug"):
            assert options.count(flag) == 1, (name, flag)  # and none shadows ours


@pytest.mark.parametrize("where", ["before", "after"])
@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (["config", "-c", "{bad}"], "ConfigError: "),  # raised by the command
        (["check-data", "{tmp}/nowhere"], "SeverError: "),
    ],
)
def test_debug_shows_the_traceback_in_either_place(
    tmp_path: Path, args: list[str], kind: str, where: str
) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\ntrainer:\n  epoks: 3\n")
    words = [a.format(bad=bad, tmp=tmp_path) for a in args]
    plain = run_process(*words, cwd=tmp_path)
    assert plain.returncode != 0 and plain.stderr.startswith("error: ")
    assert plain.stderr.count("\n") == 1
    debug = run_process(
        *(["--debug", *words] if where == "before" else [*words, "--debug"]), cwd=tmp_path
    )
    assert debug.returncode != 0  # the exception escapes: Python's status 1
    assert "Traceback (most recent call last)" in debug.stderr and kind in debug.stderr


def test_debug_after_the_command_covers_the_logging_setup(tmp_path: Path) -> None:
    # logging is set up once the command's own arguments (its --debug too) are parsed
    bad = tmp_path / "bad.yml"
    bad.write_text("name: x\n")
    done = run_process("config", "-c", bad, "--debug", cwd=tmp_path, SEVER_LOGGING=str(tmp_path))
    assert done.returncode != 0
    assert "Traceback (most recent call last)" in done.stderr
    assert f"SEVER_LOGGING={tmp_path}: is a folder" in done.stderr


@pytest.mark.parametrize("where", ["before", "after", "neither"])
def test_verbose_logs_debug_messages_in_either_place(tmp_path: Path, capsys, where: str) -> None:
    path = tmp_path / "x.yml"
    path.write_text("name: x\n")
    args = ["config", "-c", path]
    args = {"before": ["-v", *args], "after": [*args, "-v"], "neither": args}[where]
    code, out, err = cli_output(capsys, *args)
    assert code == 0 and err == "" and out.startswith("name: x\n")
    levels = {h.level for h in logging.getLogger("sever").handlers}
    assert levels == {logging.INFO if where == "neither" else logging.DEBUG}


def test_an_option_value_that_looks_like_a_flag_stays_the_options(tmp_path: Path, capsys) -> None:
    # `-o --debug` is an override (a bad one), not --debug
    path = tmp_path / "x.yml"
    path.write_text("name: x\n")
    code, out, err = cli_output(capsys, "config", "-c", path, "-o", "--debug")
    assert code == 2 and out == ""
    assert err == "error: -o --debug: expected KEY.PATH=VALUE, e.g. -o trainer.epochs=3\n"


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (28, "error: /data/out/x.csv: the disk is full; free some space, or write elsewhere"),
        (30, "error: /data/out/x.csv: the file system is read-only; write elsewhere"),
    ],
)
def test_a_full_disk_no_writer_expected_is_one_line(
    monkeypatch, capsys, tmp_path, number, expected
):
    # ENOSPC (28) and EROFS (30) raised where no writer catches them: the machine's problem,
    # named with its file, not "a bug in sever".
    import sever.data.synth

    def full(*args, **kwargs):
        raise OSError(number, os.strerror(number), "/data/out/x.csv")

    monkeypatch.setattr(sever.data.synth, "generate", full)
    code, out, err = cli_output(capsys, "synth", tmp_path / "new")
    assert code == 1 and out == "" and err.startswith(expected) and err.count("\n") == 1
    assert "bug" not in err


def test_any_other_unexpected_error_is_still_a_bug(monkeypatch, capsys, tmp_path):
    import sever.data.synth

    def broken(*args, **kwargs):
        raise OSError(2, "No such file or directory", "/x")

    monkeypatch.setattr(sever.data.synth, "generate", broken)
    code, _, err = cli_output(capsys, "synth", tmp_path / "new")
    assert code == 1 and "this is a bug in sever" in err and err.count("\n") == 1
