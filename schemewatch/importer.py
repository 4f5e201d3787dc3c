"""Import a transaction extract (CSV) in the documented format.

Required columns: beneficiary_id, scheme, amount, timestamp (ISO 8601; IST when no offset),
latitude, longitude. Optional: account_id, agent_id, channel, external_id, instalment_period,
state, district, label (a known typology; evaluation only), group_id. Other columns are refused.

Any bad row rejects the whole file (nothing is written) unless `skip_invalid`, in which case the
valid rows are loaded and the rejected ones go to a side file with their reasons; that file is
in place before the import commits, or the import does not commit. Unknown beneficiaries are
registered from their first row.

Importing is idempotent: a row whose external_id is already stored with the same payment is
skipped, and so is a row carrying `SW-<n>` (how an export names a transaction that has no
external id) when this database's transaction n is that same payment. A stored id with a
different payment is a problem of that row.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from schemewatch import schemes, store
from schemewatch.errors import ImportRejected, OutputError, SchemewatchError
from schemewatch.exporter import PrivateOutput, iso_timestamp, neutralise
from schemewatch.geography import load_districts, nearest_district
from schemewatch.import_rows import (
    KNOWN_COLUMNS,
    REQUIRED_COLUMNS,
    Payment,
    RowError,
    parse_row,
    shown,
)

CHUNK = 5_000
# The id an export gives a transaction that has no external id: our own transaction id.
OWN_ID = re.compile(r"SW-([1-9][0-9]{0,11})")

# What identifies a payment, named as the import columns (store.PAYMENT_IDENTITY_COLUMNS order).
IDENTITY_COLUMNS = tuple(
    "timestamp" if c == "paid_at" else c for c in store.PAYMENT_IDENTITY_COLUMNS
)


@dataclass(frozen=True)
class Problem:
    """Why one row (1 = header line) was rejected."""

    row: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f", column '{self.column}'" if self.column else ""
        return f"row {self.row}{where}: {self.reason}"


@dataclass(frozen=True)
class ImportResult:
    """What an import wrote and what it recognised as already stored."""

    imported: int
    new_beneficiaries: int
    rejected: int
    already_stored: int = 0


def _file_problem(row: int, reason: str) -> ImportRejected:
    return ImportRejected([Problem(row, None, reason)], 0)


def _decoded_lines(path: Path):
    """Yield (line number, text) pairs; a line that is not UTF-8 is a file-level problem."""
    try:
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1:
                    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                        raise _file_problem(1, "the file is UTF-16 text; save it as UTF-8 CSV")
                    if raw.startswith(b"\xef\xbb\xbf"):
                        raw = raw[3:]
                try:
                    yield number, raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    byte = raw[exc.start]
                    raise _file_problem(
                        number, f"not UTF-8 text (byte {byte:#04x}); save the file as UTF-8"
                    ) from None
    except OSError as exc:
        raise SchemewatchError(
            f"cannot read {path}: {exc.strerror or exc}; nothing was imported"
        ) from None


def _records(path: Path):
    """(row number, cells) for each CSV record, header included."""
    numbered = _decoded_lines(path)
    current = {"line": 0}

    def lines():
        for number, text in numbered:
            current["line"] = number
            yield text

    reader = csv.reader(lines(), strict=True)
    previous_end = 0
    try:
        for cells in reader:
            yield previous_end + 1, cells  # a quoted field may span lines: name the first
            previous_end = current["line"]
    except csv.Error as exc:
        raise _file_problem(current["line"], f"malformed CSV: {exc}") from None


def _header(records) -> tuple[list[str], dict[str, int]]:
    first = next(records, None)
    if first is None or not any(c.strip() for c in first[1]):
        raise _file_problem(1, "the file is empty (no header row)")
    if any("\x00" in c for c in first[1]):
        raise _file_problem(
            1, "the header has NUL bytes (UTF-16 text?); save the file as UTF-8 CSV"
        )
    names = [c.strip().lower() for c in first[1]]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if len(missing) == len(REQUIRED_COLUMNS):
        raise _file_problem(
            1,
            "no header row: the first line must name the columns "
            f"({', '.join(REQUIRED_COLUMNS)} are required); found {shown(','.join(first[1]))}",
        )
    if missing:
        raise ImportRejected([Problem(1, c, "required column is missing") for c in missing], 0)
    unknown = [n for n in names if n not in KNOWN_COLUMNS]
    if unknown:
        listed = ", ".join(shown(n, 30) for n in unknown[:5])
        more = f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
        raise _file_problem(
            1,
            f"unknown column {listed}{more} in the header (known: {', '.join(KNOWN_COLUMNS)})",
        )
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ImportRejected([Problem(1, duplicates[0], "column appears twice in the header")], 0)
    return first[1], {n: i for i, n in enumerate(names)}


class _Loader:
    """Writes validated rows inside the caller's transaction, registering new beneficiaries."""

    def __init__(self, conn):
        self.conn = conn
        self.next_id = store.next_transaction_id(conn)
        self.homes: dict[str, tuple[str, str]] = {}
        self.enrolled: set[tuple[str, str]] = set()
        self.new_beneficiaries = 0
        self.imported = 0

    def load(self, payments: list[Payment]) -> None:
        ids = [p.beneficiary_id for p in payments]
        self.homes.update(
            store.beneficiary_homes(self.conn, [i for i in ids if i not in self.homes])
        )
        self._register([p for p in payments if p.beneficiary_id not in self.homes])
        self._enrol(payments)
        rows, truth = [], []
        for payment in payments:
            state, district = self.homes[payment.beneficiary_id]
            # A copied SW-<n> keeps its number when free (beyond our last id), so our own
            # transaction n can never be exported as SW-<n> beside it.
            self.next_id = max(self.next_id, payment.own_number or 0)
            rows.append(
                (
                    self.next_id,
                    payment.external_id,
                    payment.beneficiary_id,
                    payment.scheme,
                    payment.period,
                    payment.amount,
                    payment.paid_at,
                    payment.latitude,
                    payment.longitude,
                    payment.account_id,
                    payment.agent_id,
                    payment.channel,
                    state,
                    district,
                    store.now(),
                )
            )
            if payment.label:
                truth.append((self.next_id, payment.label, payment.group_id or f"R{payment.row}"))
            self.next_id += 1
        store.insert_transactions(self.conn, rows)
        store.insert_ground_truth(self.conn, truth)
        self.imported += len(rows)

    def _register(self, payments: list[Payment]) -> None:
        districts = load_districts()
        people = []
        for p in payments:
            if p.beneficiary_id in self.homes:
                continue
            if p.state is not None and p.district is not None:  # checked against our table
                home = (p.state, p.district)
            else:
                nearest = nearest_district(p.latitude, p.longitude)
                home = (str(districts.state[nearest]), str(districts.name[nearest]))
            self.homes[p.beneficiary_id] = home
            masked = (
                None
                if p.account_id is None
                else "X" * max(0, len(p.account_id) - 4) + p.account_id[-4:]
            )
            people.append(
                (
                    p.beneficiary_id,
                    home[0],
                    home[1],
                    p.latitude,
                    p.longitude,
                    p.account_id,
                    masked,
                    None,
                    "import",
                    None,
                    "active",
                    None,
                    store.now(),
                )
            )
        store.insert_beneficiaries(self.conn, people)
        self.new_beneficiaries += len(people)

    def _enrol(self, payments: list[Payment]) -> None:
        pairs = {(p.beneficiary_id, p.scheme) for p in payments} - self.enrolled
        existing = store.existing_enrolments(self.conn, pairs)
        new = sorted(pairs - existing)
        store.insert_enrolments(
            self.conn,
            [(b, s, schemes.standard_entitlement(s, self.homes[b][0]), None) for b, s in new],
        )
        self.enrolled |= pairs


