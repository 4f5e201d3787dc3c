"""Auditors' rules: named conditions written by supervisors and admins, backtested, then run.

A rule is a name and an expression in the rule language (`rule_language.py`). Every change —
add, edit, enable, disable — is audited old -> new; an edit adds a version and switches the rule
off, and a version may be enabled only after it has been backtested (`backtest`), whose summary
is kept with the version. The monitor runs the enabled rules on every new payment
(`EnabledRules.apply`): a hit makes the payment an alert, whatever the model said, records which
rule version hit, and puts the rule and its expression first among the alert's reasons.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from schemewatch import features, rule_language, store, triage
from schemewatch.errors import SchemewatchError
from schemewatch.exporter import IST, day_start, iso_timestamp
from schemewatch.rule_language import RuleError

MAX_NAME_LENGTH = 60
BACKTEST_CHUNK_ROWS = 100_000
FULL_REGISTRY_ROWS = 50_000  # above this many rows, loading the whole registry is cheaper
SAMPLE_HITS = 10


@dataclass(frozen=True)
class Rule:
    """A rule in its current version."""

    rule_id: int
    name: str
    current_version: int
    enabled: bool
    updated_by: str
    updated_at: float
    expression: str
    description: str | None
    backtest: dict | None  # the current version's last backtest summary
    backtested_by: str | None
    backtested_at: float | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Rule:
        values = dict(row)
        values["enabled"] = bool(values["enabled"])
        values["backtest"] = json.loads(values["backtest"]) if values["backtest"] else None
        return cls(**values)


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise RuleError("a rule needs a name")
    if len(name) > MAX_NAME_LENGTH or not name.isprintable():
        raise RuleError(f"a rule name is at most {MAX_NAME_LENGTH} printable characters")
    return name


def get_rule(conn, name: str) -> Rule:
    """The named rule; RuleError when there is none."""
    row = store.get_rule(conn, name)
    if row is None:
        raise RuleError(f"there is no rule named '{name}'; see `schemewatch rules list`")
    return Rule.from_row(row)


def list_rules(conn) -> list[Rule]:
    """Every rule in its current version, by name."""
    return [Rule.from_row(row) for row in store.list_rules(conn)]


def add_rule(conn, name: str, expression: str, description: str | None, actor: str, role: str):
    """Create a disabled rule at version 1; audited."""
    triage.require(role, "write_rules")
    name = _check_name(name)
    rule_language.parse(expression)
    with store.write_transaction(conn):
        if store.get_rule(conn, name) is not None:
            raise RuleError(f"a rule named '{name}' exists; edit it instead")
        store.insert_rule(conn, name, expression, description or None, actor)
        store.append_audit(conn, actor, "rule added", name, None, expression, description)
    return get_rule(conn, name)


def edit_rule(conn, name: str, expression: str, description: str | None, actor: str, role: str):
    """Give a rule a new version (disabled until backtested); audited old -> new expression."""
    triage.require(role, "write_rules")
    rule_language.parse(expression)
    with store.write_transaction(conn):
        rule = get_rule(conn, name)
        description = rule.description if description is None else (description or None)
        if expression == rule.expression and description == rule.description:
            return rule
        version = rule.current_version + 1
        store.insert_rule_version(conn, rule.rule_id, version, expression, description, actor)
        details = f"version {version}" + (" (was enabled; now off)" if rule.enabled else "")
        store.append_audit(conn, actor, "rule edited", name, rule.expression, expression, details)
    return get_rule(conn, name)


def set_enabled(conn, name: str, enabled: bool, actor: str, role: str) -> Rule:
    """Switch a rule on (only when its current version was backtested) or off; audited."""
    triage.require(role, "write_rules")
    with store.write_transaction(conn):
        rule = get_rule(conn, name)
        if enabled and rule.backtest is None:
            raise RuleError(
                f"rule '{name}' version {rule.current_version} has not been backtested; "
                f"run `schemewatch rules test '{name}'` (or Backtest on the Rules page) first"
            )
        if rule.enabled == enabled:
            return rule
        store.set_rule_enabled(conn, rule.rule_id, enabled, actor)
        state = {True: "enabled", False: "disabled"}
        store.append_audit(
            conn,
            actor,
            f"rule {state[enabled]}",
            name,
            state[rule.enabled],
            state[enabled],
            f"version {rule.current_version}",
        )
    return get_rule(conn, name)


def record_backtest(conn, name: str, result: Backtest, actor: str, role: str) -> Rule:
    """Keep a backtest with the rule's current version, if it tested that version's expression."""
    triage.require(role, "write_rules")
    with store.write_transaction(conn):
        rule = get_rule(conn, name)
        if rule.expression != result.expression:
            raise RuleError(f"rule '{name}' changed while it was being backtested; test it again")
        summary = json.dumps(result.summary())
        store.save_backtest(conn, rule.rule_id, rule.current_version, summary, actor)
        store.append_audit(
            conn,
            actor,
            "rule backtested",
            name,
            None,
            result.headline(),
            f"version {rule.current_version}",
        )
    return get_rule(conn, name)


# -- backtest ----------------------------------------------------------------------------------


@dataclass
class Backtest:
    """What a rule would have flagged over a period of stored payments."""

    expression: str
    start: int
    end: int
    transactions: int
    hits: int
    model_version: str | None
    model_alerts: int | None  # hits the model flagged too (None without a scored model)
    confirmed_fraud: int  # hits auditors confirmed as fraud
    false_positive: int  # hits auditors marked as false positives
    generated: bool  # a generated database: ground truth may be shown
    ground_truth_total: int  # labelled (injected) payments in the period
    ground_truth_hits: int
    samples: list[dict] = field(default_factory=list)

    @property
    def precision_by_dispositions(self) -> float | None:
        judged = self.confirmed_fraud + self.false_positive
        return self.confirmed_fraud / judged if judged else None

    @property
    def ground_truth_precision(self) -> float | None:
        if not self.generated or not self.hits:
            return None
        return self.ground_truth_hits / self.hits

    @property
    def ground_truth_recall(self) -> float | None:
        if not self.generated or not self.ground_truth_total:
            return None
        return self.ground_truth_hits / self.ground_truth_total

    def summary(self) -> dict:
        """Everything, as JSON-ready values (what is kept with the rule version)."""
        return {
            **asdict(self),
            "precision_by_dispositions": self.precision_by_dispositions,
            "ground_truth_precision": self.ground_truth_precision,
            "ground_truth_recall": self.ground_truth_recall,
        }

    def headline(self) -> str:
        """One line: hits out of transactions, and how many the model flagged too."""
        share = self.hits / self.transactions if self.transactions else 0.0
        model = (
            f"{self.model_alerts:,} already model alerts"
            if self.model_alerts is not None
            else "no scored model to compare with"
        )
        return f"{self.hits:,} hits in {self.transactions:,} transactions ({share:.2%}); {model}"

    def lines(self) -> list[str]:
        """The backtest in plain lines, for the CLI."""
        return summary_lines(self.summary())


def summary_lines(summary: dict) -> list[str]:
    """A stored backtest summary in plain lines (the CLI and the Rules page show these)."""
    start = iso_timestamp(summary["start"])[:10]
    end = iso_timestamp(summary["end"] - 1)[:10]
    hits, total = summary["hits"], summary["transactions"]
    share = hits / total if total else 0.0
    lines = [
        f"Period {start} to {end} (IST days): {hits:,} hits in {total:,} transactions "
        f"({share:.2%})."
    ]
    if summary["model_alerts"] is None:
        lines.append("Model alerts: no scored model to compare with.")
    else:
        lines.append(
            f"Already model alerts (model {summary['model_version']}): "
            f"{summary['model_alerts']:,} of {hits:,} hits."
        )
    judged = summary["confirmed_fraud"] + summary["false_positive"]
    if judged:
        lines.append(
            f"Precision by auditors' dispositions: {summary['precision_by_dispositions']:.1%} "
            f"({summary['confirmed_fraud']:,} confirmed fraud, {summary['false_positive']:,} "
            "false positives among the hits)."
        )
    else:
        lines.append("Precision by auditors' dispositions: no hit has a disposition yet.")
    if summary["generated"]:
        precision, recall = summary["ground_truth_precision"], summary["ground_truth_recall"]
        lines.append(
            "Ground truth (generated data): "
            f"precision {_share(precision)}, recall {_share(recall)} "
            f"({summary['ground_truth_hits']:,} of {summary['ground_truth_total']:,} injected "
            "payments in the period)."
        )
    return lines


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


DEFAULT_BACKTEST_DAYS = 30


def current_model_version(model_dir: Path) -> str | None:
    """The current model's version, or None when none is trained (hits are then not compared)."""
    from schemewatch import modeling

    try:
        return modeling.current_version(model_dir)
    except SchemewatchError:
        return None


