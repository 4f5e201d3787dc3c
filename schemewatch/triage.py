"""Alert triage: claim, disposition and note, each recorded in the audit log with old -> new.

Roles: auditors view and triage; only supervisors and admins may close a case as confirmed fraud,
download, or read the audit log; only admins manage users and the alert threshold.
"""

from __future__ import annotations

import json

from schemewatch import store
from schemewatch.errors import SchemewatchError

CAN = {
    "auditor": {"view", "triage"},
    "supervisor": {"view", "triage", "confirm_fraud", "download", "read_audit"},
    "admin": {"view", "triage", "confirm_fraud", "download", "read_audit", "manage"},
}


class NotAllowed(SchemewatchError):
    """The user's role does not allow this action."""


def allowed(role: str | None, action: str) -> bool:
    """True when the role may do the action."""
    return action in CAN.get(role or "", set())


def require(role: str | None, action: str) -> None:
    """Raise NotAllowed unless the role may do the action."""
    if not allowed(role, action):
        raise NotAllowed(f"your role ({role or 'none'}) may not {action.replace('_', ' ')}")


def _state(case) -> dict:
    if case is None:
        return {"claimed_by": None, "disposition": None, "note": None}
    return {
        "claimed_by": case["claimed_by"],
        "disposition": case["disposition"],
        "note": case["note"],
    }


def update_case(conn, transaction_id: int, user: str, role: str, **changes) -> dict:
    """Apply claim/disposition/note changes to an alert and audit them; returns the new state."""
    require(role, "triage")
    disposition = changes.get("disposition")
    if disposition is not None and disposition not in store.DISPOSITIONS:
        raise SchemewatchError(f"unknown disposition '{disposition}'")
    if disposition == "confirmed_fraud":
        require(role, "confirm_fraud")
    with store.write_transaction(conn):
        old = _state(store.get_case(conn, transaction_id))
        new = {**old, **{k: v for k, v in changes.items() if k in old}}
        if new == old:
            return new
        store.save_case(conn, transaction_id, user, **new)
        for field in ("claimed_by", "disposition", "note"):
            if old[field] != new[field]:
                store.append_audit(
                    conn,
                    user,
                    f"case {field.replace('_', ' ')}",
                    str(transaction_id),
                    old[field],
                    new[field],
                )
    return new


def record_download(conn, user: str, filters: dict, rows: int) -> None:
    """Audit a download with its filters and row count."""
    with store.write_transaction(conn):
        store.append_audit(
            conn, user, "download", None, None, str(rows), json.dumps(filters, default=str)
        )


def record_login(conn, user: str, succeeded: bool) -> None:
    """Audit a login attempt."""
    with store.write_transaction(conn):
        store.append_audit(conn, user, "login" if succeeded else "login failed")
