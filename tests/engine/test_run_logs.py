"""The console log cooperates with the progress bar; --log-level applies to console and train.log."""
from __future__ import annotations

import io
import logging
import sys

from tqdm import tqdm

from ssdfast.engine.run_logs import close_logger, setup_logger


def test_log_lines_are_never_glued_to_the_progress_bar(tmp_path, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    log = setup_logger(tmp_path, level="info")
    bar = tqdm(total=10, desc="Epoch: 0 (of 0-0)", file=sys.stderr, disable=False, dynamic_ncols=False, ncols=60)
    bar.update(3)
    log.info("Epoch: 0, Step: 3/10, Avg Loss: 1.0000")
    bar.update(1)
    bar.close()
    close_logger()
    lines = stream.getvalue().replace("\r", "\n").split("\n")
    assert "Epoch: 0, Step: 3/10, Avg Loss: 1.0000" in lines  # a line of its own, the bar redrawn below it
    assert any("4/10" in line for line in lines)


def test_log_level_filters_console_and_file(tmp_path, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    log = setup_logger(tmp_path, level="warning")
    log.info("an info line")
    log.warning("a warning line")
    close_logger()
    text = (tmp_path / "train.log").read_text()
    assert "a warning line" in text and "an info line" not in text
    assert "a warning line" in stream.getvalue() and "an info line" not in stream.getvalue()
    assert setup_logger(None, is_main=False, level=logging.DEBUG).level == logging.ERROR  # other ranks: errors only
    close_logger()