def backtest_period(conn, first_day: date | None, last_day: date | None) -> tuple[int, int]:
    """[start, end) in unix seconds for inclusive IST days; by default the last 30 days stored."""
    if last_day is None:
        _, latest = store.paid_at_range(conn)
        if latest is None:
            raise RuleError("there are no stored payments to backtest on")
        last_day = datetime.fromtimestamp(latest, IST).date()
    if first_day is None:
        first_day = last_day - timedelta(days=DEFAULT_BACKTEST_DAYS - 1)
    if last_day < first_day:
        raise RuleError(f"the backtest period ends ({last_day}) before it starts ({first_day})")
    return day_start(first_day), day_start(last_day + timedelta(days=1))


def backtest(
    db_path: Path,
    expression: str,
    start: int,
    end: int,
    model_version: str | None,
    *,
    chunk_rows: int = BACKTEST_CHUNK_ROWS,
) -> Backtest:
    """Run an expression over the payments paid in [start, end) as the monitor would have.

    Features come from the same code the monitor uses (`features.compute_features` with the
    earlier rows the windows reach), computed a chunk of `chunk_rows` payments at a time. Memory
    holds the scoring columns of the payments before `end` plus one chunk's features.
    """
    parsed = rule_language.parse(expression)
    if end <= start:
        raise RuleError("the backtest period ends before it starts")
    payments = store.transactions_before(db_path, end)
    paid_at = payments["paid_at"].to_numpy(np.int64)
    first = int(np.searchsorted(paid_at, start, side="left"))
    conn = store.connect(db_path, readonly=True)
    try:
        hit_ids, samples = _hits(conn, parsed, payments, first, chunk_rows)
        return _judge(conn, expression, start, end, model_version, hit_ids, samples)
    finally:
        conn.close()


