"""Every subcommand's arguments say what they are, and `train --help` shows runnable examples."""

from __future__ import annotations

import argparse
import importlib
import re

import pytest

from distgem.cli import COMMANDS, main
from tests.support import ROOT


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_argument_has_a_help_string(command):
    parser = argparse.ArgumentParser()
    importlib.import_module(COMMANDS[command][0]).add_arguments(parser)
    silent = [a.dest for a in parser._actions if a.help is None]
    assert not silent, f"distgem {command}: arguments without help: {silent}"


def test_train_help_shows_examples_whose_files_exist(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "exit codes:" in text
    configs = re.findall(r"--config (configs/\S+\.yaml)", text)
    assert len(configs) >= 5 and all((ROOT / c).is_file() for c in configs), configs


def test_output_cut_short_by_its_reader_is_no_error():
    """`distgem sweep list GRID | head`: the reader is gone before distgem prints; no traceback, exit 0."""
    import os
    import subprocess
    import sys

    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "distgem.cli", "sweep", "list", str(ROOT / "configs" / "sweep_paper.yaml")],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
    finally:
        os.close(write)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "Broken pipe" not in proc.stderr, proc.stderr
