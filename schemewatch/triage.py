"""Alert triage: claim, disposition and note, each recorded in the audit log with old -> new.

Roles: auditors view and triage; only supervisors and admins may close a case as confirmed fraud,
download, read the audit log, or write and switch auditors' rules; only admins manage users and
the alert threshold. A disposition
keeps the role that set it: only that role or above may change it. Saves are conditional on the
case's version, so two auditors never silently overwrite each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from schemewatch import store
from schemewatch.errors import CaseConflict, SchemewatchError

CAN = {
    "auditor": {"view", "triage"},
    "supervisor": {"view", "triage", "confirm_fraud", "download", "read_audit", "write_rules"},
    "admin": {
        "view",
        "triage",
        "confirm_fraud",
        "download",
        "read_audit",
        "write_rules",
        "manage",
    },
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


ROLE_RANK = {"auditor": 1, "supervisor": 2, "admin": 3}
FIELDS = ("claimed_by", "disposition", "note")


@dataclass(frozen=True)
class Case:
    """An alert's case as last saved; version 0 means nobody has touched it yet."""

    transaction_id: int
    claimed_by: str | None = None
    disposition: str | None = None
    disposition_role: str | None = None  # the role that set the disposition in force
    note: str | None = None
    updated_by: str | None = None
    updated_at: float | None = None
    version: int = 0

    def fields(self) -> dict:
        """The fields a save may change: claimed_by, disposition, note."""
        return {name: getattr(self, name) for name in FIELDS}


def load_case(conn, transaction_id: int) -> Case:
    """The current state of an alert's case."""
    row = store.get_case(conn, transaction_id)
    return Case(transaction_id) if row is None else Case(**dict(row))


def may_change_disposition(role: str | None, case: Case) -> bool:
    """A disposition set by a higher role can be changed only by that role or above."""
    return allowed(role, "triage") and ROLE_RANK.get(role or "", 0) >= ROLE_RANK.get(
        case.disposition_role or "", 0
    )


def disposition_choices(role: str | None) -> list[str]:
    """The dispositions this role may set, mildest first."""
    mildest_first = ("needs_information", "false_positive", "confirmed_fraud")
    return [d for d in mildest_first if d != "confirmed_fraud" or allowed(role, "confirm_fraud")]


def _check(case: Case, new: dict, user: str, role: str, take_over: bool) -> None:
    if new["disposition"] != case.disposition and not may_change_disposition(role, case):
        raise NotAllowed(
            f"the disposition {case.disposition} was set by a {case.disposition_role}; "
            f"your role ({role}) may not change it"
        )
    if new["claimed_by"] != case.claimed_by:
        if new["claimed_by"] not in (None, user):
            raise NotAllowed("you may claim an alert only for yourself")
        if case.claimed_by not in (None, user) and not take_over:
            raise NotAllowed(
                f"the alert is claimed by {case.claimed_by}; take the claim over explicitly"
            )


def update_case(
    conn,
    transaction_id: int,
    user: str,
    role: str,
    *,
    expected_version: int | None = None,
    take_over: bool = False,
    **changes,
) -> dict:
    """Apply claim/disposition/note changes to an alert and audit them; returns the new state.

    Only the fields given change. With `expected_version` (the version the user was shown) the
    save is refused with CaseConflict when someone else saved in between. Another user's claim
    is replaced only with `take_over=True`; a disposition set by a higher role is kept.
    """
    _check_request(role, changes)
    with store.write_transaction(conn):
        return _apply(conn, transaction_id, user, role, expected_version, take_over, changes)


def update_linked_case(
    conn,
    expected_versions: dict[int, int],
    user: str,
    role: str,
    *,
    take_over: bool = False,
    **changes,
) -> dict[int, dict]:
    """Apply the same changes to every alert of a case (linked alerts), all or nothing.

    `expected_versions` maps each alert's transaction id to the version the user was shown;
    each alert gets its own case event and audit entries, exactly as `update_case` writes them.
    If any alert was changed by someone else in between, or a rule refuses one alert's change,
    nothing is saved (CaseConflict or NotAllowed).
    """
    _check_request(role, changes)
    with store.write_transaction(conn):
        return {
            transaction_id: _apply(conn, transaction_id, user, role, version, take_over, changes)
            for transaction_id, version in sorted(expected_versions.items())
        }


def _check_request(role: str, changes: dict) -> None:
    """Checks that do not depend on the case's state: role, field names, disposition."""
    require(role, "triage")
    unknown = set(changes) - set(FIELDS)
    if unknown:
        raise TypeError(f"unknown case fields: {sorted(unknown)}")
    disposition = changes.get("disposition")
    if disposition is not None and disposition not in store.DISPOSITIONS:
        raise SchemewatchError(f"unknown disposition '{disposition}'")
    if disposition == "confirmed_fraud":
        require(role, "confirm_fraud")


def _apply(conn, transaction_id, user, role, expected_version, take_over, changes) -> dict:
    """One alert's save, inside the caller's write transaction: event and audit entries."""
    case = load_case(conn, transaction_id)
    if expected_version is not None and case.version != expected_version:
        raise CaseConflict(
            f"alert {transaction_id} was changed by {case.updated_by} at "
            f"{store.utc_iso(case.updated_at)}; reload it and try again"
        )
    old = case.fields()
    new = {**old, **changes}
    if new == old:
        return {**new, "version": case.version}
    _check(case, new, user, role, take_over)
    same = new["disposition"] == case.disposition
    store.append_case_event(
        conn,
        transaction_id,
        case.version + 1,
        user,
        claimed_by=new["claimed_by"],
        disposition=new["disposition"],
        role=case.disposition_role if same else (role if new["disposition"] else None),
        note=new["note"],
    )
    for name in FIELDS:
        if old[name] != new[name]:
            store.append_audit(
                conn,
                user,
                f"case {name.replace('_', ' ')}",
                str(transaction_id),
                old[name],
                new[name],
            )
    return {**new, "version": case.version + 1}


def record_download(conn, user: str, details: dict, rows: int, target: str | None = None) -> None:
    """Audit a download, every kind alike: what was taken (target), its filters or case, rows."""
    with store.write_transaction(conn):
        store.append_audit(
            conn, user, "download", target, None, str(rows), json.dumps(details, default=str)
        )
