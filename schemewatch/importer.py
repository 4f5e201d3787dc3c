"""Import a transaction extract (CSV) in the documented format.

Required columns: beneficiary_id, scheme, amount, timestamp (ISO 8601; IST when no offset),
latitude, longitude. Optional: account_id, agent_id, channel, external_id, instalment_period,
state, district, label (a known typology; evaluation only), group_id.

Any bad row rejects the whole file (nothing is written) unless `skip_invalid`, in which case the
valid rows are loaded and the rejected ones go to a side file with their reasons. Unknown
beneficiaries are registered from their first row.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from schemewatch import schemes, store
from schemewatch.errors import ImportRejected
from schemewatch.exporter import FORMULA_STARTS, IST
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
EARLIEST = datetime(2000, 1, 1, tzinfo=IST).timestamp()
MAX_ID_LENGTH = 64
CHUNK = 5_000


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
    """What an import wrote."""

    imported: int
    new_beneficiaries: int
    rejected: int


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


class RowError(ValueError):
    """A value that fails validation, with the column it came from."""

    def __init__(self, column: str, reason: str):
        super().__init__(reason)
        self.column = column


def _unneutralise(cell: str) -> str:
    """Undo the apostrophe our export puts before formula-like text."""
    if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS):
        return cell[1:]
    return cell.strip()


def _decoded_lines(path: Path):
    """Yield (line number, text) pairs; a line that is not UTF-8 is a file-level problem."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ImportRejected(
                    [
                        Problem(
                            number,
                            None,
                            f"not UTF-8 text (byte {raw[exc.start]:#04x}); save the file as UTF-8",
                        )
                    ],
                    0,
                ) from None


def _records(path: Path):
    """(row number, cells) for each CSV record, header included."""
    numbered = _decoded_lines(path)
    current = {"line": 0}

    def lines():
        for number, text in numbered:
            current["line"] = number
            yield text

    reader = csv.reader(lines())
    try:
        for cells in reader:
            yield current["line"], cells
    except csv.Error as exc:
        raise ImportRejected([Problem(current["line"], None, f"malformed CSV: {exc}")], 0) from None


def _header(records) -> tuple[list[str], dict[str, int]]:
    first = next(records, None)
    if first is None or not any(c.strip() for c in first[1]):
        raise ImportRejected([Problem(1, None, "the file is empty (no header row)")], 0)
    names = [c.strip().lower() for c in first[1]]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ImportRejected([Problem(1, duplicates[0], "column appears twice in the header")], 0)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        problems = [Problem(1, c, "required column is missing") for c in missing]
        raise ImportRejected(problems, 0)
    return first[1], {n: i for i, n in enumerate(names)}


