"""A printable report of one case: its payments, reasons and risk, who and what is linked, its
triage history, and who exported it when.

`gather` reads what the report needs through the store; `render` is pure (a `CaseReport` in,
one self-contained HTML page out: inline CSS, no script, no external file, every value from the
database HTML-escaped, and a Content-Security-Policy that would block anything that slipped
through); `export` checks the role, gathers, renders and writes the download to the audit log
with the same helper as every other download. HTML only: a browser prints it (or saves it as
PDF) with its print stylesheet; no PDF library is a dependency.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from schemewatch import rules, store, triage
from schemewatch.errors import SchemewatchError
from schemewatch.exporter import iso_timestamp

REPORT_FORMAT = "html"


class CaseNotFound(SchemewatchError):
    """The case has no alerts under this model version (merged into another case, or unknown)."""


@dataclass(frozen=True)
class CaseReport:
    """Everything a case report shows, read at one moment."""

    case_id: int
    model_version: str
    payments: list[dict]  # ALERT_QUEUE_COLUMNS and "alerted_by", in queue order
    history: list[dict]  # CASE_COLUMNS, in the order the events happened
    exported_by: str
    exporter_name: str | None
    exporter_role: str | None
    exported_at: float


def gather(conn, version: str, case_id: int, username: str, now: float) -> CaseReport:
    """Read one case's payments, their sources and triage history, and who is exporting it."""
    rows = store.dashboard_case_alerts(conn, version, case_id)
    if not rows:
        raise CaseNotFound(
            f"case {case_id} has no alerts under model {version}: it may have been merged "
            "into another case; reload the page"
        )
    payments = [dict(zip(store.ALERT_QUEUE_COLUMNS, row, strict=True)) for row in rows]
    ids = [p["transaction_id"] for p in payments]
    sources = rules.alert_source_labels(conn, version, ids)
    for payment in payments:
        payment["alerted_by"] = sources.get(payment["transaction_id"], "model")
    history = [
        dict(zip(store.CASE_COLUMNS, row, strict=True)) for row in store.case_histories(conn, ids)
    ]
    account = store.get_user(conn, username)
    return CaseReport(
        case_id,
        version,
        payments,
        history,
        username,
        account["display_name"] if account else None,
        account["role"] if account else None,
        now,
    )


def export(conn, version: str, case_id: int, username: str, role: str) -> tuple[bytes, int]:
    """The case's report (UTF-8 HTML) and its payment count; the download is audited.

    Refused (NotAllowed) for a role that may not download; nothing is read or audited then.
    """
    triage.require(role, "download")
    report = gather(conn, version, case_id, username, store.now())
    page = render(report)
    details = {"case": case_id, "model_version": version, "format": REPORT_FORMAT}
    triage.record_download(
        conn, username, details, len(report.payments), target=f"case {case_id} report"
    )
    return page.encode("utf-8"), len(report.payments)


# -- rendering (pure) ---------------------------------------------------------------------------


def _e(value: object) -> str:
    """Data as HTML text: &, <, >, quotes escaped; None as empty."""
    return "" if value is None else html.escape(str(value), quote=True)


def _ist(seconds) -> str:
    return iso_timestamp(int(seconds))[:16].replace("T", " ") + " IST"


