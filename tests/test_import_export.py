import csv
import subprocess

import pytest
from conftest import PYTHON, ROOT

from schemewatch import exporter, importer, store
from schemewatch.errors import ImportRejected

pytestmark = pytest.mark.both_engines

HEADER = "beneficiary_id,scheme,amount,timestamp,latitude,longitude,external_id,label\n"
GOOD = "B1,PM_KISAN,2000,2025-06-01T10:00:00+05:30,25.6,85.1,X1,\n"

# (file contents, row, column, words in the reason)
BAD_FILES = {
    "missing_column": (
        "beneficiary_id,scheme,amount,timestamp,latitude\nB1,PM_KISAN,2000,2025-06-01,25\n",
        1,
        "longitude",
        "required column is missing",
    ),
    "bad_timestamp": (
        HEADER + GOOD + "B2,PM_KISAN,2000,June 1st,25.6,85.1,X2,\n",
        3,
        "timestamp",
        "ISO 8601",
    ),
    "negative_amount": (
        HEADER + GOOD + "B2,PM_KISAN,-5,2025-06-01,25.6,85.1,X2,\n",
        3,
        "amount",
        "positive",
    ),
    "non_numeric_amount": (
        HEADER + "B2,PM_KISAN,two thousand,2025-06-01,25.6,85.1,X2,\n",
        2,
        "amount",
        "not a number",
    ),
    "absurd_amount": (
        HEADER + "B2,PM_KISAN,99999999,2025-06-01,25.6,85.1,X2,\n",
        2,
        "amount",
        "absurd",
    ),
    "nan_amount": (HEADER + "B2,PM_KISAN,nan,2025-06-01,25.6,85.1,X2,\n", 2, "amount", "finite"),
    "latitude_off_globe": (
        HEADER + "B2,PM_KISAN,2000,2025-06-01,95,85.1,X2,\n",
        2,
        "latitude",
        "off the globe",
    ),
    "longitude_off_globe": (
        HEADER + "B2,PM_KISAN,2000,2025-06-01,25,185.1,X2,\n",
        2,
        "longitude",
        "off the globe",
    ),
    "duplicate_external_id": (
        HEADER + GOOD + GOOD.replace("B1", "B9"),
        3,
        "external_id",
        "appears twice",
    ),
    "unknown_scheme": (
        HEADER + "B2,FREE_MONEY,2000,2025-06-01,25.6,85.1,X2,\n",
        2,
        "scheme",
        "unknown scheme",
    ),
    "unknown_label": (
        HEADER + "B2,PM_KISAN,2000,2025-06-01,25.6,85.1,X2,mystery\n",
        2,
        "label",
        "unknown typology",
    ),
    "empty_value": (
        HEADER + ",PM_KISAN,2000,2025-06-01,25.6,85.1,X2,\n",
        2,
        "beneficiary_id",
        "empty",
    ),
    "wrong_field_count": (HEADER + GOOD + "B2,PM_KISAN,2000\n", 3, None, "expected 8 fields"),
    "future_timestamp": (
        HEADER + "B2,PM_KISAN,2000,2099-06-01,25.6,85.1,X2,\n",
        2,
        "timestamp",
        "future",
    ),
    "empty_file": ("", 1, None, "empty"),
    "header_only": (HEADER, 2, None, "no data rows"),
}


def _write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / f"{name}.csv"
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def _counts(conn):
    return tuple(
        store.count_rows(conn, t)
        for t in (store.TRANSACTIONS, store.BENEFICIARIES, store.ENROLMENTS, store.GROUND_TRUTH)
    )


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_import_rejects_bad_file_whole_naming_row_column_and_reason(conn, tmp_path, case):
    text, row, column, reason = BAD_FILES[case]
    path = _write(tmp_path, case, text)
    before = _counts(conn)
    with pytest.raises(ImportRejected) as error:
        importer.import_csv(conn, path)
    message = str(error.value)
    assert f"row {row}" in message
    if column:
        assert f"column '{column}'" in message
    assert reason in message
    assert "nothing was imported" in message
    assert _counts(conn) == before


def test_import_rejects_wrong_encoding_naming_the_row(conn, tmp_path):
    path = _write(
        tmp_path, "latin1", HEADER + "Bé,PM_KISAN,2000,2025-06-01,25.6,85.1,X2,\n", "latin-1"
    )
    before = _counts(conn)
    with pytest.raises(ImportRejected, match="row 2: not UTF-8"):
        importer.import_csv(conn, path)
    assert _counts(conn) == before


def test_import_skips_a_row_whose_external_id_is_stored_with_the_same_payment(conn, tmp_path):
    importer.import_csv(conn, _write(tmp_path, "first", HEADER + GOOD))
    before = _counts(conn)
    result = importer.import_csv(conn, _write(tmp_path, "again", HEADER + GOOD))
    assert (result.imported, result.already_stored, result.rejected) == (0, 1, 0)
    assert _counts(conn) == before


