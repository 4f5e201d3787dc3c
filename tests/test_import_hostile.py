"""A hostile-CSV suite: every file is either rejected whole with row, column and reason and the
database left byte-for-byte as it was, or imported exactly as specified. Run through the real CLI;
no case may end in a traceback."""

from __future__ import annotations

import csv
import hashlib
import io
import random
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest
from click.testing import CliRunner
from conftest import PYTHON, ROOT

from schemewatch import importer, store
from schemewatch.cli import cli
from schemewatch.errors import SchemewatchError

pytestmark = pytest.mark.both_engines

COLUMNS = (
    "external_id",
    "beneficiary_id",
    "scheme",
    "amount",
    "timestamp",
    "latitude",
    "longitude",
    "state",
    "district",
    "instalment_period",
)
DEFAULTS = {
    "external_id": "N1",
    "beneficiary_id": "NB1",
    "scheme": "PM_KISAN",
    "amount": "2000",
    "timestamp": "2025-06-01T10:00:00+05:30",
    "latitude": "25.6",
    "longitude": "85.1",
    "state": "Bihar",
    "district": "Patna",
    "instalment_period": "2025-26/P1",
}
HEADER = ",".join(COLUMNS) + "\n"
# The database every case starts from: two rows with external ids, one without (transaction 3).
SEED_ROWS = (
    {"external_id": "X1", "beneficiary_id": "B1"},
    {"external_id": "X2", "beneficiary_id": "B2", "amount": "2500"},
    {"external_id": "", "beneficiary_id": "B3", "state": "Kerala", "district": "Ernakulam"},
)


def line(**changes: str) -> str:
    """One CSV record: the default good row with some cells changed (quoted as needed)."""
    cells = {**DEFAULTS, **changes}
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([cells[c] for c in COLUMNS])
    return buffer.getvalue()


def one(**changes: str) -> str:
    """A file of the header and one row."""
    return HEADER + line(**changes)


@dataclass(frozen=True)
class Rejected:
    """The whole file is refused: exit 1, one line naming row, column and reason."""

    row: int
    column: str | None
    words: str


@dataclass(frozen=True)
class Imported:
    """The file is taken: how many rows are new and already stored; stored values to check."""

    imported: int
    already: int = 0
    stored: dict = field(default_factory=dict)  # external_id -> {column: value}


def _seed(path) -> None:
    conn = store.open_database(path)
    text = HEADER + "".join(line(**row) for row in SEED_ROWS)
    source = path.with_suffix(".csv")
    source.write_text(text)
    importer.import_csv(conn, source)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


