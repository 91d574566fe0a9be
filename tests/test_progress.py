"""The progress bar says what it counts and which time is which (on a terminal; plain lines elsewhere)."""

import io
import re

from lusbench.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_labels_its_count_and_both_times(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    stream = _Terminal()
    progress = Progress(stream=stream)
    assert progress.live
    with progress.task("training", total=36, unit="epochs, all folds") as bar:
        bar.update(completed=12)
    # rich draws the bar once more as it stops (before clearing it); colours stripped.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert "12/36 epochs, all folds" in text
    assert "elapsed" in text and "remaining" in text
    assert text.index("elapsed") < text.index("remaining")


def test_no_bar_off_a_terminal():
    stream = io.StringIO()
    progress = Progress(stream=stream)
    with progress.task("training", total=3, unit="epochs, all folds") as bar:
        bar.update(completed=2)
    assert bar.completed == 2 and stream.getvalue() == ""