def _needs_features(parsed: rule_language.Expression) -> bool:
    return any(name in features.FEATURE_NAMES for name in parsed.names)


def _hits(conn, parsed, payments: pd.DataFrame, first: int, chunk_rows: int):
    from schemewatch import modeling  # the registry loader; TensorFlow is only imported to fit

    registry = None
    if _needs_features(parsed) and len(payments) - first > FULL_REGISTRY_ROWS:
        registry = modeling.load_registry(conn)
    hit_ids: list[np.ndarray] = []
    samples: list[pd.DataFrame] = []
    for begin in range(first, len(payments), chunk_rows):
        chunk = payments.iloc[begin : begin + chunk_rows]
        matrix = None
        if _needs_features(parsed):
            # Sorted by (paid_at, transaction_id): every row before `begin` is in the past.
            needed = features.history_needed(chunk, payments.iloc[:begin])
            people = sorted(set(chunk["beneficiary_id"]) | set(needed["beneficiary_id"]))
            matrix = features.compute_features(
                chunk, registry or modeling.load_registry(conn, people), needed
            )
        columns = rule_language.columns_for(parsed, chunk, matrix)
        matched = rule_language.evaluate(parsed, columns, len(chunk))
        hit_ids.append(chunk["transaction_id"].to_numpy()[matched])
        shown = chunk[matched].assign(**{n: v[matched] for n, v in columns.items()})
        samples.append(_spread(shown))
    ids = np.concatenate(hit_ids) if hit_ids else np.zeros(0, np.int64)
    return ids, _sample_rows(parsed, samples)


def _spread(frame: pd.DataFrame) -> pd.DataFrame:
    """At most SAMPLE_HITS rows, spread evenly over the frame (not only its first rows)."""
    if len(frame) <= SAMPLE_HITS:
        return frame
    return frame.iloc[np.linspace(0, len(frame) - 1, SAMPLE_HITS).astype(int)]


def _sample_rows(parsed, parts: list[pd.DataFrame]) -> list[dict]:
    if not parts:
        return []
    frame = _spread(pd.concat(parts, ignore_index=True))
    base = ["transaction_id", "beneficiary_id", "scheme", "amount", "state", "district"]
    out = []
    for row in frame.to_dict("records"):
        sample = {name: row[name] for name in base}
        sample["paid_at"] = iso_timestamp(int(row["paid_at"]))[:16].replace("T", " ")
        sample.update({name: _plain(row[name]) for name in parsed.names if name not in base})
        out.append({k: _plain(v) for k, v in sample.items()})
    return out


def _plain(value):
    if isinstance(value, np.generic):
        value = value.item()
    return round(value, 3) if isinstance(value, float) else value


