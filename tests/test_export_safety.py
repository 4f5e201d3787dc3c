"""Exports never replace a file unasked, are private, and fail whole with one clear line."""

from __future__ import annotations

import csv
import errno
import os
import stat

import pytest
from test_import_idempotent import assert_one_error_line, run

from schemewatch import exporter
from schemewatch.errors import OutputError

pytestmark = pytest.mark.both_engines


def test_export_refuses_to_replace_an_existing_file_without_force(generated_db, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("an auditor's notes\n")
    result = run("export", "--db", generated_db, "--out", out)
    assert_one_error_line(result, "already exists", "--force")
    assert out.read_text() == "an auditor's notes\n"
    replaced = run("export", "--db", generated_db, "--out", out, "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert len(list(csv.DictReader(open(out)))) == 6_000


def test_export_file_is_readable_by_its_owner_only(generated_db, tmp_path):
    out, again = tmp_path / "out.csv", tmp_path / "again.csv"
    again.write_text("old")
    again.chmod(0o644)
    run("export", "--db", generated_db, "--out", out)
    run("export", "--db", generated_db, "--out", again, "--force")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert stat.S_IMODE(again.stat().st_mode) == 0o600


def test_export_to_a_missing_folder_is_one_clear_line(generated_db, tmp_path):
    result = run("export", "--db", generated_db, "--out", tmp_path / "missing" / "out.csv")
    assert_one_error_line(result, "the folder does not exist", "nothing was written")


def test_export_into_a_file_instead_of_a_folder_is_one_clear_line(generated_db, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    result = run("export", "--db", generated_db, "--out", tmp_path / "notes.txt" / "out.csv")
    assert_one_error_line(result, "the folder does not exist")


def test_export_on_a_full_disk_leaves_no_file_behind(generated_db, tmp_path):
    # RLIMIT_FSIZE makes writes past 64 KB fail with EFBIG: the same failed write() as ENOSPC
    # on a full disk, reachable without root or a tiny file system.
    folder = tmp_path / "exports"
    folder.mkdir()
    result = run(
        "export", "--db", generated_db, "--out", folder / "out.csv", file_size_limit=65_536
    )
    assert_one_error_line(result, "disk full", "nothing was written")
    assert list(folder.iterdir()) == []


def test_export_with_force_on_a_full_disk_keeps_the_old_file(generated_db, tmp_path):
    out = tmp_path / "out.csv"
    out.write_text("last week's export\n")
    result = run("export", "--db", generated_db, "--out", out, "--force", file_size_limit=65_536)
    assert_one_error_line(result, "disk full")
    assert out.read_text() == "last week's export\n"
    assert sorted(p.name for p in tmp_path.iterdir() if "out.csv" in p.name) == ["out.csv"]


def test_export_without_hard_links_still_refuses_to_replace(conn, tmp_path, monkeypatch):
    def no_hard_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    out = tmp_path / "out.csv"
    everything = exporter.filters_from(None, None, None, None)
    assert exporter.export_csv(conn, out, everything) == 6_000
    with pytest.raises(OutputError, match="already exists"):
        exporter.export_csv(conn, out, everything)
    assert sorted(p.name for p in tmp_path.iterdir() if "out.csv" in p.name) == ["out.csv"]
