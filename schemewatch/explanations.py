"""Plain-word reasons for an alert: the features that contribute most to its reconstruction error,
each stated against the normal range seen in training, and the typology the alert most resembles.
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np

from schemewatch import features, risk
from schemewatch.exporter import IST

TOP_REASONS = 3

# Which typology each feature speaks for (used to say what an alert most resembles).
FEATURE_TYPOLOGY = {
    "log_amount": "over_entitlement",
    "amount_to_entitlement": "over_entitlement",
    "amount_off_whole_instalments": "over_entitlement",
    "hour_sin": "agent_collusion",
    "hour_cos": "agent_collusion",
    "weekday_sin": "agent_collusion",
    "weekday_cos": "agent_collusion",
    "position_in_period": "off_cycle",
    "off_cycle": "off_cycle",
    "log_days_before_window": "off_cycle",
    "log_days_after_window": "off_cycle",
    "km_from_home": "geo_mismatch",
    "km_from_home_or_usual_payout": "geo_mismatch",
    **{f"log_scheme_payments_{w}": "burst" for w in features.BENEFICIARY_WINDOWS},
    **{f"log_scheme_amount_{w}": "burst" for w in features.BENEFICIARY_WINDOWS},
    "earlier_payments_same_period": "duplicate_instalment",
    "earlier_payments_same_period_same_amount": "duplicate_instalment",
    "period_amount_to_entitlement": "duplicate_instalment",
    "period_paid_over_entitlement": "duplicate_instalment",
    "log_days_since_last_payment": "burst",
    "log_beneficiaries_on_account": "shared_account_ring",
    "paid_into_new_account": "shared_account_ring",
    **{f"log_agent_payments_{w}": "agent_collusion" for w in features.AGENT_WINDOWS},
    **{f"log_agent_beneficiaries_{w}": "agent_collusion" for w in features.AGENT_DISTINCT_WINDOWS},
    "agent_night_hours_10min": "agent_collusion",
    "log_agent_km_10min": "agent_collusion",
    "log_days_period_began_after_death": "payment_after_death",
    "log_beneficiaries_sharing_phone": "ghost_beneficiary",
    "share_of_phone_users_at_other_homes": "ghost_beneficiary",
    "phone_sharers_enrolled_within_30_days": "ghost_beneficiary",
    "log_operator_enrolments_same_days": "ghost_beneficiary",
}
# Context features (channel, scheme) never contribute to a score, so never give a reason.
assert set(FEATURE_TYPOLOGY) == set(features.FEATURE_NAMES) - set(features.CONTEXT_FEATURES)


def _raw(name: str, value: float) -> float:
    """Undo the log1p of count and amount features."""
    return math.expm1(value) if name.startswith("log_") else value


def _count(value: float) -> str:
    return f"{round(value):,}"


def _range(name: str, normal: list[float], unit=_count) -> str:
    low, high = (_raw(name, v) for v in normal)
    return unit(low) if unit(low) == unit(high) else f"{unit(low)}–{unit(high)}"


def _rupees(value: float) -> str:
    return f"₹{value:,.0f}"


def _km(value: float) -> str:
    return f"{value:,.0f} km"


_WINDOW_WORDS = {
    "10min": "10 minutes",
    "1h": "hour",
    "24h": "24 hours",
    "7d": "7 days",
    "30d": "30 days",
}

_SENTENCES = {
    "log_amount": ("paid {value}; normal is {normal}", _rupees),
    "amount_to_entitlement": (
        "paid {value} the entitlement; normal is {normal}",
        lambda v: f"{v:.1f}×",
    ),
    "amount_off_whole_instalments": (
        "the amount is not a whole number of instalments (off by {value} of one); "
        "normal is {normal}",
        lambda v: f"{v:.0%}",
    ),
    "log_days_before_window": (
        "paid {value} days before the instalment period's payment window opens; normal is {normal}",
        _count,
    ),
    "log_days_after_window": (
        "paid {value} days after the instalment period's payment window closed; normal is {normal}",
        _count,
    ),
    "km_from_home_or_usual_payout": (
        "paid {value} from home and from the previous payout places; normal is {normal}",
        _km,
    ),
    "km_from_home": ("paid {value} from the beneficiary's home; normal is {normal}", _km),
    "period_amount_to_entitlement": (
        "paid {value} the entitlement so far in this instalment period; normal is {normal}",
        lambda v: f"{v:.1f}×",
    ),
    "period_paid_over_entitlement": (
        "paid {value} of the entitlement more than is due in this instalment period; "
        "normal is {normal}",
        lambda v: f"{v:.0%}",
    ),
    "agent_night_hours_10min": (
        "payouts by this agent in the last 10 minutes reached {value} hours into the night "
        "(added over the payouts, this one included); normal is {normal}",
        lambda v: f"{v:,.1f}",
    ),
    "log_agent_km_10min": (
        "the people this agent paid in the last 10 minutes live {value} away in all (from home or "
        "their usual payout place, this payout included); normal is {normal}",
        _km,
    ),
    "paid_into_new_account": (
        "paid into an account never used for this beneficiary before, after earlier payments "
        "elsewhere; normal is {normal}",
        lambda v: "yes" if v >= 0.5 else "no",
    ),
    **{
        f"log_scheme_payments_{w}": (
            f"earlier payments of this scheme to this beneficiary in the last {_WINDOW_WORDS[w]}: "
            "{value}; normal is {normal}",
            _count,
        )
        for w in features.BENEFICIARY_WINDOWS
    },
    **{
        f"log_scheme_amount_{w}": (
            f"{{value}} already paid to this beneficiary by this scheme in the last "
            f"{_WINDOW_WORDS[w]}; normal is {{normal}}",
            _rupees,
        )
        for w in features.BENEFICIARY_WINDOWS
    },
    "earlier_payments_same_period": (
        "earlier payments of this instalment in the same period: {value}; normal is {normal}",
        _count,
    ),
    "earlier_payments_same_period_same_amount": (
        "earlier payments of exactly this amount for the same instalment period: {value}; "
        "normal is {normal}",
        _count,
    ),
    "log_days_since_last_payment": (
        "{value} days since the previous payment; normal is {normal}",
        lambda v: f"{v:,.1f}",
    ),
    "log_beneficiaries_on_account": (
        "different beneficiaries paid into this account: {value}; normal is {normal}",
        _count,
    ),
    **{
        f"log_agent_payments_{w}": (
            f"the payout agent's payouts in the last {_WINDOW_WORDS[w]}: {{value}}; "
            "normal is {normal}",
            _count,
        )
        for w in features.AGENT_WINDOWS
    },
    **{
        f"log_agent_beneficiaries_{w}": (
            f"different beneficiaries the payout agent paid in the last {_WINDOW_WORDS[w]}: "
            "{value}; normal is {normal}",
            _count,
        )
        for w in features.AGENT_DISTINCT_WINDOWS
    },
    "log_days_period_began_after_death": (
        "paid for an instalment period that began {value} days after the beneficiary's recorded "
        "death; normal is {normal}",
        _count,
    ),
    "log_beneficiaries_sharing_phone": (
        "beneficiaries registered with the same phone: {value}; normal is {normal}",
        _count,
    ),
    "share_of_phone_users_at_other_homes": (
        "{value} of the beneficiaries registered with this phone live at another address; "
        "normal is {normal}",
        lambda v: f"{v:.0%}",
    ),
    "phone_sharers_enrolled_within_30_days": (
        "beneficiaries with the same phone enrolled by the same operator within 30 days: "
        "{value}; normal is {normal}",
        _count,
    ),
    "log_operator_enrolments_same_days": (
        "enrolments by the same operator within a day of this one: {value}; normal is {normal}",
        _count,
    ),
}


def sentence(name: str, value: float, normal: list[float], row: dict) -> str:
    """One plain-word reason for one feature of one payment."""
    if name in _SENTENCES:
        template, unit = _SENTENCES[name]
        return template.format(value=unit(_raw(name, value)), normal=_range(name, normal, unit))
    when = datetime.fromtimestamp(int(row["paid_at"]), IST)
    if name.startswith("hour_"):
        return f"paid at {when:%H:%M} IST, an unusual time for this kind of payment"
    if name.startswith("weekday_"):
        return f"paid on a {when:%A}, an unusual day for this kind of payment"
    if name in ("position_in_period", "off_cycle"):
        return (
            f"paid on {when:%d %b %Y}, outside the usual payment window of instalment "
            f"{row['instalment_period']}"
        )
    return f"paid through {row.get('channel') or 'an unknown channel'}, unusual for this payment"


def explain(contributions: np.ndarray, matrix: np.ndarray, rows: list[dict], card: dict):
    """For each row: (reasons as dicts with text, top first; the typology it most resembles)."""
    if not rows:
        return []
    names = features.FEATURE_NAMES
    typologies = sorted(set(FEATURE_TYPOLOGY.values()))
    membership = np.array(
        [[FEATURE_TYPOLOGY.get(n) == t for t in typologies] for n in names], float
    )
    ranges = [_normal_ranges_for(row, card) for row in rows]
    low, high = _range_bounds(ranges, names)
    tolerance = 1e-6 + 1e-3 * (high - low)
    unusual = (matrix < low - tolerance) | (matrix > high + tolerance)
    # Rank features that are outside their normal range first; the rest only break ties.
    weight = contributions * np.where(unusual, 1.0, 1e-3)
    weight[:, _CONTEXT] = -1.0  # context (channel, scheme) is never a reason
    resemblance = np.maximum(weight, 0) @ membership
    # A few spare candidates: two features can come down to the same sentence.
    ranked = np.argsort(-weight, axis=1, kind="stable")[:, : TOP_REASONS + 2]
    totals = np.maximum(contributions.sum(axis=1), 1e-12)
    out = []
    for i, row in enumerate(rows):
        top = [j for j in ranked[i] if unusual[i, j]] or ranked[i][:1]
        reasons, said = [], set()
        for j in top:
            text = sentence(names[j], float(matrix[i, j]), ranges[i][names[j]], row)
            if text not in said and len(reasons) < TOP_REASONS:
                said.add(text)
                share = round(float(contributions[i, j] / totals[i]), 3)
                times = risk.times_normal(float(contributions[i, j]))
                reasons.append(
                    {
                        "feature": names[j],
                        "text": f"{text} ({_times(times)} the normal deviation)",
                        "share": share,
                        "times_normal": round(times, 1),
                    }
                )
        out.append((reasons, typologies[int(np.argmax(resemblance[i]))]))
    return out


def _times(times: float) -> str:
    """How far out of line, as auditors say it: "12×", "1,400×"."""
    return f"{times:,.1f}×" if times < 10 else f"{times:,.0f}×"


def _range_bounds(ranges: list[dict], names) -> tuple[np.ndarray, np.ndarray]:
    """Low and high normal bounds per row and feature (rows share a few distinct range sets)."""
    distinct = {id(r): r for r in ranges}
    table = {
        key: np.array([[r[n][0] for n in names], [r[n][1] for n in names]], float)
        for key, r in distinct.items()
    }
    bounds = np.stack([table[id(r)] for r in ranges]).reshape(len(ranges), 2, len(names))
    return bounds[:, 0], bounds[:, 1]


_CONTEXT = [features.FEATURE_NAMES.index(n) for n in features.CONTEXT_FEATURES]


def _normal_ranges_for(row: dict, card: dict) -> dict:
    """Normal ranges for payments of the row's scheme (all payments' if the card has none)."""
    return card.get("normal_ranges_by_scheme", {}).get(row.get("scheme"), card["normal_ranges"])
