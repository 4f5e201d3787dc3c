"""The welfare schemes Schemewatch knows: entitlements, instalment periods and their windows.

Times are unix seconds (UTC); scheme calendars run in Indian Standard Time (UTC+05:30).
An instalment period is a label such as "2025-26/P1" (PM-KISAN), "2025-07" (pension),
"2025-07-F2" (MGNREGA fortnight), "2025-26" (scholarship year) or "2025-26/I2" (housing).
Each label has a payment window; a payment outside its period's window is off-cycle.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import numpy as np

IST_OFFSET_SECONDS = 19_800
DAY = 86_400


@dataclass(frozen=True)
class Scheme:
    """One scheme: its code, plain name, cadence and how its money usually reaches people."""

    code: str
    name: str
    cadence: str
    channel_mix: tuple[tuple[str, float], ...]
    absurd_amount: float  # no single instalment of this scheme is ever this large


PM_KISAN = "PM_KISAN"
OLD_AGE_PENSION = "OLD_AGE_PENSION"
MGNREGA = "MGNREGA"
SCHOLARSHIP = "SCHOLARSHIP"
PMAY_G = "PMAY_G"

CHANNELS = ("BANK", "AEPS", "POST", "CASH")
AGENT_CHANNELS = ("AEPS", "POST", "CASH")

SCHEMES: dict[str, Scheme] = {
    PM_KISAN: Scheme(
        PM_KISAN,
        "PM-KISAN income support (Rs 2,000 per four-month period)",
        "four_monthly",
        (("BANK", 0.7), ("AEPS", 0.3)),
        100_000,
    ),
    OLD_AGE_PENSION: Scheme(
        OLD_AGE_PENSION,
        "Old-age pension (IGNOAPS central share plus state top-up, monthly)",
        "monthly",
        (("BANK", 0.4), ("POST", 0.35), ("AEPS", 0.15), ("CASH", 0.1)),
        150_000,
    ),
    MGNREGA: Scheme(
        MGNREGA,
        "MGNREGA wages (state rate x days worked, per fortnightly muster roll)",
        "fortnightly",
        (("BANK", 0.55), ("POST", 0.2), ("AEPS", 0.25)),
        200_000,
    ),
    SCHOLARSHIP: Scheme(
        SCHOLARSHIP,
        "Post-matric scholarship (yearly)",
        "yearly",
        (("BANK", 1.0),),
        500_000,
    ),
    PMAY_G: Scheme(
        PMAY_G,
        "PMAY-Gramin housing assistance (three instalments)",
        "staged",
        (("BANK", 1.0),),
        1_000_000,
    ),
}
SCHEME_CODES = tuple(SCHEMES)

PM_KISAN_INSTALMENT = 2_000.0
PENSION_CENTRAL_SHARE = {"60-79": 200.0, "80+": 500.0}
MGNREGA_DAYS_PER_MUSTER_ROLL = 14
SCHOLARSHIP_AMOUNTS = (3_000.0, 5_000.0, 7_000.0, 10_000.0, 12_000.0, 13_500.0)
PMAY_G_UNIT_ASSISTANCE = {False: 120_000.0, True: 130_000.0}  # plains, hilly
PMAY_G_INSTALMENT_SHARES = (0.4, 0.4, 0.2)

_GRACE_DAYS = {PM_KISAN: 30, OLD_AGE_PENSION: 15, MGNREGA: 0, SCHOLARSHIP: 0, PMAY_G: 30}


def normalise_scheme(code: str) -> str | None:
    """The canonical code for a scheme name as written in an extract, or None if unknown."""
    key = re.sub(r"[^A-Z]", "_", code.strip().upper()).strip("_")
    key = {"PMKISAN": PM_KISAN, "PM_KISAN_SAMMAN_NIDHI": PM_KISAN, "NREGA": MGNREGA}.get(key, key)
    return key if key in SCHEMES else None


def fiscal_year_label(year: int) -> str:
    """'2025-26' for the year starting in April (or July, for scholarships) 2025."""
    return f"{year}-{(year + 1) % 100:02d}"


def _seconds(day: date) -> int:
    """Midnight IST of a calendar day, as unix seconds."""
    return (day - date(1970, 1, 1)).days * DAY - IST_OFFSET_SECONDS


def _month_start(year: int, month: int) -> date:
    return date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


@lru_cache(maxsize=100_000)
def period_window(scheme: str, period: str) -> tuple[int, int]:
    """The [start, end) unix-second window in which this period's instalment is normally paid."""
    start, end = _period_dates(scheme, period)
    return _seconds(start), _seconds(end + timedelta(days=_GRACE_DAYS[scheme]))


@lru_cache(maxsize=100_000)
def period_start(scheme: str, period: str) -> int:
    """Midnight IST of the first day the period covers, as unix seconds.

    The same as the payment window's start, except for MGNREGA: wages for a fortnight are paid
    after it ends, but the fortnight (and the work owed for) begins on the 1st or the 16th.
    """
    start, _ = _period_dates(scheme, period)  # also checks the label
    if scheme == MGNREGA:
        start = date(int(period[:4]), int(period[5:7]), 1 if period.endswith("F1") else 16)
    return _seconds(start)


