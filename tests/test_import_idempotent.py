"""Re-importing what is already stored adds nothing; a failed import leaves nothing behind."""

from __future__ import annotations

import csv
import resource
import signal
import stat
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT
from test_import_hostile import HEADER, line, snapshot

from schemewatch import importer, store
from schemewatch.errors import DatabaseError

pytestmark = pytest.mark.both_engines


def run(*args, file_size_limit: int | None = None) -> subprocess.CompletedProcess:
    """The real CLI in its own process; optionally with a file-size limit (a disk that fills)."""

    def limit_file_size():
        # Past the limit a write fails with EFBIG, as on a full disk (ENOSPC), instead of the
        # default SIGXFSZ that would kill the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [PYTHON, "-m", "schemewatch", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size if file_size_limit else None,
    )


def assert_one_error_line(result, *words: str) -> None:
    assert result.returncode == 1
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr


def test_export_of_a_generated_database_imported_back_adds_no_rows(generated_db, tmp_path):
    out = tmp_path / "all.csv"
    assert run("export", "--db", generated_db, "--out", out, "--with-labels").returncode == 0
    before = snapshot(generated_db)
    result = run("import", out, "--db", generated_db)
    assert result.returncode == 0, result.stderr
    assert "6,000 rows already stored, 0 imported" in result.stdout
    assert snapshot(generated_db) == before


def test_export_of_an_imported_database_imported_back_adds_no_rows(generated_db, tmp_path):
    first, second, copy = tmp_path / "first.csv", tmp_path / "second.csv", tmp_path / "copy.db"
    run("export", "--db", generated_db, "--out", first, "--with-labels")
    assert "0 rows already stored, 6,000 imported" in run("import", first, "--db", copy).stdout
    run("export", "--db", copy, "--out", second, "--with-labels")
    before = snapshot(copy)
    for extract in (second, first):
        result = run("import", extract, "--db", copy)
        assert "6,000 rows already stored, 0 imported" in result.stdout
    assert snapshot(copy) == before
    # and the copy's export, which names our generated rows SW-<id>, is recognised at home too
    before = snapshot(generated_db)
    assert "6,000 rows already stored" in run("import", second, "--db", generated_db).stdout
    assert snapshot(generated_db) == before