def import_csv(conn, path: Path, *, skip_invalid: bool = False, rejects_path: Path | None = None):
    """Validate and load an extract in one transaction; see the module docstring for the rules.

    With `skip_invalid`, a rejects path in a missing folder or naming a file that is not an
    earlier rejects file is refused before any row is read. Rejected rows are written to a
    temporary file that is moved into place before the commit; if that fails nothing is
    committed, so either the valid rows are stored and the rejects file exists, or neither.
    """
    records = _records(Path(path))
    header, columns = _header(records)
    keep_rejects = skip_invalid and rejects_path is not None
    if keep_rejects:
        _check_rejects_path(Path(rejects_path))
    rejects = None
    try:
        with store.write_transaction(conn):
            run = _ImportRun(conn, header, columns, skip_invalid)
            for row, cells in records:
                run.add(row, cells)
            run.finish()
            if keep_rejects and run.rejected:
                rejects = PrivateOutput(Path(rejects_path), replace=True)
                rejects.write(_rejects_rows(header, run.rejected))
                rejects.publish()
    except BaseException:
        if rejects is not None:
            rejects.withdraw()
        raise
    return ImportResult(
        run.loader.imported, run.loader.new_beneficiaries, len(run.rejected), run.already_stored
    )


REJECTS_HEADER = ("row", "column", "reason")


def _check_rejects_path(path: Path) -> None:
    """Refuse a rejects path whose folder is missing or that would replace any other file."""
    if not path.parent.is_dir():
        raise OutputError(f"cannot write {path}: the folder does not exist; nothing was imported")
    if not path.exists():
        return
    try:
        with open(path, "rb") as handle:
            first = handle.read(len(",".join(REJECTS_HEADER)))
    except OSError:
        first = b""
    if first.decode("utf-8", "replace") != ",".join(REJECTS_HEADER):
        raise OutputError(f"{path} exists and is not a rejects file; choose another --rejects path")


