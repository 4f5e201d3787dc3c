"""Ranges of pending transactions claimed by monitor workers (several processes, one store).

A worker claims the next range of ids under the writers' lock, scores it, and marks the claim
done in the same commit as the scores, the daily summary and the rule hits (`record_scores`).
A worker killed mid-range leaves its claim to expire; the next worker to ask takes it over. A
late commit from a worker whose claim was taken over is refused and rolled back, so every row is
scored exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemewatch.errors import DatabaseError
from schemewatch.store.schema import SCORE_CLAIMS, SCORES, TRANSACTIONS, now, write_transaction


class ClaimLost(DatabaseError):
    """This worker's claim expired and another worker took the range over."""


@dataclass(frozen=True)
class Claim:
    """Transactions first_id..last_id (inclusive) for one worker and model version."""

    model_version: str
    first_id: int
    last_id: int
    worker: str
    taken_over: bool = False


def claim_next_range(conn, version: str, worker: str, size: int, ttl_seconds: float):
    """An expired claim to finish, else the next `size` unclaimed ids; None if nothing waits."""
    at = now()
    with write_transaction(conn):
        expired = conn.execute(
            f"SELECT first_id, last_id FROM {SCORE_CLAIMS} WHERE model_version = ? "
            "AND done_at IS NULL AND expires_at < ? ORDER BY first_id LIMIT 1",
            (version, at),
        ).fetchone()
        if expired is not None:
            conn.execute(
                f"UPDATE {SCORE_CLAIMS} SET worker = ?, claimed_at = ?, expires_at = ?, "
                "takeovers = takeovers + 1 WHERE model_version = ? AND first_id = ?",
                (worker, at, at + ttl_seconds, version, expired[0]),
            )
            return Claim(version, expired[0], expired[1], worker, taken_over=True)
        start = _first_unclaimed(conn, version)
        last = conn.execute(f"SELECT COALESCE(MAX(transaction_id), 0) FROM {TRANSACTIONS}")
        last_id = min(last.fetchone()[0], start + size - 1)
        if last_id < start:
            return None
        conn.execute(
            f"INSERT INTO {SCORE_CLAIMS} (model_version, first_id, last_id, worker, claimed_at, "
            "expires_at, takeovers) VALUES (?, ?, ?, ?, ?, ?, 0)",
            (version, start, last_id, worker, at, at + ttl_seconds),
        )
        return Claim(version, start, last_id, worker)


def _first_unclaimed(conn, version: str) -> int:
    """After the last claim; with no claim yet, after what was scored without claims."""
    row = conn.execute(
        f"SELECT MAX(last_id) FROM {SCORE_CLAIMS} WHERE model_version = ?", (version,)
    ).fetchone()
    if row[0] is not None:
        return row[0] + 1
    scored = conn.execute(
        f"SELECT COALESCE(MAX(transaction_id), 0) FROM {SCORES} WHERE model_version = ?",
        (version,),
    ).fetchone()[0]
    return scored + 1


def finish_claim(conn, claim: Claim) -> None:
    """Mark the claim done (inside the write transaction of its scores), or raise ClaimLost."""
    done = conn.execute(
        f"UPDATE {SCORE_CLAIMS} SET done_at = ? WHERE model_version = ? AND first_id = ? "
        "AND worker = ? AND done_at IS NULL",
        (now(), claim.model_version, claim.first_id, claim.worker),
    )
    if done.rowcount != 1:
        raise ClaimLost(
            f"transactions {claim.first_id}-{claim.last_id} were taken over by another worker"
        )


def pending_after_claims(conn, version: str) -> int:
    """Transactions neither claimed nor scored yet (for progress lines)."""
    start = _first_unclaimed(conn, version)
    last = conn.execute(f"SELECT COALESCE(MAX(transaction_id), 0) FROM {TRANSACTIONS}")
    return max(0, last.fetchone()[0] - start + 1)


def open_claims(conn, version: str) -> int:
    """Claims not done yet (taken by a running worker, or waiting to expire)."""
    sql = f"SELECT COUNT(*) FROM {SCORE_CLAIMS} WHERE model_version = ? AND done_at IS NULL"
    return conn.execute(sql, (version,)).fetchone()[0]