def test_partly_overlapping_extract_imports_only_the_new_rows_and_says_so(generated_db, tmp_path):
    early, everything, copy = tmp_path / "early.csv", tmp_path / "all.csv", tmp_path / "copy.db"
    days = sorted(
        r["timestamp"][:10] for r in csv.DictReader(open(_export(generated_db, everything)))
    )
    run("export", "--db", generated_db, "--out", early, "--to", days[len(days) // 3])
    loaded = len(list(csv.reader(open(early)))) - 1
    assert 0 < loaded < 6_000
    run("import", early, "--db", copy)
    result = run("import", everything, "--db", copy)
    assert result.returncode == 0, result.stderr
    assert f"{loaded:,} rows already stored, {6_000 - loaded:,} imported" in result.stdout
    assert _count(copy) == 6_000


def _export(db, out):
    assert run("export", "--db", db, "--out", out).returncode == 0
    return out


def _count(db) -> int:
    conn = store.connect(db, readonly=True)
    count = store.count_rows(conn, store.TRANSACTIONS)
    conn.close()
    return count


def test_a_copied_own_id_keeps_its_number_so_later_rows_never_share_an_exported_id(tmp_path):
    db = tmp_path / "copy.db"
    copied, local = tmp_path / "copied.csv", tmp_path / "local.csv"
    copied.write_text(HEADER + line(external_id="SW-5000"))
    local.write_text(HEADER + line(external_id="", beneficiary_id="NB2"))
    run("import", copied, "--db", db)
    run("import", local, "--db", db)
    exported = list(csv.DictReader(open(_export(db, tmp_path / "out.csv"))))
    assert [r["external_id"] for r in exported] == ["SW-5000", "SW-5001"]
    before = snapshot(db)
    result = run("import", tmp_path / "out.csv", "--db", db)
    assert "2 rows already stored, 0 imported" in result.stdout
    assert snapshot(db) == before


def _mixed_file(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text(HEADER + line() + line(external_id="N2", amount="-5") + line(external_id="N3"))
    return path


def test_skip_invalid_with_rejects_in_a_missing_folder_imports_nothing(generated_db, tmp_path):
    before = snapshot(generated_db)
    rejects = tmp_path / "no-such-folder" / "rejects.csv"
    result = run(
        "import", _mixed_file(tmp_path), "--skip-invalid", "--rejects", rejects, "--db",
        generated_db,
    )  # fmt: skip
    assert_one_error_line(result, "the folder does not exist", "nothing was imported")
    assert snapshot(generated_db) == before


def test_skip_invalid_whose_rejects_file_fills_the_disk_imports_nothing(generated_db, tmp_path):
    before = snapshot(generated_db)
    source = tmp_path / "big-rejects.csv"
    huge_rows = "".join(line(external_id=f"R{i}", district="Z" * 15_000) for i in range(20))
    source.write_text(HEADER + line() + huge_rows)
    rejects = tmp_path / "rejects.csv"
    result = run(
        "import", source, "--skip-invalid", "--rejects", rejects, "--db", generated_db,
        file_size_limit=100_000,
    )  # fmt: skip
    assert_one_error_line(result, "disk full", "nothing was written")
    assert snapshot(generated_db) == before
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("transactions.db"))
    assert left == ["big-rejects.csv"]  # neither the rejects file nor a temporary one


def test_skip_invalid_writes_a_private_rejects_file_with_formulas_disarmed(empty_conn, tmp_path):
    source = tmp_path / "evil.csv"
    source.write_text(HEADER + line() + line(external_id="=1+2", amount="@SUM(A1)"))
    rejects = tmp_path / "rejects.csv"
    db = tmp_path / "empty.db"
    result = run("import", source, "--skip-invalid", "--rejects", rejects, "--db", db)
    assert result.returncode == 0, result.stderr
    assert "0 rows already stored, 1 imported" in result.stdout
    assert stat.S_IMODE(rejects.stat().st_mode) == 0o600
    rejected = list(csv.DictReader(open(rejects)))
    assert len(rejected) == 1 and rejected[0]["column"] == "amount"
    assert rejected[0]["external_id"] == "'=1+2" and rejected[0]["amount"] == "'@SUM(A1)"
    assert _count(db) == 1


def test_rejects_path_that_is_not_a_rejects_file_is_refused(generated_db, tmp_path):
    source = _mixed_file(tmp_path)
    before = snapshot(generated_db)
    for target in [t for t in (generated_db, source) if isinstance(t, Path)]:
        kept = target.read_bytes()
        result = run("import", source, "--skip-invalid", "--rejects", target, "--db", generated_db)
        assert_one_error_line(result, "is not a rejects file")
        assert target.read_bytes() == kept
    assert snapshot(generated_db) == before


def test_rejects_file_of_an_earlier_run_is_replaced(tmp_path):
    source, rejects, db = _mixed_file(tmp_path), tmp_path / "rejects.csv", tmp_path / "new.db"
    rejects.write_text("row,column,reason,external_id\n9,amount,old,Z\n")
    result = run("import", source, "--skip-invalid", "--rejects", rejects, "--db", db)
    assert "Rejected 1 row; see" in result.stdout
    assert [r["row"] for r in csv.DictReader(open(rejects))] == ["3"]


def test_rejects_file_is_withdrawn_when_the_commit_fails(empty_conn, tmp_path, monkeypatch):
    @contextmanager
    def commit_fails(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")
        raise DatabaseError("could not commit: disk I/O error")

    monkeypatch.setattr(importer.store, "write_transaction", commit_fails)
    rejects = tmp_path / "rejects.csv"
    with pytest.raises(DatabaseError):
        importer.import_csv(
            empty_conn, _mixed_file(tmp_path), skip_invalid=True, rejects_path=rejects
        )
    assert not rejects.exists()
    assert store.count_rows(empty_conn, store.TRANSACTIONS) == 0


def test_skip_invalid_with_nothing_rejected_leaves_no_rejects_file(tmp_path):
    source = tmp_path / "clean.csv"
    source.write_text(HEADER + line())
    result = run("import", source, "--skip-invalid", "--db", tmp_path / "new.db")
    assert "0 rows already stored, 1 imported" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("new.db")) == [
        "clean.csv"
    ]