def test_import_rejects_external_id_stored_with_a_different_payment(conn, tmp_path):
    importer.import_csv(conn, _write(tmp_path, "first", HEADER + GOOD))
    before = _counts(conn)
    with pytest.raises(
        ImportRejected,
        match="row 2, column 'amount': 'X1' is already stored, with a different amount",
    ):
        importer.import_csv(conn, _write(tmp_path, "again", HEADER + GOOD.replace("2000", "2500")))
    assert _counts(conn) == before


def test_import_registers_unknown_beneficiaries_and_keeps_labels_apart(empty_conn, tmp_path):
    text = HEADER + GOOD + "B2,pm-kisan,2000,2025-06-02 11:00,25.6,85.1,X2,burst\n"
    result = importer.import_csv(empty_conn, _write(tmp_path, "ok", text))
    assert (result.imported, result.new_beneficiaries, result.rejected) == (2, 2, 0)
    row = empty_conn.execute(
        "SELECT state, district, instalment_period FROM transactions WHERE external_id='X2'"
    ).fetchone()
    assert tuple(row) == ("Bihar", "Patna", "2025-26/P1")
    assert store.typology_counts(empty_conn) == {"burst": 1}
    enrolled = empty_conn.execute("SELECT COUNT(*) FROM enrolments WHERE scheme='PM_KISAN'")
    assert enrolled.fetchone()[0] == 2


def test_skip_invalid_loads_good_rows_and_writes_rejects_with_reasons(empty_conn, tmp_path):
    text = HEADER + GOOD + "B2,PM_KISAN,-5,2025-06-01,25.6,85.1,X2,\n" + GOOD.replace("X1", "X3")
    rejects = tmp_path / "rejects.csv"
    result = importer.import_csv(
        empty_conn, _write(tmp_path, "mixed", text), skip_invalid=True, rejects_path=rejects
    )
    assert (result.imported, result.rejected) == (2, 1)
    rows = list(csv.DictReader(rejects.open()))
    assert rows[0]["row"] == "3" and rows[0]["column"] == "amount"
    assert "positive" in rows[0]["reason"] and rows[0]["beneficiary_id"] == "B2"


def test_export_then_import_gives_the_same_rows(generated_db, tmp_path):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    for args in (
        ["export", "--db", str(generated_db), "--out", str(first), "--with-labels"],
        ["import", str(first), "--db", str(tmp_path / "copy.db")],
        ["export", "--db", str(tmp_path / "copy.db"), "--out", str(second), "--with-labels"],
    ):
        subprocess.run(
            [PYTHON, "-m", "schemewatch", *args], cwd=ROOT, check=True, capture_output=True
        )
    assert first.read_text() == second.read_text()
    assert len(first.read_text().splitlines()) == 6_001


def test_export_filters_by_dates_scheme_and_state(conn, tmp_path):
    out = tmp_path / "bihar.csv"
    filters = exporter.filters_from(None, None, "pm-kisan", "Bihar")
    count = exporter.export_csv(conn, out, filters)
    rows = list(csv.DictReader(out.open()))
    assert count == len(rows) > 0
    assert {r["scheme"] for r in rows} == {"PM_KISAN"} and {r["state"] for r in rows} == {"Bihar"}
    expected = conn.execute(
        "SELECT COUNT(*) FROM transactions WHERE scheme='PM_KISAN' AND state='Bihar'"
    ).fetchone()[0]
    assert count == expected
    first_day = rows[0]["timestamp"][:10]
    from datetime import date

    day = date.fromisoformat(first_day)
    one_day = exporter.export_csv(
        conn, out, exporter.filters_from(day, day, None, None), replace=True
    )
    assert all(r["timestamp"].startswith(first_day) for r in csv.DictReader(out.open()))
    assert 0 < one_day < count + 6_000


def test_export_neutralises_spreadsheet_formulas_and_import_restores_them(empty_conn, tmp_path):
    text = HEADER + "=cmd|' /C calc'!A0,PM_KISAN,2000,2025-06-01,25.6,85.1,@SUM(1),\n"
    importer.import_csv(empty_conn, _write(tmp_path, "evil", text))
    out = tmp_path / "out.csv"
    exporter.export_csv(empty_conn, out, exporter.filters_from(None, None, None, None))
    row = next(csv.DictReader(out.open()))
    assert row["beneficiary_id"].startswith("'=") and row["external_id"] == "'@SUM(1)"
    again = tmp_path / "again.db"
    conn2 = store.open_database(again)
    importer.import_csv(conn2, out)
    stored = conn2.execute("SELECT beneficiary_id, external_id FROM transactions").fetchone()
    assert tuple(stored) == ("=cmd|' /C calc'!A0", "@SUM(1)")


def test_cli_import_of_bad_file_exits_non_zero_with_one_line(generated_db, tmp_path):
    path = _write(tmp_path, "bad", BAD_FILES["negative_amount"][0])
    result = subprocess.run(
        [PYTHON, "-m", "schemewatch", "import", str(path), "--db", str(generated_db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: row 3, column 'amount'")
    assert "Traceback" not in result.stderr