def _period_dates(scheme: str, period: str) -> tuple[date, date]:
    try:
        if scheme == PM_KISAN:
            year, part = int(period[:4]), int(period.split("/P")[1])
            if part not in (1, 2, 3):
                raise ValueError(period)
            start = _month_start(year, 4 + 4 * (part - 1))
            return start, _month_start(start.year, start.month + 4)
        if scheme == OLD_AGE_PENSION:
            start = date(int(period[:4]), int(period[5:7]), 1)
            return start, _month_start(start.year, start.month + 1)
        if scheme == MGNREGA:
            year, month, half = int(period[:4]), int(period[5:7]), period[8:]
            if half not in ("F1", "F2") or period[7] != "-":
                raise ValueError(period)
            end = date(year, month, 16) if half == "F1" else _month_start(year, month + 1)
            return end, end + timedelta(days=45)
        if scheme == SCHOLARSHIP:
            year = int(period[:4])
            return date(year, 8, 1), date(year + 1, 7, 1)
        if scheme == PMAY_G:
            year, part = int(period[:4]), int(period.split("/I")[1])
            if part not in (1, 2, 3):
                raise ValueError(period)
            return date(year, 4, 1), date(year + 1, 4, 1)
    except (ValueError, IndexError, OverflowError):
        pass
    raise ValueError(f"'{period}' is not a valid instalment period for {scheme}")


def is_valid_period(scheme: str, period: str) -> bool:
    """True when the label parses as an instalment period of this scheme."""
    try:
        period_window(scheme, period)
    except ValueError:
        return False
    return period == canonical_period_text(scheme, period)


def canonical_period_text(scheme: str, period: str) -> str:
    """Re-render a parsed label, so '2025-7' and '2025-07' are not both accepted."""
    start, _ = _period_dates(scheme, period)
    if scheme == PM_KISAN:
        return f"{fiscal_year_label(int(period[:4]))}/P{int(period.split('/P')[1])}"
    if scheme == OLD_AGE_PENSION:
        return f"{start:%Y-%m}"
    if scheme == MGNREGA:
        half = period[8:]
        return f"{start:%Y-%m}-{half}" if half == "F1" else f"{start - timedelta(days=1):%Y-%m}-F2"
    if scheme == SCHOLARSHIP:
        return fiscal_year_label(start.year)
    return f"{fiscal_year_label(start.year)}/I{int(period.split('/I')[1])}"


def local_days(paid_at: np.ndarray) -> np.ndarray:
    """IST calendar days (datetime64[D]) of unix-second timestamps."""
    return ((np.asarray(paid_at, dtype=np.int64) + IST_OFFSET_SECONDS) // DAY).astype(
        "datetime64[D]"
    )


def local_hours(paid_at: np.ndarray) -> np.ndarray:
    """IST hour of day (fractional) of unix-second timestamps."""
    return ((np.asarray(paid_at, dtype=np.int64) + IST_OFFSET_SECONDS) % DAY) / 3600.0


def period_for_payment(scheme: str, paid_at: int, instalment: int = 1) -> str:
    """The period a payment made at `paid_at` would normally settle (used when none is given)."""
    day = date(1970, 1, 1) + timedelta(seconds=paid_at + IST_OFFSET_SECONDS)
    fiscal = day.year if day.month >= 4 else day.year - 1
    if scheme == PM_KISAN:
        part = (day.month - 4) % 12 // 4 + 1
        return f"{fiscal_year_label(fiscal)}/P{part}"
    if scheme == OLD_AGE_PENSION:
        return f"{day:%Y-%m}"
    if scheme == MGNREGA:
        worked = day - timedelta(days=15)
        return f"{worked:%Y-%m}-{'F1' if worked.day <= 15 else 'F2'}"
    if scheme == SCHOLARSHIP:
        academic = day.year if day.month >= 8 else day.year - 1
        return fiscal_year_label(academic)
    return f"{fiscal_year_label(fiscal)}/I{instalment}"


def is_off_cycle(scheme: str, period: str, paid_at: int) -> bool:
    """True when a payment falls outside its period's normal window."""
    start, end = period_window(scheme, period)
    return not start <= paid_at < end


def standard_entitlement(scheme: str, state: str | None) -> float:
    """The usual per-instalment entitlement of a scheme in a state (for imported beneficiaries)."""
    from schemewatch.geography import load_state_rates

    rates = load_state_rates().get(state or "")
    if scheme == PM_KISAN:
        return PM_KISAN_INSTALMENT
    if scheme == OLD_AGE_PENSION:
        return rates.old_age_pension_monthly if rates else 1_000.0
    if scheme == MGNREGA:
        wage = rates.mgnrega_daily_wage if rates and rates.mgnrega_daily_wage else 300.0
        return wage * MGNREGA_DAYS_PER_MUSTER_ROLL
    if scheme == SCHOLARSHIP:
        return max(SCHOLARSHIP_AMOUNTS)
    hilly = bool(rates and rates.hilly)
    return PMAY_G_UNIT_ASSISTANCE[hilly] * PMAY_G_INSTALMENT_SHARES[0]