def _utc(seconds) -> str:
    return datetime.fromtimestamp(float(seconds), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _rupees(value) -> str:
    return f"₹{float(value):,.2f}"


def _figure(value, digits: int = 0) -> str:
    return "" if value is None else f"{float(value):,.{digits}f}"


def reasons(text) -> list[str]:
    """The plain-word reasons stored with a score (JSON list of {"text": ...})."""
    if not isinstance(text, str) or not text:
        return []
    return [str(r.get("text", "")) for r in json.loads(text) if isinstance(r, dict)]


def _table(headers: list[str], rows: list[list[str]], css: str = "") -> str:
    """An HTML table; cells must already be escaped."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _status(payment: dict) -> str:
    if payment["disposition"]:
        return payment["disposition"].replace("_", " ")
    return f"claimed by {payment['claimed_by']}" if payment["claimed_by"] else "open"


def _payments(report: CaseReport) -> str:
    re_ranked = any(p["combined_risk"] is not None for p in report.payments)
    rows = [
        [
            _e(p["transaction_id"]),
            _e(_ist(p["paid_at"])),
            _e(p["beneficiary_id"]),
            _e(p["scheme"]),
            _e(_rupees(p["amount"])),
            _e(p["account_id"]),
            _e(p["agent_id"]),
            _e(f"{p['district']}, {p['state']}"),
            _e(_figure(p["risk"])),
            *([_e(_figure(p["combined_risk"]))] if re_ranked else []),
            _e(_figure(p["score"], 1)),
            _e(p["alerted_by"]),
            _e(_status(p)),
        ]
        for p in report.payments
    ]
    headers = [
        "transaction",
        "paid",
        "beneficiary",
        "scheme",
        "amount",
        "account",
        "agent",
        "district, state",
        "risk",
        *(["combined risk"] if re_ranked else []),
        "score",
        "alerted by",
        "status",
    ]
    return _table(headers, rows, "payments")


def _reasons(report: CaseReport) -> str:
    parts = []
    for p in report.payments:
        said = reasons(p["reasons"])
        items = "".join(f"<li>{_e(r)}</li>" for r in said) or "<li>(no reasons stored)</li>"
        resembles = (
            f" Most resembles {_e(p['resembles'].replace('_', ' '))}." if p["resembles"] else ""
        )
        parts.append(
            f"<h3>Transaction {_e(p['transaction_id'])}: risk {_e(_figure(p['risk']))}"
            f"/100, alerted by {_e(p['alerted_by'])}</h3>"
            f"<p>{_e(p['scheme'])} payment of {_e(_rupees(p['amount']))} to "
            f"{_e(p['beneficiary_id'])} on {_e(_ist(p['paid_at']))}.{resembles}</p>"
            f"<ul>{items}</ul>"
        )
    return "".join(parts)


def linked_entities(payments: list[dict]) -> dict[str, list[dict]]:
    """People, accounts and agents of the case, each with the payments that link them."""
    found: dict[str, dict[str, dict]] = {"people": {}, "accounts": {}, "agents": {}}
    for p in payments:
        for kind, key in (
            ("people", p["beneficiary_id"]),
            ("accounts", p["account_id"]),
            ("agents", p["agent_id"]),
        ):
            if not key:
                continue
            entry = found[kind].setdefault(
                key, {"id": key, "payments": 0, "amount": 0.0, "people": set(), "where": set()}
            )
            entry["payments"] += 1
            entry["amount"] += float(p["amount"])
            entry["people"].add(p["beneficiary_id"])
            entry["where"].add(f"{p['district']}, {p['state']}")
    return {
        kind: sorted(entries.values(), key=lambda e: (-e["payments"], str(e["id"])))
        for kind, entries in found.items()
    }


_ENTITY_TABLES = (
    # kind, heading, first column, last column (what else the entity is linked to)
    ("people", "People (beneficiaries)", "person", "district, state"),
    ("accounts", "Accounts paid into", "account", "people paid into it"),
    ("agents", "Payout agents", "agent", "people paid by them"),
)


def _entities(report: CaseReport) -> str:
    linked = linked_entities(report.payments)
    parts = []
    for kind, heading, first, last in _ENTITY_TABLES:
        rows = [
            [
                _e(entry["id"]),
                _e(entry["payments"]),
                _e(_rupees(entry["amount"])),
                _e("; ".join(sorted(entry["where"] if kind == "people" else entry["people"]))),
            ]
            for entry in linked[kind]
        ]
        table = _table([first, "payments", "amount", last], rows) if rows else "<p>None.</p>"
        parts.append(f"<h3>{_e(heading)} ({len(rows)})</h3>{table}")
    return "".join(parts)


def _history(report: CaseReport) -> str:
    if not report.history:
        return "<p>Nobody has triaged this case yet.</p>"
    rows = [
        [
            _e(_utc(event["updated_at"])),
            _e(event["transaction_id"]),
            _e(event["version"]),
            _e(event["updated_by"]),
            _e(event["claimed_by"] or ""),
            _e((event["disposition"] or "").replace("_", " ")),
            _e(event["disposition_role"] or ""),
            f'<span class="note">{_e(event["note"] or "")}</span>',
        ]
        for event in report.history
    ]
    headers = [
        "when",
        "transaction",
        "version",
        "by",
        "claimed by",
        "disposition",
        "set by a",
        "note",
    ]
    return _table(headers, rows, "history")


_STYLE = """
body { font: 11pt/1.4 "Helvetica", "Arial", sans-serif; color: #111; margin: 2em; }
h1 { font-size: 18pt; margin-bottom: 0.2em; } h2 { font-size: 14pt; margin-top: 1.6em;
border-bottom: 1px solid #999; } h3 { font-size: 11pt; margin: 1em 0 0.3em; }
table { border-collapse: collapse; width: 100%; margin: 0.4em 0; font-size: 9pt; }
th, td { border: 1px solid #bbb; padding: 2px 4px; text-align: left; vertical-align: top;
overflow-wrap: anywhere; } th { background: #eee; }
.note { white-space: pre-wrap; } .meta { color: #444; } .footer { margin-top: 2em; color: #444;
font-size: 9pt; }
@media print { body { margin: 0; } h2 { break-after: avoid; } tr { break-inside: avoid; }
thead { display: table-header-group; } }
"""
# No script, image, frame, font or connection may load even if markup slipped through escaping.
_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def render(report: CaseReport) -> str:
    """The report as one self-contained HTML page (the pure part: no I/O)."""
    payments = report.payments
    total = sum(float(p["amount"]) for p in payments)
    risks = [p["risk"] for p in payments if p["risk"] is not None]
    combined = [p["combined_risk"] for p in payments if p["combined_risk"] is not None]
    exporter = report.exported_by + (
        f" ({report.exporter_name}, {report.exporter_role})" if report.exporter_role else ""
    )
    summary = (
        f"{len(payments)} payment{'s' if len(payments) != 1 else ''}, {_rupees(total)}, paid "
        "between "
        f"{_ist(min(p['paid_at'] for p in payments))} and "
        f"{_ist(max(p['paid_at'] for p in payments))}; max risk "
        f"{_figure(max(risks)) if risks else 'not computed'}/100"
        + (f", max combined risk {_figure(max(combined))}/100" if combined else "")
        + f". Model {report.model_version}."
    )
    exported = f"Exported by {exporter} at {_utc(report.exported_at)}."
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        f"<title>Schemewatch case {_e(report.case_id)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>Case {_e(report.case_id)}: case report</h1>"
        f'<p class="meta">{_e(summary)}</p><p class="meta" id="exported">{_e(exported)} '
        "This export is recorded in the audit log.</p>"
        f"<h2>Payments</h2>{_payments(report)}"
        f"<h2>Why each payment was flagged</h2>{_reasons(report)}"
        f"<h2>Linked people, accounts and agents</h2>{_entities(report)}"
        f"<h2>Triage history</h2>{_history(report)}"
        '<p class="footer">Schemewatch. Risk is 0-100: 90 is the model\'s alert line. Payment '
        "times are IST; triage times UTC. Triage history comes from the hash-chained case "
        "events (<code>schemewatch verify</code> checks them).</p>"
        "</body></html>\n"
    )