def _number(value: str, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise RowError(column, f"'{value}' is not a number") from None
    if not math.isfinite(number):
        raise RowError(column, f"'{value}' is not a finite number")
    return number


def _timestamp(value: str) -> int:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RowError("timestamp", f"'{value}' is not an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=IST)
    seconds = moment.timestamp()
    if not EARLIEST <= seconds <= store.now() + 86_400:
        raise RowError("timestamp", f"'{value}' is before 2000 or in the future")
    return int(seconds)


def _identifier(value: str, column: str, required: bool) -> str | None:
    if not value:
        if required:
            raise RowError(column, "value is empty")
        return None
    if len(value) > MAX_ID_LENGTH or not value.isprintable():
        raise RowError(column, f"must be at most {MAX_ID_LENGTH} printable characters")
    return value


def parse_row(row: int, cells: list[str], columns: dict[str, int]) -> Payment:
    """Validate one record; raises RowError naming the column and reason."""

    def get(name: str) -> str:
        index = columns.get(name)
        return "" if index is None else _unneutralise(cells[index])

    for name in REQUIRED_COLUMNS:
        if not get(name):
            raise RowError(name, "value is empty")
    scheme = schemes.normalise_scheme(get("scheme"))
    if scheme is None:
        known = ", ".join(schemes.SCHEME_CODES)
        raise RowError("scheme", f"unknown scheme '{get('scheme')}' (known: {known})")
    amount = _number(get("amount"), "amount")
    if amount <= 0:
        raise RowError("amount", f"amount must be positive, got {get('amount')}")
    limit = schemes.SCHEMES[scheme].absurd_amount
    if amount >= limit:
        raise RowError(
            "amount", f"amount {amount:,.2f} is absurd for {scheme} (limit {limit:,.0f})"
        )
    paid_at = _timestamp(get("timestamp"))
    latitude, longitude = (
        _number(get("latitude"), "latitude"),
        _number(get("longitude"), "longitude"),
    )
    if not -90 <= latitude <= 90:
        raise RowError("latitude", f"{latitude} is off the globe (must be -90 to 90)")
    if not -180 <= longitude <= 180:
        raise RowError("longitude", f"{longitude} is off the globe (must be -180 to 180)")
    period = get("instalment_period") or schemes.period_for_payment(scheme, paid_at)
    if not schemes.is_valid_period(scheme, period):
        raise RowError("instalment_period", f"'{period}' is not a valid period for {scheme}")
    channel = get("channel").upper() or None
    if channel is not None and channel not in schemes.CHANNELS:
        raise RowError(
            "channel", f"unknown channel '{channel}' (known: {', '.join(schemes.CHANNELS)})"
        )
    label = get("label").lower() or None
    if label == NORMAL:
        label = None
    if label is not None and label not in TYPOLOGIES:
        raise RowError("label", f"unknown typology '{label}' (known: {', '.join(TYPOLOGIES)})")
    return Payment(
        row=row,
        external_id=_identifier(get("external_id"), "external_id", False),
        beneficiary_id=_identifier(get("beneficiary_id"), "beneficiary_id", True),
        scheme=scheme,
        period=period,
        amount=round(amount, 2),
        paid_at=paid_at,
        latitude=latitude,
        longitude=longitude,
        account_id=_identifier(get("account_id"), "account_id", False),
        agent_id=_identifier(get("agent_id"), "agent_id", False),
        channel=channel,
        state=get("state") or None,
        district=get("district") or None,
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
        known = set(zip(districts.state.tolist(), districts.name.tolist(), strict=True))
        people = []
        for p in payments:
            if p.beneficiary_id in self.homes:
                continue
            if (p.state, p.district) in known or (p.state and p.district):
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
    """Validate and load an extract in one transaction; see the module docstring for the rules."""
    records = _records(Path(path))
    header, columns = _header(records)
    problems: list[Problem] = []
    rejected_rows: list[tuple[list[str], Problem]] = []
    seen_external: set[str] = set()
    total = 0
    with store.write_transaction(conn):
        loader = _Loader(conn)
        batch: list[tuple[Payment, list[str]]] = []
        for row, cells in records:
            if not any(c.strip() for c in cells):
                continue
            total += 1
            problem = _check(row, cells, columns, header, seen_external, batch)
            if problem is not None:
                problems.append(problem)
                rejected_rows.append((cells, problem))
            if len(batch) >= CHUNK:
                _flush(conn, loader, batch, problems, rejected_rows, skip_invalid)
        _flush(conn, loader, batch, problems, rejected_rows, skip_invalid)
        if total == 0:
            raise ImportRejected([Problem(2, None, "the file has a header but no data rows")], 0)
        if problems and not skip_invalid:
            raise ImportRejected(sorted(problems, key=lambda p: p.row), total)
    if rejected_rows and rejects_path is not None:
        _write_rejects(rejects_path, header, rejected_rows)
    return ImportResult(loader.imported, loader.new_beneficiaries, len(rejected_rows))


def _check(row, cells, columns, header, seen_external, batch) -> Problem | None:
    if len(cells) != len(header):
        return Problem(row, None, f"expected {len(header)} fields, found {len(cells)}")
    try:
        payment = parse_row(row, cells, columns)
    except RowError as exc:
        return Problem(row, exc.column, str(exc))
    if payment.external_id is not None:
        if payment.external_id in seen_external:
            return Problem(row, "external_id", f"'{payment.external_id}' appears twice in the file")
        seen_external.add(payment.external_id)
    batch.append((payment, cells))
    return None


def _flush(conn, loader: _Loader, batch, problems, rejected_rows, skip_invalid: bool) -> None:
    """Reject rows whose external id is already stored; load the rest of the batch.

    Once a problem is found without `skip_invalid`, rows are only validated, never written.
    """
    external = [p.external_id for p, _ in batch if p.external_id]
    stored = store.existing_external_ids(conn, external)
    keep = []
    for payment, cells in batch:
        if payment.external_id in stored:
            reason = f"'{payment.external_id}' is already imported"
            problem = Problem(payment.row, "external_id", reason)
            problems.append(problem)
            rejected_rows.append((cells, problem))
        else:
            keep.append(payment)
    if keep and (skip_invalid or not problems):
        loader.load(keep)
    batch.clear()


def _write_rejects(path: Path, header: list[str], rejected) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "column", "reason", *header])
        for cells, problem in rejected:
            writer.writerow([problem.row, problem.column or "", problem.reason, *cells])