def _judge(conn, expression, start, end, model_version, hit_ids, samples) -> Backtest:
    counts = store.period_counts(conn, start, end)
    labels = store.backtest_labels(conn, model_version, hit_ids.tolist())
    return Backtest(
        expression=expression,
        start=int(start),
        end=int(end),
        transactions=counts["transactions"],
        hits=len(hit_ids),
        model_version=model_version,
        model_alerts=sum(1 for _, by_model, *_ in labels if by_model) if model_version else None,
        confirmed_fraud=sum(1 for *_, d, _ in labels if d == "confirmed_fraud"),
        false_positive=sum(1 for *_, d, _ in labels if d == "false_positive"),
        generated=counts["generated"],
        ground_truth_total=counts["ground_truth"],
        ground_truth_hits=sum(1 for *_, typology in labels if typology is not None),
        samples=samples,
    )


# -- in the monitor ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    rule_id: int
    name: str
    version: int
    expression: rule_language.Expression


class EnabledRules:
    """The enabled rules, re-read at every monitor tick, applied to each scored chunk."""

    def __init__(self, db_path: Path):
        self.db_path = store.locate(db_path)
        self.rules: list[_Compiled] = []
        self.broken: dict[str, str] = {}  # enabled rules this code can no longer parse: why
        self._seen: list[tuple] = []

    def refresh(self, conn) -> None:
        """Pick up rules enabled, disabled or edited since the last tick.

        A stored rule that no longer parses (a feature renamed since it was written) is left
        out and named in `broken`, rather than stopping the scoring of every payment; the
        Rules page shows it as broken.
        """
        current = store.enabled_rules(conn)
        if current == self._seen:
            return
        self.rules, self.broken = [], {}
        for rule_id, name, version, text in current:
            try:
                self.rules.append(_Compiled(rule_id, name, version, rule_language.parse(text)))
            except RuleError as exc:
                self.broken[name] = str(exc)
        self._seen = current

    def apply(self, rows: pd.DataFrame, matrix: np.ndarray, model_version: str, is_alert, reasons):
        """Hits (RULE_HIT_COLUMNS rows); alert flags and reasons with the rules' hits added."""
        if not self.rules:
            return [], is_alert, reasons
        rows = self._with_district(rows)
        ids = rows["transaction_id"].to_numpy()
        is_alert, reasons = is_alert.copy(), reasons.copy()
        said: dict[int, list[dict]] = {}
        hits = []
        for rule in self.rules:
            columns = rule_language.columns_for(rule.expression, rows, matrix)
            matched = np.flatnonzero(rule_language.evaluate(rule.expression, columns, len(rows)))
            reason = rule_reason(rule.name, rule.version, rule.expression.text)
            for position in matched.tolist():
                hits.append((model_version, int(ids[position]), rule.rule_id, rule.version))
                said.setdefault(position, []).append(reason)
        for position, rule_reasons in said.items():
            earlier = json.loads(reasons[position]) if reasons[position] else []
            reasons[position] = json.dumps(rule_reasons + earlier, ensure_ascii=False)
            is_alert[position] = True
        return hits, is_alert, reasons

    def _with_district(self, rows: pd.DataFrame) -> pd.DataFrame:
        """The scoring read has no district; look it up only when a rule names it."""
        if "district" in rows or not any("district" in r.expression.names for r in self.rules):
            return rows
        conn = store.connect(self.db_path, readonly=True)
        try:
            districts = store.districts_of(conn, rows["transaction_id"].tolist())
        finally:
            conn.close()
        return rows.assign(district=rows["transaction_id"].map(districts))


def rule_reason(name: str, version: int, expression: str) -> dict:
    """The reason a rule hit gives: the rule's name, version and expression."""
    return {
        "rule": name,
        "rule_version": version,
        "text": f"matched rule '{name}' (version {version}): {expression}",
    }


def describe_source(by_model: bool, rule_names: list[str]) -> str:
    """Where an alert came from, in plain words: "model", "rule 'x'", "model and rule 'x'"."""
    rules = ""
    if rule_names:
        quoted = [f"'{name}'" for name in rule_names]
        joined = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
        rules = ("rule " if len(quoted) == 1 else "rules ") + joined
    if by_model and rules:
        return f"model and {rules}"
    return "model" if by_model else rules or "model"


def alert_source_labels(conn, model_version: str, transaction_ids) -> dict[int, str]:
    """Per alert id: where it came from ("model", "rule 'x'", "model and rule 'x'")."""
    sources = store.alert_sources(conn, model_version, transaction_ids)
    return {tid: describe_source(by_model, names) for tid, (by_model, names) in sources.items()}


def actor_role(conn, username: str) -> str:
    """The role of an existing dashboard account (for `--as USER` on the command line)."""
    row = store.get_user(conn, username)
    if row is None:
        raise SchemewatchError(f"there is no account named '{username}'")
    return row["role"]
