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
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from schemewatch import geography, schemes, store
from schemewatch.errors import ImportRejected
from schemewatch.exporter import FORMULA_STARTS, IST, PrivateOutput, iso_timestamp, neutralise
from schemewatch.geography import load_districts, nearest_district
from schemewatch.payments import NORMAL, TYPOLOGIES

REQUIRED_COLUMNS = ("beneficiary_id", "scheme", "amount", "timestamp", "latitude", "longitude")
OPTIONAL_COLUMNS = (
    "account_id",
    "agent_id",
    "channel",
    "external_id",
    "instalment_period",
    "state",
    "district",
    "label",
    "group_id",
)
KNOWN_COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
EARLIEST = datetime(2000, 1, 1, tzinfo=IST).timestamp()
MAX_ID_LENGTH = 64
MAX_CELL_LENGTH = 200  # no value of the format is longer; ids are held to MAX_ID_LENGTH
CHUNK = 5_000
# The id an export gives a transaction that has no external id: our own transaction id.
OWN_ID = re.compile(r"SW-([1-9][0-9]{0,11})")
AMOUNT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
COORDINATE_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
NOT_FINITE = {"nan", "inf", "infinity", "snan"}
PAISA = Decimal("0.01")
YEAR_SECONDS = 366 * schemes.DAY
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


@dataclass
class Payment:
    """One validated row, ready to store."""

    row: int
    external_id: str | None
    beneficiary_id: str
    scheme: str
    period: str
    amount: float
    paid_at: int
    latitude: float
    longitude: float
    account_id: str | None
    agent_id: str | None
    channel: str | None
    state: str | None
    district: str | None
    label: str | None
    group_id: str | None
    own_number: int | None = None  # n of an `SW-<n>` external id from another database

    def identity(self) -> tuple:
        """The values compared with a stored payment (store.PAYMENT_IDENTITY_COLUMNS order)."""
        return (
            self.beneficiary_id,
            self.scheme,
            self.period,
            self.amount,
            self.paid_at,
            self.latitude,
            self.longitude,
            self.account_id,
            self.agent_id,
            self.channel,
        )


class RowError(ValueError):
    """A value that fails validation, with the column it came from."""

    def __init__(self, column: str, reason: str):
        super().__init__(reason)
        self.column = column


def shown(value: str, limit: int = 40) -> str:
    """A cell as quoted in a message: one line, invisible characters escaped, long text cut."""
    text = "".join(
        c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
        for c in value[:limit]
    )
    more = f"... ({len(value):,} characters)" if len(value) > limit else ""
    return f"'{text}{more}'"


def _invisible(value: str) -> str | None:
    """The first control, format or separator character that has no business in a cell."""
    for c in value:
        if unicodedata.category(c)[0] in "CZ" and c != " ":
            return c
    return None


def _unneutralise(cell: str) -> str:
    """Undo the apostrophe our export puts before formula-like text."""
    if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS):
        return cell[1:]
    return cell.strip()


def _file_problem(row: int, reason: str) -> ImportRejected:
    return ImportRejected([Problem(row, None, reason)], 0)


def _decoded_lines(path: Path):
    """Yield (line number, text) pairs; a line that is not UTF-8 is a file-level problem."""
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


def _coordinate(value: str, column: str, bound: int) -> float:
    if value.lower().lstrip("+-") in NOT_FINITE:
        raise RowError(column, f"{shown(value)} is not a finite number")
    if not COORDINATE_TEXT.fullmatch(value):
        raise RowError(column, f"{shown(value)} is not a number of decimal degrees")
    number = float(value)
    if not -bound <= number <= bound:
        raise RowError(column, f"{shown(value)} is off the globe (must be -{bound} to {bound})")
    return number


def _amount(value: str, scheme: str) -> float:
    """Rupees in whole paise: positive, at most 2 decimals, below the scheme's absurd limit."""
    if value.lower().lstrip("+-") in NOT_FINITE:
        raise RowError("amount", f"{shown(value)} is not a finite number")
    if not AMOUNT_TEXT.fullmatch(value):
        raise RowError(
            "amount", f"{shown(value)} is not a number of rupees (write e.g. 2000 or 2000.50)"
        )
    amount = Decimal(value)
    if amount <= 0:
        raise RowError("amount", f"amount must be positive, got {shown(value)}")
    limit = schemes.SCHEMES[scheme].absurd_amount
    if amount >= limit:
        raise RowError(
            "amount", f"amount {shown(value)} is absurd for {scheme} (limit {limit:,.0f})"
        )
    if amount != amount.quantize(PAISA):
        raise RowError(
            "amount",
            f"amount {shown(value)} has more than 2 decimal places; amounts are whole paise",
        )
    return float(amount)