HUGE = "A" * 100_000
CASES: dict[str, tuple[str | bytes, Rejected | Imported]] = {
    # Encodings
    "utf16_with_bom": (one().encode("utf-16"), Rejected(1, None, "UTF-16")),
    "utf16_big_endian_with_bom": (
        b"\xfe\xff" + one().encode("utf-16-be"),
        Rejected(1, None, "UTF-16"),
    ),
    "utf16_without_bom": (one().encode("utf-16-le"), Rejected(1, None, "NUL bytes")),
    "utf8_bom": (b"\xef\xbb\xbf" + one().encode(), Imported(1)),
    "latin1_name": (one(beneficiary_id="Bé").encode("latin-1"), Rejected(2, None, "not UTF-8")),
    "windows_1252_quotes": (
        one(beneficiary_id="\x93B\x94").encode("latin-1"),
        Rejected(2, None, "not UTF-8"),
    ),
    "utf8_encoded_surrogate": (
        HEADER.encode() + line().encode().replace(b"NB1", b"NB\xed\xa0\x80"),
        Rejected(2, None, "not UTF-8"),
    ),
    "nul_byte_in_field": (one(beneficiary_id="NB\x001"), Rejected(2, "beneficiary_id", "U+0000")),
    "line_of_nul_bytes": (HEADER + "\x00\x00\x00\n", Rejected(2, None, "expected 10 fields")),
    "non_utf8_header": (b"beneficiary_id\xff," + one().encode(), Rejected(1, None, "not UTF-8")),
    # Header
    "no_header": (line() + line(external_id="N2"), Rejected(1, None, "no header row")),
    "duplicate_column": (
        HEADER.replace("\n", ",amount\n") + line().replace("\n", ",2000\n"),
        Rejected(1, "amount", "appears twice"),
    ),
    "missing_required_column": (
        HEADER.replace(",latitude", "") + line().replace(",25.6", ""),
        Rejected(1, "latitude", "required column is missing"),
    ),
    "misspelt_column": (
        HEADER.replace("external_id", "external_ld") + line(),
        Rejected(1, None, "unknown column 'external_ld'"),
    ),
    "blank_header_cell": (
        HEADER.replace("\n", ",\n") + line().replace("\n", ",\n"),
        Rejected(1, None, "unknown column ''"),
    ),
    "ten_thousand_columns": (
        HEADER.replace("\n", "".join(f",c{i}" for i in range(10_000)) + "\n")
        + line().replace("\n", "," * 10_000 + "\n"),
        Rejected(1, None, "and 9,995 more"),
    ),
    "empty_file": ("", Rejected(1, None, "empty")),
    "header_only": (HEADER, Rejected(2, None, "no data rows")),
    "only_blank_lines_after_header": (HEADER + "\n\n , ,\n", Rejected(2, None, "no data rows")),
    "header_in_other_case_and_spacing": (
        " " + HEADER.upper().replace(",", " , ") + line(),
        Imported(1),
    ),
    # Huge fields, control characters, newlines
    "100k_character_beneficiary": (
        one(beneficiary_id=HUGE),
        Rejected(2, "beneficiary_id", "100,000 characters"),
    ),
    "100k_character_district": (one(district=HUGE), Rejected(2, "district", "100,000 characters")),
    "field_beyond_csv_limit": (
        one(external_id="A" * 200_000),
        Rejected(2, None, "field larger than field limit"),
    ),
    "newline_in_quoted_id": (one(beneficiary_id="NB\n1"), Rejected(2, "beneficiary_id", "U+000A")),
    "carriage_return_in_quoted_id": (
        HEADER + line().replace("N1,", '"N\r1",', 1),
        Rejected(2, "external_id", "U+000D"),
    ),
    "bare_carriage_return_in_unquoted_id": (
        HEADER + line().replace("N1,", "N\r1,", 1),
        Rejected(2, None, "malformed CSV"),
    ),
    "tab_inside_district": (one(district="Pat\tna"), Rejected(2, "district", "U+0009")),
    "terminal_escape_in_external_id": (
        one(external_id="\x1b[31mN1"),
        Rejected(2, "external_id", "U+001B"),
    ),
    "right_to_left_override_in_id": (
        one(beneficiary_id="NB\u202e1"),
        Rejected(2, "beneficiary_id", "U+202E"),
    ),
    "zero_width_space_in_district": (
        one(district="Pat\u200bna"),
        Rejected(2, "district", "U+200B"),
    ),
    "no_break_space_inside_state": (
        one(state="Uttar\u00a0Pradesh", district="Lucknow"),
        Rejected(2, "state", "U+00A0"),
    ),
    # Formula cells
    "formula_beneficiary_stored_as_text": (
        one(beneficiary_id='=HYPERLINK("http://x","y")'),
        Imported(1, stored={"N1": {"beneficiary_id": '=HYPERLINK("http://x","y")'}}),
    ),
    "neutralised_formula_external_id": (
        one(external_id="'@SUM(1)"),
        Imported(1, stored={"@SUM(1)": {"beneficiary_id": "NB1"}}),
    ),
    "formula_in_amount": (one(amount="=1+1"), Rejected(2, "amount", "not a number")),
    "formula_in_district": (
        one(district="=cmd|' /C calc'!A0"),
        Rejected(2, "district", "not a district of Bihar"),
    ),
    # Markdown and HTML
    "html_beneficiary_stored_verbatim": (
        one(beneficiary_id="<script>alert(1)</script>"),
        Imported(1, stored={"N1": {"beneficiary_id": "<script>alert(1)</script>"}}),
    ),
    "markdown_link_external_id_stored_verbatim": (
        one(external_id="[pay](http://evil)"),
        Imported(1, stored={"[pay](http://evil)": {"amount": 2000.0}}),
    ),
    "html_district": (one(district="<b>Patna</b>"), Rejected(2, "district", "not a district")),
    "markdown_state": (one(state="**Bihar**"), Rejected(2, "state", "not a state")),
    # Places
    "made_up_district": (one(district="Gotham"), Rejected(2, "district", "not a district")),
    "district_of_another_state": (
        one(state="Kerala"),
        Rejected(2, "district", "not a district of Kerala"),
    ),
    "made_up_state": (one(state="Atlantis"), Rejected(2, "state", "not a state")),
    "state_without_district": (one(district=""), Rejected(2, "district", "together")),
    "place_in_other_case_and_spacing": (
        one(state="  bihar ", district="PATNA"),
        Imported(1, stored={"N1": {"state": "Bihar", "district": "Patna"}}),
    ),
    "no_place_uses_nearest_district": (
        one(state="", district=""),
        Imported(1, stored={"N1": {"state": "Bihar", "district": "Patna"}}),
    ),
    # Amounts
    "amount_one_tenth_of_a_paisa": (one(amount="0.001"), Rejected(2, "amount", "2 decimal")),
    "amount_zero": (one(amount="0.00"), Rejected(2, "amount", "positive")),
    "amount_negative": (one(amount="-5"), Rejected(2, "amount", "positive")),
    "amount_nan": (one(amount="NaN"), Rejected(2, "amount", "finite")),
    "amount_inf": (one(amount="inf"), Rejected(2, "amount", "finite")),
    "amount_negative_infinity": (one(amount="-Infinity"), Rejected(2, "amount", "finite")),
    "amount_1e308": (one(amount="1e308"), Rejected(2, "amount", "not a number")),
    "amount_150_digits": (one(amount="1" + "0" * 150), Rejected(2, "amount", "absurd")),
    "amount_absurd_for_scheme": (one(amount="100000"), Rejected(2, "amount", "absurd")),
    "amount_in_words": (one(amount="two thousand"), Rejected(2, "amount", "not a number")),
    "amount_with_thousands_separator": (one(amount="2,000"), Rejected(2, "amount", "not a number")),
    "amount_in_devanagari_digits": (one(amount="२०००"), Rejected(2, "amount", "not a number")),
    "amount_with_underscore": (one(amount="2_000"), Rejected(2, "amount", "not a number")),
    "amount_empty": (one(amount=""), Rejected(2, "amount", "empty")),
    "amount_in_paise": (one(amount="2000.50"), Imported(1, stored={"N1": {"amount": 2000.5}})),
    "amount_with_trailing_zeros": (
        one(amount="2000.000"),
        Imported(1, stored={"N1": {"amount": 2000.0}}),
    ),
    # Timestamps
    "timestamp_1900": (one(timestamp="1900-01-01T00:00:00"), Rejected(2, "timestamp", "2000")),
    "timestamp_year_one": (one(timestamp="0001-01-01"), Rejected(2, "timestamp", "2000")),
    "timestamp_far_future": (one(timestamp="2999-01-01"), Rejected(2, "timestamp", "future")),
    "timestamp_without_date": (one(timestamp="10:30:00"), Rejected(2, "timestamp", "ISO 8601")),
    "timestamp_garbage": (one(timestamp="yesterday"), Rejected(2, "timestamp", "ISO 8601")),
    "timestamp_offset_25_hours": (
        one(timestamp="2025-06-01T10:00:00+25:00"),
        Rejected(2, "timestamp", "ISO 8601"),
    ),
    "timestamp_date_only_is_midnight_ist": (
        one(timestamp="2025-06-01"),
        Imported(1, stored={"N1": {"paid_at": 1_748_716_200}}),
    ),
    # Coordinates
    "latitude_91": (one(latitude="91"), Rejected(2, "latitude", "off the globe")),
    "longitude_minus_181": (one(longitude="-181"), Rejected(2, "longitude", "off the globe")),
    "latitude_nan": (one(latitude="nan"), Rejected(2, "latitude", "finite")),
    "latitude_1e308": (one(latitude="1e308"), Rejected(2, "latitude", "off the globe")),
    "longitude_with_decimal_comma": (
        one(longitude="85,1"),
        Rejected(2, "longitude", "not a number"),
    ),
    # Instalment periods
    "period_minus_five": (
        one(instalment_period="2025-26/P-5"),
        Rejected(2, "instalment_period", "not a valid period"),
    ),
    "period_99": (
        one(instalment_period="2025-26/P99"),
        Rejected(2, "instalment_period", "not a valid period"),
    ),
    "period_huge_number": (
        one(instalment_period="2025-26/P99999999999999999999"),
        Rejected(2, "instalment_period", "not a valid period"),
    ),
    "period_zero_padded": (
        one(instalment_period="2025-26/P01"),
        Rejected(2, "instalment_period", "not a valid period"),
    ),
    "period_of_another_scheme": (
        one(instalment_period="2025-06"),
        Rejected(2, "instalment_period", "not a valid period"),
    ),
    "mgnrega_month_13": (
        one(scheme="MGNREGA", amount="3000", instalment_period="2025-13-F1"),
        Rejected(2, "instalment_period", "not a valid period"),
    ),
    "period_six_years_after_payment": (
        one(instalment_period="2031-32/P1"),
        Rejected(2, "instalment_period", "more than a year after"),
    ),
    "period_before_2000": (
        one(instalment_period="1999-00/P1"),
        Rejected(2, "instalment_period", "before 2000"),
    ),
    "period_derived_when_empty": (
        one(instalment_period=""),
        Imported(1, stored={"N1": {"instalment_period": "2025-26/P1"}}),
    ),
    # Schemes, channels, labels, ids
    "unknown_scheme": (one(scheme="FREE_MONEY"), Rejected(2, "scheme", "unknown scheme")),
    "html_scheme": (one(scheme="<b>PM_KISAN</b>"), Rejected(2, "scheme", "unknown scheme")),
    "scheme_alias": (one(scheme="pm-kisan"), Imported(1, stored={"N1": {"scheme": "PM_KISAN"}})),
    "account_id_65_characters": (
        HEADER.replace("\n", ",account_id\n") + line().replace("\n", "," + "9" * 65 + "\n"),
        Rejected(2, "account_id", "at most 64"),
    ),
    "unknown_channel": (
        HEADER.replace("\n", ",channel\n") + line().replace("\n", ",BITCOIN\n"),
        Rejected(2, "channel", "unknown channel"),
    ),
    "unknown_label": (
        HEADER.replace("\n", ",label\n") + line().replace("\n", ",mystery\n"),
        Rejected(2, "label", "unknown typology"),
    ),
    # Duplicates, against the file and the database
    "external_id_twice_in_file": (
        one() + line(beneficiary_id="NB9"),
        Rejected(3, "external_id", "appears twice"),
    ),
    "external_id_stored_with_same_payment": (
        one(external_id="X1", beneficiary_id="B1"),
        Imported(0, 1),
    ),
    "external_id_stored_with_other_amount": (
        one(external_id="X1", beneficiary_id="B1", amount="2001"),
        Rejected(2, "amount", "'X1' is already stored"),
    ),
    "partly_overlapping_file": (
        one(external_id="X2", beneficiary_id="B2", amount="2500") + line(),
        Imported(1, 1),
    ),
    "own_id_of_the_same_payment": (
        one(external_id="SW-3", beneficiary_id="B3", state="Kerala", district="Ernakulam"),
        Imported(0, 1),
    ),
    "own_id_of_a_different_payment": (
        one(external_id="SW-3", beneficiary_id="B3", amount="2100"),
        Rejected(2, "amount", "this database's transaction 3"),
    ),
    "own_id_from_another_database_keeps_its_number": (
        one(external_id="SW-40"),
        Imported(1, stored={"SW-40": {"transaction_id": 40}}),
    ),
    # Layout and quoting
    "blank_lines_between_rows": (
        HEADER + "\n" + line() + "\n\n" + line(external_id="N2") + "\n",
        Imported(2),
    ),
    "crlf_line_endings": ((one() + line(external_id="N2")).replace("\n", "\r\n"), Imported(2)),
    "unterminated_quote": (HEADER + line().replace("NB1", '"NB1'), Rejected(2, None, "malformed")),
    "text_after_closing_quote": (
        HEADER + line().replace("NB1", '"NB"1'),
        Rejected(2, None, "malformed CSV"),
    ),
    "row_with_too_few_fields": (one() + "N2,NB2,PM_KISAN\n", Rejected(3, None, "expected 10")),
    "row_with_too_many_fields": (
        one() + line(external_id="N2").replace("\n", ",extra\n"),
        Rejected(3, None, "expected 10"),
    ),
    "bad_row_after_a_thousand_good_ones": (
        HEADER
        + "".join(line(external_id=f"N{i}") for i in range(1_000))
        + line(external_id="BAD", amount="0.001"),
        Rejected(1_002, "amount", "2 decimal"),
    ),
}


