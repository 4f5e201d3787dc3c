"""Import Keras (and TensorFlow under it) without TensorFlow's start-up lines on the terminal.

TensorFlow's native libraries log a few INFO lines as they load ("oneDNN custom operations are
on", each preceded by absl's "All log messages before absl::InitializeLog() ..."). They are
written to file descriptor 2 by C++ code, before `TF_CPP_MIN_LOG_LEVEL` is consulted, so neither
that variable nor Python's logging can hold them back. We catch the descriptor for the length of
the import and write back every line that is not such start-up information: real warnings and
errors still reach the terminal.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

START_UP_INFORMATION = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    # absl's INFO lines: I1123 14:56:47.123456   2482 port.cc:153] ... (before absl is
    # initialised the time reads 00:00:<seconds since 1970>)
    r"|I\d{4} [\d:.]+ +\d+ \S+:\d+\] .*"
    # TensorFlow's own INFO lines: 2026-11-23 14:56:47.123456: I tensorflow/...:153] ...
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: I \S+:\d+\] .*"
)


def is_start_up_information(line: str) -> bool:
    """True for a native INFO line logged while TensorFlow loads (never a warning or error)."""
    return START_UP_INFORMATION.fullmatch(line.rstrip("\r\n")) is not None


def keras():
    """The `keras` module, imported with TensorFlow's start-up information held back."""
    if "keras" in sys.modules:
        return sys.modules["keras"]
    with native_start_up_information_held_back():
        import keras

    return keras


@contextlib.contextmanager
def native_start_up_information_held_back():
    """Capture file descriptor 2 for the block; afterwards write back all but start-up INFO."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [
                line
                for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                if not is_start_up_information(line)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
