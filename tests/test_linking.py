"""Linking alerts into cases: which links count, time limits, and merges as alerts arrive."""

from __future__ import annotations

import pandas as pd
import pytest

from schemewatch import linking, store

pytestmark = pytest.mark.both_engines

HOUR = 3_600


def _alerts(*rows) -> pd.DataFrame:
    """Hand-built alerts; unspecified links are empty."""
    base = dict.fromkeys(store.LINK_COLUMNS)
    frame = pd.DataFrame([{**base, **row} for row in rows], columns=list(store.LINK_COLUMNS))
    return frame.assign(paid_at=frame["paid_at"].fillna(0))


def test_alerts_paid_into_one_account_are_one_case():
    alerts = _alerts(
        {"transaction_id": 5, "beneficiary_id": "A", "account_id": "ACC"},
        {"transaction_id": 9, "beneficiary_id": "B", "account_id": "ACC", "paid_at": 90 * 86_400},
        {"transaction_id": 12, "beneficiary_id": "C", "account_id": "OTHER"},
    )
    assert linking.case_of_each(alerts).tolist() == [5, 5, 12]


def test_an_agents_payouts_link_within_the_window_and_not_outside_it():
    alerts = _alerts(
        {"transaction_id": 1, "beneficiary_id": "A", "agent_id": "AG", "paid_at": 0},
        {"transaction_id": 2, "beneficiary_id": "B", "agent_id": "AG", "paid_at": HOUR // 2},
        {"transaction_id": 3, "beneficiary_id": "C", "agent_id": "AG", "paid_at": 5 * HOUR},
    )
    assert linking.case_of_each(alerts).tolist() == [1, 1, 3]


def test_a_chain_of_payouts_each_within_the_window_of_the_next_is_one_sweep():
    alerts = _alerts(
        *(
            {"transaction_id": i, "beneficiary_id": f"P{i}", "agent_id": "AG", "paid_at": i * 3000}
            for i in range(1, 6)
        )
    )
    assert set(linking.case_of_each(alerts).tolist()) == {1}


def test_same_phone_same_beneficiary_and_an_enrolment_camp_when_asked_for_link():
    alerts = _alerts(
        {"transaction_id": 1, "beneficiary_id": "A", "phone_hash": "PH"},
        {"transaction_id": 2, "beneficiary_id": "B", "phone_hash": "PH"},
        {"transaction_id": 3, "beneficiary_id": "A"},
        {
            "transaction_id": 4,
            "beneficiary_id": "D",
            "enrolled_by": "OP",
            "enrolled_on": "2025-01-01",
        },
        {
            "transaction_id": 5,
            "beneficiary_id": "E",
            "enrolled_by": "OP",
            "enrolled_on": "2025-01-03",
        },
        {
            "transaction_id": 6,
            "beneficiary_id": "F",
            "enrolled_by": "OP",
            "enrolled_on": "2025-03-01",
        },
    )
    camps = linking.LinkLimits(camp_days=3)
    assert linking.case_of_each(alerts, camps).tolist() == [1, 1, 1, 4, 4, 6]
    assert linking.case_of_each(alerts).tolist() == [1, 1, 1, 4, 5, 6]  # no camp link by default


def test_unrelated_alerts_stay_cases_of_their_own():
    alerts = _alerts(
        {"transaction_id": 7, "beneficiary_id": "A", "account_id": "", "agent_id": None},
        {"transaction_id": 8, "beneficiary_id": "B", "account_id": "", "agent_id": None},
    )
    assert linking.case_of_each(alerts).tolist() == [7, 8]


def _flag(conn, version: str, *transaction_ids: int) -> None:
    rows = [(version, t, 10.0, 1.0, 1, None, None, 0.0, 95.0, None) for t in transaction_ids]
    with store.write_transaction(conn):
        store.insert_scores(conn, rows)


def _cases(conn, version: str) -> dict[int, int]:
    return dict(store.alert_case_members(conn, version))


def test_a_new_alert_that_links_two_cases_merges_them_into_the_smaller_id(conn):
    # T1 and T2 are one beneficiary's payments; S is another beneficiary's payment into T2's
    # account (and into no account of T1's).
    t1, t2, s = conn.execute(
        "SELECT a.transaction_id, b.transaction_id, o.transaction_id "
        "FROM transactions a JOIN transactions b ON b.beneficiary_id = a.beneficiary_id "
        "AND b.transaction_id > a.transaction_id "
        "JOIN transactions o ON o.account_id = b.account_id "
        "AND o.beneficiary_id != b.beneficiary_id "
        "WHERE a.account_id != b.account_id LIMIT 1"
    ).fetchone()
    version = "v-test"
    _flag(conn, version, t1, s)
    linking.link_new_alerts(conn, version)
    before = _cases(conn, version)
    assert before[t1] == t1 and before[s] == s  # two cases so far
    _flag(conn, version, t2)
    linking.link_new_alerts(conn, version)
    after = _cases(conn, version)
    assert after[t1] == after[s] == after[t2] == min(t1, s, t2)


def test_linking_with_no_new_alert_writes_nothing(conn):
    assert linking.link_new_alerts(conn, "no-such-version") == 0


def test_the_monitor_puts_every_alert_in_a_case(scored_template):
    from schemewatch import modeling

    db, models = scored_template
    conn = store.connect(db, readonly=True)
    version = modeling.current_version(models)
    alerts = conn.execute("SELECT COUNT(*) FROM scores WHERE is_alert = 1").fetchone()[0]
    members = dict(store.alert_case_members(conn, version))
    assert len(members) == alerts > 0
    assert len(set(members.values())) < alerts  # some injected fraud linked together


def test_linking_alerts_as_they_arrive_equals_linking_them_all_at_once(conn):
    """The monitor links each tick's alerts against the cases they touch, not every alert;
    adding alerts never splits a case, so the cases must equal linking every alert afresh."""
    import numpy as np

    ids = [row[0] for row in conn.execute("SELECT transaction_id FROM transactions")]
    rng = np.random.default_rng(7)
    # Dense enough that agents' sweeps, accounts and phones link across ticks and merge cases.
    flagged = rng.choice(ids, size=len(ids) // 3, replace=False).tolist()
    version = "v-incremental"
    start = 0
    for size in (1, 5, 40, 3, 400, 2, 900, 7):
        _flag(conn, version, *flagged[start : start + size])
        linking.link_new_alerts(conn, version)
        start += size
    _flag(conn, version, *flagged[start:])
    linking.link_new_alerts(conn, version)
    stored = _cases(conn, version)
    everything = pd.DataFrame(
        store.alerts_for_linking(conn, version), columns=store.LINK_COLUMNS
    ).assign(case_id=None)
    afresh = dict(
        zip(everything["transaction_id"], linking.case_of_each(everything).tolist(), strict=True)
    )
    assert stored == afresh
    assert len(set(afresh.values())) < len(afresh) - 100  # merges really happened


def _waiting(conn, version: str) -> list[int]:
    sql = "SELECT transaction_id FROM alerts_to_link WHERE model_version = ? ORDER BY 1"
    return [row[0] for row in conn.execute(sql, (version,))]


def test_new_alerts_wait_in_the_queue_until_linking_gives_them_a_case(conn):
    ids = [row[0] for row in conn.execute("SELECT transaction_id FROM transactions LIMIT 5")]
    version = "v-queue"
    rows = [(version, t, 1.0, 2.0, 0, None, None, 0.0, 10.0, None) for t in ids[:2]]
    with store.write_transaction(conn):
        store.insert_scores(conn, rows)  # not alerts: nothing waits
    _flag(conn, version, *ids[2:])
    assert _waiting(conn, version) == sorted(ids[2:])
    assert store.has_unlinked_alerts(conn, version)
    assert linking.link_new_alerts(conn, version) == 3
    assert _waiting(conn, version) == [] and not store.has_unlinked_alerts(conn, version)
    assert sorted(_cases(conn, version)) == sorted(ids[2:])
    # One already in a case that waits again (a worker's retry, say) leaves quietly, unchanged.
    before = _cases(conn, version)
    with store.write_transaction(conn):
        conn.execute("INSERT INTO alerts_to_link VALUES (?, ?)", (version, ids[2]))
    assert linking.link_new_alerts(conn, version) == 0
    assert _waiting(conn, version) == [] and _cases(conn, version) == before


def test_the_migration_queues_the_alerts_scored_before_it_that_have_no_case(conn):
    from schemewatch.store import schema

    ids = [row[0] for row in conn.execute("SELECT transaction_id FROM transactions LIMIT 6")]
    version = "v-before"
    _flag(conn, version, *ids[:3])
    linking.link_new_alerts(conn, version)  # these three have cases
    _flag(conn, version, *ids[3:])  # these three not yet
    with store.write_transaction(conn):
        conn.execute("DROP TABLE alerts_to_link")  # as before the migration
        schema._migration_alerts_to_link(conn)
    assert _waiting(conn, version) == sorted(ids[3:])
    linking.link_new_alerts(conn, version)
    assert sorted(_cases(conn, version)) == sorted(ids)