class _ImportRun:
    """One import inside its write transaction: validates rows, recognises stored ones, loads."""

    def __init__(self, conn, header: list[str], columns: dict[str, int], skip_invalid: bool):
        self.conn = conn
        self.header = header
        self.columns = columns
        self.skip_invalid = skip_invalid
        self.loader = _Loader(conn)
        self.problems: list[Problem] = []
        self.rejected: list[tuple[list[str], Problem]] = []
        self.seen_external: set[str] = set()
        self.batch: list[Payment] = []
        self.cells: dict[int, list[str]] = {}
        self.total = 0
        self.already_stored = 0

    def add(self, row: int, cells: list[str]) -> None:
        if not any(c.strip() for c in cells):
            return  # blank lines are allowed anywhere
        self.total += 1
        problem = self._check(row, cells)
        if problem is not None:
            self._reject(cells, problem)
        if len(self.batch) >= CHUNK:
            self._flush()

    def finish(self) -> None:
        self._flush()
        if self.total == 0:
            raise _file_problem(2, "the file has a header but no data rows")
        if self.problems and not self.skip_invalid:
            raise ImportRejected(sorted(self.problems, key=lambda p: p.row), self.total)

    def _reject(self, cells: list[str], problem: Problem) -> None:
        self.problems.append(problem)
        self.rejected.append((cells, problem))

    def _check(self, row: int, cells: list[str]) -> Problem | None:
        if len(cells) != len(self.header):
            return Problem(row, None, f"expected {len(self.header)} fields, found {len(cells)}")
        try:
            payment = parse_row(row, cells, self.columns)
        except RowError as exc:
            return Problem(row, exc.column, str(exc))
        if payment.external_id is not None:
            if payment.external_id in self.seen_external:
                reason = f"{shown(payment.external_id)} appears twice in the file"
                return Problem(row, "external_id", reason)
            self.seen_external.add(payment.external_id)
        self.batch.append(payment)
        self.cells[row] = cells
        return None

    def _flush(self) -> None:
        """Skip rows already stored, reject conflicting ones, load the rest of the batch.

        Once a problem is found without `skip_invalid`, rows are only checked, never written.
        """
        external = [p.external_id for p in self.batch if p.external_id]
        by_external = store.stored_payments_by_external_id(self.conn, external)
        own = [int(m.group(1)) for e in external if (m := OWN_ID.fullmatch(e))]
        by_number = store.stored_payments_by_transaction_id(self.conn, own)
        new = []
        for payment in self.batch:
            cells = self.cells.pop(payment.row)
            stored, clash = _recognise(payment, by_external, by_number)
            if stored:
                self.already_stored += 1
            elif clash is not None:
                self._reject(cells, clash)
            else:
                new.append(payment)
        if new and (self.skip_invalid or not self.problems):
            self.loader.load(new)
        self.batch.clear()


def _recognise(payment: Payment, by_external: dict, by_number: dict) -> tuple[bool, Problem | None]:
    """(already stored, clash): whether this payment is stored, or a Problem if its id is taken.

    Sets `own_number` on a copied `SW-<n>` row, so that it keeps its number when it can.
    """
    external = payment.external_id
    if external is None:
        return False, None
    if external in by_external:
        clash = _difference(payment, by_external[external], f"{shown(external)} is already stored")
        return clash is None, clash
    match = OWN_ID.fullmatch(external)
    if match is None:
        return False, None
    number = int(match.group(1))
    stored = by_number.get(number)
    if stored is not None and stored[0] is None:
        clash = _difference(
            payment, stored[1:], f"{shown(external)} is this database's transaction {number}"
        )
        return clash is None, clash
    payment.own_number = number
    return False, None


def _difference(payment: Payment, stored: tuple, clash: str) -> Problem | None:
    """None when the stored payment is this one; else a Problem naming the first difference."""
    for column, stored_value, file_value in zip(
        IDENTITY_COLUMNS, stored, payment.identity(), strict=True
    ):
        if stored_value != file_value:
            was, now = (_display(column, v) for v in (stored_value, file_value))
            reason = f"{clash}, with a different {column} (stored {was}, this file has {now})"
            return Problem(payment.row, column, reason)
    return None


def _display(column: str, value) -> str:
    if value is None:
        return "nothing"
    if column == "timestamp":
        return iso_timestamp(value)
    if column == "amount":
        return f"{value:.2f}"
    return shown(str(value))


def _rejects_rows(header: list[str], rejected):
    """The rejects file: row, column and reason, then the original cells, formulas disarmed."""
    yield [*REJECTS_HEADER, *header]
    for cells, problem in sorted(rejected, key=lambda item: item[1].row):
        yield [neutralise(c) for c in (str(problem.row), problem.column or "", problem.reason)] + [
            neutralise(c) for c in cells
        ]
