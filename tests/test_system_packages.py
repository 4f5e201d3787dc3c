"""`make test` first checks the Debian packages the tests need (tools/install-test-...)."""

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "install-test-system-packages"


def test_nothing_is_printed_or_installed_when_the_packages_are_there():
    result = subprocess.run(["sh", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_without_a_way_to_install_it_names_the_one_command_and_stops(tmp_path):
    """A PATH with neither chromium nor apt-get: the case of a user who is not root, too."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for program in ("sh", "ls", "id"):
        (folder / program).symlink_to(shutil.which(program))
    result = subprocess.run(
        [str(folder / "sh"), str(SCRIPT)],
        capture_output=True,
        text=True,
        env={"PATH": str(folder)},
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "The tests need Debian packages that are missing; run: sudo apt-get install -y chromium\n"
    )
