"""TensorFlow's native start-up INFO lines are held back; its warnings and errors are not."""

import os
import subprocess
import sys

import pytest

from schemewatch.quiet_tensorflow import (
    is_start_up_information,
    native_start_up_information_held_back,
)


@pytest.mark.parametrize(
    "line",
    [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
        "I0000 00:00:1795445773.029401    2482 port.cc:153] oneDNN custom operations are on. "
        "You may see slightly different numerical results.\n",
        "I1123 14:56:47.123456   2482 cpu_feature_guard.cc:210] This TensorFlow binary is "
        "optimized to use available CPU instructions.\n",
        "2026-11-23 14:56:47.123456: I tensorflow/core/util/port.cc:153] oneDNN custom "
        "operations are on.\n",
    ],
)
def test_start_up_information_is_recognised(line):
    assert is_start_up_information(line)


@pytest.mark.parametrize(
    "line",
    [
        "W0000 00:00:1795445773.029401    2482 op_level_cost_estimator.cc:699] Error in "
        "PredictCost() for the op\n",
        "E1123 14:56:47.123456   2482 cuda_dnn.cc:8310] Unable to register cuDNN factory\n",
        "2026-11-23 14:56:47.123456: W tensorflow/core/framework/op_kernel.cc:1840] OP_REQUIRES "
        "failed\n",
        "Error: the database is locked\n",
        "I will not be held back\n",
    ],
)
def test_warnings_errors_and_our_own_lines_are_kept(line):
    assert not is_start_up_information(line)


def test_only_start_up_information_is_held_back_at_the_file_descriptor(tmp_path):
    """Native code writes to descriptor 2 directly; what is kept reaches the real stderr."""
    script = (
        "import os\n"
        "from schemewatch.quiet_tensorflow import native_start_up_information_held_back\n"
        "with native_start_up_information_held_back():\n"
        "    os.write(2, b'I0000 00:00:1795445773.029401    2482 port.cc:153] oneDNN on\\n')\n"
        "    os.write(2, b'W0000 00:00:1795445773.029401    2482 x.cc:1] a real warning\\n')\n"
        "os.write(2, b'after\\n')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stderr == "W0000 00:00:1795445773.029401    2482 x.cc:1] a real warning\nafter\n"


def test_the_descriptor_is_restored_when_the_block_raises():
    before = os.fstat(2)
    with pytest.raises(ValueError), native_start_up_information_held_back():
        raise ValueError("inside")
    after = os.fstat(2)
    assert (before.st_dev, before.st_ino) == (after.st_dev, after.st_ino)