def _timestamp(value: str) -> int:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RowError("timestamp", f"{shown(value)} is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=IST)
    try:
        seconds = moment.timestamp()
    except (ValueError, OverflowError):
        seconds = float("-inf")  # so far in the past that it has no unix time
    if not EARLIEST <= seconds <= store.now() + 86_400:
        raise RowError("timestamp", f"{shown(value)} is before 2000 or in the future")
    return int(seconds)


def _period(value: str, scheme: str, paid_at: int) -> str:
    """A label of the scheme's calendar, starting no earlier than 2000 and at most a year
    after the payment; derived from the payment's time when empty."""
    expected = schemes.period_for_payment(scheme, paid_at)
    if not value:
        return expected
    if not schemes.is_valid_period(scheme, value):
        raise RowError(
            "instalment_period",
            f"{shown(value)} is not a valid period for {scheme} (e.g. '{expected}')",
        )
    start = schemes.period_start(scheme, value)
    if not EARLIEST <= start <= paid_at + YEAR_SECONDS:
        raise RowError(
            "instalment_period",
            f"period {shown(value)} starts before 2000 or more than a year after the payment",
        )
    return value


def _identifier(value: str, column: str, required: bool) -> str | None:
    if not value:
        if required:
            raise RowError(column, "value is empty")
        return None
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise RowError(column, f"must be at most {MAX_ID_LENGTH} printable characters")
    return value


def _place(state: str, district: str) -> tuple[str | None, str | None]:
    """Canonical (state, district) from our district table; both empty means 'not given'."""
    if not state and not district:
        return None, None
    if not state or not district:
        missing = "state" if not state else "district"
        raise RowError(missing, "give state and district together, or leave both empty")
    canonical = geography.canonical_state(state)
    if canonical is None:
        raise RowError(
            "state",
            f"{shown(state)} is not a state or union territory in Schemewatch's district table",
        )
    name = geography.canonical_district(canonical, district)
    if name is None:
        raise RowError(
            "district",
            f"{shown(district)} is not a district of {canonical} in Schemewatch's district table "
            "(schemewatch/data/districts.csv); leave state and district empty to use the "
            "district nearest the payout",
        )
    return canonical, name


def _cell_values(cells: list[str], columns: dict[str, int]) -> dict[str, str]:
    """Each known column's value; refuses absurd lengths and invisible characters anywhere."""
    values = {}
    for name, index in columns.items():
        value = _unneutralise(cells[index])
        if len(value) > MAX_CELL_LENGTH:
            raise RowError(
                name, f"value is {len(value):,} characters long (at most {MAX_CELL_LENGTH})"
            )
        bad = _invisible(value)
        if bad is not None:
            raise RowError(
                name, f"value contains a control or invisible character (U+{ord(bad):04X})"
            )
        values[name] = value
    return values


def parse_row(row: int, cells: list[str], columns: dict[str, int]) -> Payment:
    """Validate one record; raises RowError naming the column and reason."""
    values = _cell_values(cells, columns)

    def get(name: str) -> str:
        return values.get(name, "")

    for name in REQUIRED_COLUMNS:
        if not get(name):
            raise RowError(name, "value is empty")
    scheme = schemes.normalise_scheme(get("scheme"))
    if scheme is None:
        known = ", ".join(schemes.SCHEME_CODES)
        raise RowError("scheme", f"unknown scheme {shown(get('scheme'))} (known: {known})")
    amount = _amount(get("amount"), scheme)
    paid_at = _timestamp(get("timestamp"))
    latitude = _coordinate(get("latitude"), "latitude", 90)
    longitude = _coordinate(get("longitude"), "longitude", 180)
    period = _period(get("instalment_period"), scheme, paid_at)
    channel = get("channel").upper() or None
    if channel is not None and channel not in schemes.CHANNELS:
        raise RowError(
            "channel", f"unknown channel {shown(channel)} (known: {', '.join(schemes.CHANNELS)})"
        )
    label = get("label").lower() or None
    if label == NORMAL:
        label = None
    if label is not None and label not in TYPOLOGIES:
        raise RowError("label", f"unknown typology {shown(label)} (known: {', '.join(TYPOLOGIES)})")
    state, district = _place(get("state"), get("district"))
    return Payment(
        row=row,
        external_id=_identifier(get("external_id"), "external_id", False),
        beneficiary_id=_identifier(get("beneficiary_id"), "beneficiary_id", True),
        scheme=scheme,
        period=period,
        amount=amount,
        paid_at=paid_at,
        latitude=latitude,
        longitude=longitude,
        account_id=_identifier(get("account_id"), "account_id", False),
        agent_id=_identifier(get("agent_id"), "agent_id", False),
        channel=channel,
        state=state,
        district=district,
        label=label,
        group_id=_identifier(get("group_id"), "group_id", False),
    )


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

    With `skip_invalid`, the rejects file is opened before anything is read (an unwritable path
    fails at once) and moved into place before the commit, so either the valid rows are stored
    and the rejects file exists, or neither.
    """
    records = _records(Path(path))
    header, columns = _header(records)
    rejects = PrivateOutput(rejects_path, replace=True) if skip_invalid and rejects_path else None
    try:
        with store.write_transaction(conn):
            run = _ImportRun(conn, header, columns, skip_invalid)
            for row, cells in records:
                run.add(row, cells)
            run.finish()
            if rejects is not None and run.rejected:
                rejects.write(_rejects_rows(header, run.rejected))
                rejects.publish()
    except BaseException:
        if rejects is not None:
            rejects.withdraw()
        raise
    if rejects is not None:
        rejects.discard()
    return ImportResult(
        run.loader.imported, run.loader.new_beneficiaries, len(run.rejected), run.already_stored
    )


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
    return shown(str(value))


def _rejects_rows(header: list[str], rejected):
    """The rejects file: row, column and reason, then the original cells, formulas disarmed."""
    yield ["row", "column", "reason", *header]
    for cells, problem in sorted(rejected, key=lambda item: item[1].row):
        yield [neutralise(c) for c in (str(problem.row), problem.column or "", problem.reason)] + [
            neutralise(c) for c in cells
        ]