def snapshot(path) -> dict[str, tuple[int, str]]:
    """Row count and a checksum of the sorted rows of every table."""
    conn = store.connect(path, readonly=True)
    tables = store.table_names(conn)
    result = {}
    for table in tables:
        rows = sorted(repr(tuple(r)) for r in conn.execute(f"SELECT * FROM {table}"))
        result[table] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest())
    conn.close()
    return result


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("seeded") / "seeded.db"
    _seed(path)
    return path


@pytest.fixture
def seeded_db(seeded_template, tmp_path):
    path = tmp_path / "seeded.db"
    shutil.copy(seeded_template, path)
    return path


def test_hostile_suite_has_at_least_fifty_files():
    assert len(CASES) >= 50


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_csv_is_rejected_whole_or_imported_as_specified(seeded_db, tmp_path, case):
    content, outcome = CASES[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    before = snapshot(seeded_db)
    result = CliRunner().invoke(cli, ["import", str(path), "--db", str(seeded_db)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    if isinstance(outcome, Rejected):
        where = f", column '{outcome.column}'" if outcome.column else ""
        assert result.exit_code == 1
        assert result.stderr.startswith(f"Error: row {outcome.row}{where}: ")
        assert outcome.words in result.stderr and "nothing was imported" in result.stderr
        assert result.stderr.count("\n") == 1  # one line
        assert snapshot(seeded_db) == before
    else:
        assert result.exit_code == 0, result.output
        rows = "1 row" if outcome.already == 1 else f"{outcome.already:,} rows"
        message = f"{rows} already stored, {outcome.imported:,} imported"
        assert message in result.stdout
        after = snapshot(seeded_db)
        counted = after["transactions"][0] - before["transactions"][0]
        assert counted == outcome.imported
        _assert_stored(seeded_db, outcome.stored)


def _assert_stored(path, expected: dict) -> None:
    conn = store.connect(path, readonly=True)
    for external_id, values in expected.items():
        row = conn.execute("SELECT * FROM transactions WHERE external_id = ?", (external_id,))
        stored = dict(row.fetchone())
        assert {k: stored[k] for k in values} == values
    conn.close()


@pytest.mark.parametrize(
    "case", ["utf16_with_bom", "period_huge_number", "amount_one_tenth_of_a_paisa", "no_header"]
)
def test_hostile_csv_in_a_real_process_gives_one_error_line_and_no_traceback(
    seeded_db, tmp_path, case
):
    content, outcome = CASES[case]
    path = tmp_path / f"{case}.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    before = snapshot(seeded_db)
    result = subprocess.run(
        [PYTHON, "-m", "schemewatch", "import", str(path), "--db", str(seeded_db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: row {outcome.row}")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert snapshot(seeded_db) == before


def test_a_hostile_export_reimported_adds_nothing(seeded_db, tmp_path):
    out = tmp_path / "export.csv"
    runner = CliRunner()
    exported = runner.invoke(cli, ["export", "--out", str(out), "--db", str(seeded_db)])
    assert exported.exit_code == 0, exported.output
    before = snapshot(seeded_db)
    result = runner.invoke(cli, ["import", str(out), "--db", str(seeded_db)])
    assert result.exit_code == 0, result.output
    assert "3 rows already stored, 0 imported" in result.stdout
    assert snapshot(seeded_db) == before


NASTY_CELLS = (
    "",
    " ",
    "\x00",
    "=1+1",
    "'=1+1",
    "'",
    '"',
    "\n",
    "\r\n",
    "\t",
    "\u202e",
    "nan",
    "-inf",
    "1e308",
    "-0",
    "0.001",
    "99999999999999999999999999",
    "SW-0",
    "SW-1",
    "SW-3",
    "SW-999999999999",
    "SW-9999999999999",
    "X1",
    "2025-26/P-5",
    "2025-26/P99999999999999999999",
    "0001-01-01",
    "9999-12-31T23:59:59-23:59",
    "<b>x</b>",
    "Bihar",
    "Patna",
    "A" * 300,
    "é",
    "२",
)


def _mutate(rng, text: str) -> bytes:
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(5)
        index = rng.randrange(len(lines))
        if choice == 0:  # a nasty cell
            cells = lines[index].rstrip("\n").split(",")
            cells[rng.randrange(len(cells))] = rng.choice(NASTY_CELLS)
            lines[index] = ",".join(cells) + "\n"
        elif choice == 1:  # a repeated line
            lines.insert(index, lines[index])
        elif choice == 2 and len(lines) > 1:  # a lost line
            del lines[index]
        elif choice == 3:  # a random character
            position = rng.randrange(len(lines[index]) + 1)
            character = chr(rng.choice((0, 9, 10, 13, 34, 39, 44, 0xFEFF, rng.randrange(0x2FFF))))
            lines[index] = lines[index][:position] + character + lines[index][position:]
        else:  # a swapped cell
            cells = lines[index].rstrip("\n").split(",")
            i, j = rng.randrange(len(cells)), rng.randrange(len(cells))
            cells[i], cells[j] = cells[j], cells[i]
            lines[index] = ",".join(cells) + "\n"
    data = "".join(lines).encode("utf-8", "surrogatepass")
    if rng.random() < 0.05:
        data = data[: rng.randrange(len(data) + 1)] + bytes([rng.randrange(256)])
    return data


def test_randomly_mangled_files_are_rejected_cleanly_or_imported(seeded_db, tmp_path):
    rng = random.Random(11)
    base = HEADER + "".join(line(external_id=f"M{i}", beneficiary_id=f"MB{i}") for i in range(4))
    conn = store.open_database(seeded_db)
    outcomes = {"imported": 0, "rejected": 0}
    for attempt in range(400):
        path = tmp_path / f"mangled-{attempt}.csv"
        path.write_bytes(_mutate(rng, base))
        before = snapshot(seeded_db)
        try:
            importer.import_csv(conn, path)
        except SchemewatchError as exc:
            assert str(exc).startswith("row ") and "\n" not in str(exc)
            assert snapshot(seeded_db) == before, path.read_bytes()
            outcomes["rejected"] += 1
        else:
            outcomes["imported"] += 1
    conn.close()
    assert outcomes["rejected"] > 100 and outcomes["imported"] > 10
