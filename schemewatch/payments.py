"""A batch of payments as parallel numpy arrays: what the generator and live feed build and store.

Beneficiaries, accounts and agents are integer indexes into a `World`; schemes and channels are
indexes into `schemes.SCHEME_CODES` and `schemes.CHANNELS`. Labels are ground truth only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

NORMAL = "normal"
TYPOLOGIES = (
    "over_entitlement",
    "duplicate_instalment",
    "off_cycle",
    "burst",
    "shared_account_ring",
    "agent_collusion",
    "payment_after_death",
    "geo_mismatch",
    "ghost_beneficiary",
)
# Typologies whose amounts stay inside the scheme's normal range: only behaviour gives them away.
BEHAVIOURAL_TYPOLOGIES = tuple(t for t in TYPOLOGIES if t != "over_entitlement")
LABELS = (NORMAL, *TYPOLOGIES)
NO_AGENT = -1
# Beneficiaries, accounts and agents (indexes into a World) and group numbers fit 32 bits: half
# the room of int64 in a year of payments (224 MB less at 10 million).
INDEX = np.int32


@dataclass
class Payments:
    """Parallel arrays, one entry per payment."""

    beneficiary: np.ndarray  # INDEX
    scheme: np.ndarray  # int8
    period: np.ndarray  # object (str)
    amount: np.ndarray  # float64 rupees
    paid_at: np.ndarray  # int64 unix seconds
    latitude: np.ndarray
    longitude: np.ndarray
    account: np.ndarray  # INDEX
    agent: np.ndarray  # INDEX, NO_AGENT for bank credits
    channel: np.ndarray  # int8
    label: np.ndarray  # int8 index into LABELS
    group: np.ndarray  # INDEX, -1 for normal rows

    def __len__(self) -> int:
        return len(self.beneficiary)

    def take(self, index) -> Payments:
        """A new batch holding the selected rows (copies)."""
        return Payments(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def copy(self) -> Payments:
        """A deep copy."""
        return Payments(**{f.name: getattr(self, f.name).copy() for f in fields(self)})

    @staticmethod
    def concat(parts: list[Payments]) -> Payments:
        """All rows of several batches, in order."""
        parts = [p for p in parts if len(p)] or parts[:1]
        return Payments(
            **{
                f.name: np.concatenate([getattr(p, f.name) for p in parts])
                for f in fields(Payments)
            }
        )

    @staticmethod
    def empty() -> Payments:
        """A batch with no rows."""
        return Payments(
            beneficiary=np.empty(0, INDEX),
            scheme=np.empty(0, np.int8),
            period=np.empty(0, object),
            amount=np.empty(0, float),
            paid_at=np.empty(0, np.int64),
            latitude=np.empty(0, float),
            longitude=np.empty(0, float),
            account=np.empty(0, INDEX),
            agent=np.empty(0, INDEX),
            channel=np.empty(0, np.int8),
            label=np.empty(0, np.int8),
            group=np.empty(0, INDEX),
        )

    def sorted_by_time(self) -> Payments:
        """Rows in payment-time order (stable)."""
        return self.take(np.argsort(self.paid_at, kind="stable"))

    def mark(self, typology: str, group) -> None:
        """Label every row with a typology and group id(s), in place."""
        self.label[:] = LABELS.index(typology)
        self.group[:] = group
