"""One row of a transaction extract: each column's rules, and the validated Payment.

Every cell is at most MAX_CELL_LENGTH characters with no control or invisible characters; ids
are at most MAX_ID_LENGTH printable characters. Amounts are rupees in whole paise (at most two
decimals, no exponent), positive and below the scheme's absurd limit. Periods follow the scheme's
calendar (schemes.py). State and district, when given, must name a district of that state in our
table (case and spacing ignored) and are stored under the table's spelling.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from schemewatch import geography, schemes, store
from schemewatch.exporter import FORMULA_STARTS, IST
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
AMOUNT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
COORDINATE_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
NOT_FINITE = {"nan", "inf", "infinity", "snan"}
PAISA = Decimal("0.01")
YEAR_SECONDS = 366 * schemes.DAY


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
