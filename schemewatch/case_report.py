"""A printable report of one case: its payments, reasons and risk, who and what is linked, its
triage history, and who exported it when.

`gather` reads what the report needs through the store; `document` (pure) turns it into plain-text
blocks: headings, paragraphs, tables, bullet lists. Two layouts of the same blocks:
- `render` (pure): one self-contained HTML page: inline CSS, no script, no external file, every
  value from the database HTML-escaped, and a Content-Security-Policy that would block anything
  that slipped through. A browser prints it with its print stylesheet.
- `case_report_pdf.render_pdf`: an A4 PDF (fpdf2, offline, with a Unicode font found on the
  machine), page-numbered, every page footed with who exported it.
`export` checks the role, gathers, renders in the asked format and only then writes the download
to the audit log with the same helper as every other download.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from schemewatch import rules, store, triage
from schemewatch.errors import SchemewatchError
from schemewatch.exporter import iso_timestamp

# format: (MIME type, file name suffix)
REPORT_FORMATS = {"html": ("text/html", "html"), "pdf": ("application/pdf", "pdf")}


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


def export(
    conn, version: str, case_id: int, username: str, role: str, form: str = "html"
) -> tuple[bytes, int]:
    """The case's report (UTF-8 HTML or PDF) and its payment count; the download is audited.

    Refused (NotAllowed) for a role that may not download; nothing is read or audited then.
    A report that cannot be rendered (no font for a PDF) raises before anything is audited.
    """
    if form not in REPORT_FORMATS:
        raise ValueError(f"unknown report format {form!r}: choose one of {sorted(REPORT_FORMATS)}")
    triage.require(role, "download")
    report = gather(conn, version, case_id, username, store.now())
    if form == "pdf":
        from schemewatch import case_report_pdf  # here: it lays out this module's blocks

        payload = case_report_pdf.render_pdf(report)
    else:
        payload = render(report).encode("utf-8")
    details = {"case": case_id, "model_version": version, "format": form}
    triage.record_download(
        conn, username, details, len(report.payments), target=f"case {case_id} report"
    )
    return payload, len(report.payments)


# -- formatting (pure) --------------------------------------------------------------------------


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


# -- the document (pure) ------------------------------------------------------------------------
# What a report says, as plain-text blocks; `render` (HTML) and `case_report_pdf.render_pdf`
# lay the same blocks out, so both formats always say the same thing.


@dataclass(frozen=True)
class Heading:
    level: int  # 1 title, 2 section, 3 sub-section
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str
    kind: str = ""  # "meta" (who, what, when) or "footer"


@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    kind: str = ""  # "payments" or "history" (its last column is free text)


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


Block = Heading | Paragraph | Table | Bullets

FOOTER = (
    "Schemewatch. Risk is 0-100: 90 is the model's alert line. Payment times are IST; triage "
    "times UTC. Triage history comes from the hash-chained case events (schemewatch verify "
    "checks them)."
)


def title(report: CaseReport) -> str:
    return f"Case {report.case_id}: case report"


def exported_line(report: CaseReport) -> str:
    """Who exported the report and when (UTC); every page of the PDF repeats it."""
    exporter = report.exported_by + (
        f" ({report.exporter_name}, {report.exporter_role})" if report.exporter_role else ""
    )
    return f"Exported by {exporter} at {_utc(report.exported_at)}."


def document(report: CaseReport) -> list[Block]:
    """Everything the report says, in order, as plain text (nothing escaped yet)."""
    return [
        Heading(1, title(report)),
        Paragraph(_summary(report), "meta"),
        Paragraph(exported_line(report) + " This export is recorded in the audit log.", "meta"),
        Heading(2, "Payments"),
        _payments(report),
        Heading(2, "Why each payment was flagged"),
        *_reasons(report),
        Heading(2, "Linked people, accounts and agents"),
        *_entities(report),
        Heading(2, "Triage history"),
        _history(report),
        Paragraph(FOOTER, "footer"),
    ]


def _summary(report: CaseReport) -> str:
    payments = report.payments
    total = sum(float(p["amount"]) for p in payments)
    risks = [p["risk"] for p in payments if p["risk"] is not None]
    combined = [p["combined_risk"] for p in payments if p["combined_risk"] is not None]
    return (
        f"{len(payments)} payment{'s' if len(payments) != 1 else ''}, {_rupees(total)}, paid "
        "between "
        f"{_ist(min(p['paid_at'] for p in payments))} and "
        f"{_ist(max(p['paid_at'] for p in payments))}; max risk "
        f"{_figure(max(risks)) if risks else 'not computed'}/100"
        + (f", max combined risk {_figure(max(combined))}/100" if combined else "")
        + f". Model {report.model_version}."
    )


def _status(payment: dict) -> str:
    if payment["disposition"]:
        return payment["disposition"].replace("_", " ")
    return f"claimed by {payment['claimed_by']}" if payment["claimed_by"] else "open"


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _payments(report: CaseReport) -> Table:
    re_ranked = any(p["combined_risk"] is not None for p in report.payments)
    headers = (
        "transaction",
        "paid",
        "beneficiary",
        "scheme",
        "amount",
        "account",
        "agent",
        "district, state",
        "risk",
        *(("combined risk",) if re_ranked else ()),
        "score",
        "alerted by",
        "status",
    )
    rows = tuple(
        (
            _text(p["transaction_id"]),
            _ist(p["paid_at"]),
            _text(p["beneficiary_id"]),
            _text(p["scheme"]),
            _rupees(p["amount"]),
            _text(p["account_id"]),
            _text(p["agent_id"]),
            f"{p['district']}, {p['state']}",
            _figure(p["risk"]),
            *((_figure(p["combined_risk"]),) if re_ranked else ()),
            _figure(p["score"], 1),
            _text(p["alerted_by"]),
            _status(p),
        )
        for p in report.payments
    )
    return Table(headers, rows, "payments")


def _reasons(report: CaseReport) -> list[Block]:
    blocks: list[Block] = []
    for p in report.payments:
        resembles = f" Most resembles {p['resembles'].replace('_', ' ')}." if p["resembles"] else ""
        blocks += [
            Heading(
                3,
                f"Transaction {p['transaction_id']}: risk {_figure(p['risk'])}/100, alerted by "
                f"{p['alerted_by']}",
            ),
            Paragraph(
                f"{p['scheme']} payment of {_rupees(p['amount'])} to {p['beneficiary_id']} on "
                f"{_ist(p['paid_at'])}.{resembles}"
            ),
            Bullets(tuple(reasons(p["reasons"])) or ("(no reasons stored)",)),
        ]
    return blocks


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


def _entities(report: CaseReport) -> list[Block]:
    linked = linked_entities(report.payments)
    blocks: list[Block] = []
    for kind, heading, first, last in _ENTITY_TABLES:
        rows = tuple(
            (
                _text(entry["id"]),
                _text(entry["payments"]),
                _rupees(entry["amount"]),
                "; ".join(sorted(entry["where"] if kind == "people" else entry["people"])),
            )
            for entry in linked[kind]
        )
        blocks.append(Heading(3, f"{heading} ({len(rows)})"))
        blocks.append(
            Table((first, "payments", "amount", last), rows) if rows else Paragraph("None.")
        )
    return blocks


def _history(report: CaseReport) -> Block:
    if not report.history:
        return Paragraph("Nobody has triaged this case yet.")
    headers = (
        "when",
        "transaction",
        "version",
        "by",
        "claimed by",
        "disposition",
        "set by a",
        "note",
    )
    rows = tuple(
        (
            _utc(event["updated_at"]),
            _text(event["transaction_id"]),
            _text(event["version"]),
            _text(event["updated_by"]),
            event["claimed_by"] or "",
            (event["disposition"] or "").replace("_", " "),
            event["disposition_role"] or "",
            event["note"] or "",
        )
        for event in report.history
    )
    return Table(headers, rows, "history")


# -- HTML (pure) --------------------------------------------------------------------------------


def _e(value: object) -> str:
    """Data as HTML text: &, <, >, quotes escaped."""
    return html.escape(str(value), quote=True)


def _html(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_e(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        css = f' class="{block.kind}"' if block.kind else ""
        return f"<p{css}>{_e(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in block.items) + "</ul>"
    head = "".join(f"<th>{_e(h)}</th>" for h in block.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_e(cell)}</td>" for cell in row) + "</tr>" for row in block.rows
    )
    return (
        f'<table class="{block.kind}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


_STYLE = """
body { font: 11pt/1.4 "Helvetica", "Arial", sans-serif; color: #111; margin: 2em; }
h1 { font-size: 18pt; margin-bottom: 0.2em; } h2 { font-size: 14pt; margin-top: 1.6em;
border-bottom: 1px solid #999; } h3 { font-size: 11pt; margin: 1em 0 0.3em; }
table { border-collapse: collapse; width: 100%; margin: 0.4em 0; font-size: 9pt; }
th, td { border: 1px solid #bbb; padding: 2px 4px; text-align: left; vertical-align: top;
overflow-wrap: anywhere; } th { background: #eee; }
table.history td:last-child { white-space: pre-wrap; } .meta { color: #444; }
.footer { margin-top: 2em; color: #444; font-size: 9pt; }
@media print { body { margin: 0; } h2 { break-after: avoid; } tr { break-inside: avoid; }
thead { display: table-header-group; } }
"""
# No script, image, frame, font or connection may load even if markup slipped through escaping.
_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def render(report: CaseReport) -> str:
    """The report as one self-contained HTML page (the pure part: no I/O)."""
    body = "".join(_html(block) for block in document(report))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
        f"<title>Schemewatch case {_e(report.case_id)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )
