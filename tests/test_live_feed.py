import signal
import subprocess
import time

import pytest
from conftest import PYTHON, ROOT, today_at_ist

from schemewatch import schemes, store
from schemewatch.errors import FeedExhausted
from schemewatch.live_feed import LiveFeed
from schemewatch.typologies import FAMILIES, OFF_CYCLE_MARGIN

pytestmark = pytest.mark.both_engines


def _count(db):
    conn = store.connect(db, readonly=True)
    try:
        return store.count_rows(conn, store.TRANSACTIONS)
    finally:
        conn.close()


def test_simulator_inserts_about_rate_times_duration(generated_db):
    before = _count(generated_db)
    result = subprocess.run(
        [
            PYTHON,
            "live_feed_simulator.py",
            "--db",
            str(generated_db),
            "--rate",
            "200",
            "--duration",
            "3",
            "--seed",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    inserted = _count(generated_db) - before
    assert inserted == pytest.approx(600, rel=0.1)
    assert f"Inserted {inserted:,} transactions" in result.stdout


def test_feed_injects_every_kind_of_labelled_anomaly(generated_db):
    conn = store.open_database(generated_db)
    feed = LiveFeed(conn, anomaly_rate=0.3, seed=3)
    before = store.typology_counts(conn)
    for _ in range(8):
        feed.tick(60)
    after = store.typology_counts(conn)
    grown = {t for t in after if after[t] > before.get(t, 0)}
    assert len(grown) >= 6
    assert feed.totals.anomalies == sum(after.values()) - sum(before.values())


def test_honest_live_payments_never_pay_an_instalment_twice(generated_db):
    conn = store.open_database(generated_db)
    first_new = store.next_transaction_id(conn)
    feed = LiveFeed(conn, anomaly_rate=0.0, seed=4)
    for _ in range(5):
        feed.tick(200)
    new_keys = conn.execute(
        "SELECT beneficiary_id, scheme, instalment_period, COUNT(*) FROM transactions "
        "WHERE transaction_id >= ? GROUP BY 1, 2, 3",
        (first_new,),
    ).fetchall()
    assert len(new_keys) == 1000 and all(row[3] == 1 for row in new_keys)
    clashes = conn.execute(
        "SELECT COUNT(*) FROM transactions n JOIN transactions o "
        "ON o.beneficiary_id = n.beneficiary_id AND o.scheme = n.scheme "
        "AND o.instalment_period = n.instalment_period AND o.transaction_id < ? "
        "WHERE n.transaction_id >= ?",
        (first_new, first_new),
    ).fetchone()[0]
    assert clashes == 0


def test_feed_stops_cleanly_when_every_instalment_is_paid(generated_db):
    conn = store.open_database(generated_db)
    feed = LiveFeed(conn, anomaly_rate=0.0, seed=5)
    with pytest.raises(FeedExhausted, match="paid for the current period"):
        for _ in range(100):
            feed.tick(500)


def test_feed_on_empty_database_is_a_clear_error(empty_conn):
    with pytest.raises(FeedExhausted, match="no enrolled beneficiaries"):
        LiveFeed(empty_conn)


def test_ctrl_c_stops_the_simulator_cleanly(generated_db):
    process = subprocess.Popen(
        [PYTHON, "live_feed_simulator.py", "--db", str(generated_db), "--rate", "50"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Inserted" in out and "Traceback" not in err
    assert _count(generated_db) > 6_000


def _agent_payouts(conn, first_new) -> int:
    sql = "SELECT COUNT(*) FROM transactions WHERE transaction_id >= ? AND agent_id IS NOT NULL"
    return conn.execute(sql, (first_new,)).fetchone()[0]


def test_honest_live_payouts_respect_each_agents_pace(generated_db):
    conn = store.open_database(generated_db)
    first_new = store.next_transaction_id(conn)
    feed = LiveFeed(conn, anomaly_rate=0.0, seed=6, clock=today_at_ist(11))
    for _ in range(4):
        feed.tick(250)
    busiest = conn.execute(
        "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM transactions "
        "WHERE transaction_id >= ? AND agent_id IS NOT NULL GROUP BY agent_id) AS per_agent",
        (first_new,),
    ).fetchone()[0]
    assert busiest == 1  # a few seconds of feed: no agent serves two people
    assert store.count_rows(conn, store.TRANSACTIONS) - first_new + 1 == 1000


def test_at_night_honest_live_payments_go_to_the_bank_as_counters_are_closed(generated_db):
    conn = store.open_database(generated_db)
    first_new = store.next_transaction_id(conn)
    LiveFeed(conn, anomaly_rate=0.0, seed=6, clock=today_at_ist(11)).tick(500)
    assert _agent_payouts(conn, first_new) > 20  # by day, agents pay out
    at_night = store.next_transaction_id(conn)
    LiveFeed(conn, anomaly_rate=0.0, seed=6, clock=today_at_ist(23)).tick(500)
    assert store.next_transaction_id(conn) - at_night == 500
    assert _agent_payouts(conn, at_night) == 0


def test_feed_draws_each_typology_from_the_generators_families(generated_db):
    conn = store.open_database(generated_db)
    first_new = store.next_transaction_id(conn)
    clock = [store.latest_paid_at(conn) + 3600]
    feed = LiveFeed(conn, anomaly_rate=0.3, seed=8, clock=lambda: clock[0])
    for _ in range(24):  # an hour apart: bursts and sweeps spanning minutes to a day come due
        feed.tick(40)
        clock[0] += 3600
    groups = conn.execute(
        "SELECT g.typology, g.group_id, COUNT(*), MAX(t.paid_at) - MIN(t.paid_at) "
        "FROM ground_truth g JOIN transactions t USING (transaction_id) "
        "WHERE t.transaction_id >= ? GROUP BY 1, 2",
        (first_new,),
    ).fetchall()
    spans = {}
    for typology, _, size, span in groups:
        spans.setdefault(typology, []).append((size, span))
    low, high = FAMILIES["burst"]["payments"]
    assert all(size <= high and span <= 86_400 for size, span in spans["burst"])
    assert all(
        size <= FAMILIES["agent_collusion"]["payouts"][1] for size, _ in spans["agent_collusion"]
    )
    copies = conn.execute(
        "SELECT MIN(t.paid_at - o.paid_at) FROM ground_truth g "
        "JOIN transactions t USING (transaction_id) JOIN transactions o "
        "ON o.beneficiary_id = t.beneficiary_id AND o.scheme = t.scheme "
        "AND o.instalment_period = t.instalment_period AND o.amount = t.amount "
        "AND o.transaction_id < t.transaction_id "
        "WHERE g.typology = 'duplicate_instalment' AND t.transaction_id >= ? "
        "GROUP BY t.transaction_id",
        (first_new,),
    ).fetchall()
    assert copies  # every duplicate copies an earlier payment made 10 minutes to 42 days before
    earliest, latest = FAMILIES["duplicate_instalment"]["seconds_apart"]
    assert all(earliest <= gap <= latest for (gap,) in copies)
    off_cycle = conn.execute(
        "SELECT t.scheme, t.instalment_period, t.paid_at FROM ground_truth g "
        "JOIN transactions t USING (transaction_id) "
        "WHERE g.typology = 'off_cycle' AND t.transaction_id >= ?",
        (first_new,),
    ).fetchall()
    for scheme, period, paid_at in off_cycle:
        start, end = schemes.period_window(scheme, period)
        assert paid_at < start - OFF_CYCLE_MARGIN or paid_at >= end + OFF_CYCLE_MARGIN
    assert len(spans) == 9  # every typology, several groups of most


def test_two_feeds_enrolling_ghosts_at_once_never_reuse_an_id(generated_db):
    """Each feed numbers new ghosts after the registry it read; the second renumbers."""
    feeds = [LiveFeed(store.open_database(generated_db), seed=seed) for seed in (1, 2)]
    now = int(store.now())
    for feed in feeds:
        writes = {"people": [], "enrolments": [], "deaths": []}
        batch = feed._inject_ghost_beneficiary(now, writes)
        feed._write(batch.sorted_by_time(), writes)
    conn = store.connect(generated_db)
    try:
        ids = [row[0] for row in conn.execute("SELECT beneficiary_id FROM beneficiaries")]
        orphans = conn.execute(
            "SELECT COUNT(*) FROM transactions t LEFT JOIN beneficiaries b "
            "USING (beneficiary_id) WHERE b.beneficiary_id IS NULL"
        ).fetchone()[0]
    finally:
        conn.close()
        for feed in feeds:
            feed.conn.close()
    assert len(ids) == len(set(ids))
    assert orphans == 0
    first, second = (set(feed.world.beneficiary_ids[-5:].tolist()) for feed in feeds)
    assert not first & second


def test_a_feed_waits_out_a_database_another_writer_holds_and_writes_the_same_batch(
    generated_db,
):
    import threading

    held, release = threading.Event(), threading.Event()

    def another_writer():  # another process's long write
        holder = store.connect(generated_db)
        with store.write_transaction(holder):
            held.set()
            release.wait(60)
        holder.close()

    before = _count(generated_db)
    heard, counts = [], []

    def on_busy(line):
        heard.append(line)
        counts.append(_count(generated_db))
        release.set()

    conn = store.open_database(generated_db, busy_timeout_ms=200)
    feed = LiveFeed(conn, seed=8, on_busy=on_busy)
    writer = threading.Thread(target=another_writer)
    writer.start()
    assert held.wait(60)
    batch = feed.tick(30)
    writer.join(60)
    conn.close()
    assert heard and counts[0] == before  # it waited, and nothing was written meanwhile
    assert all("busy" in line and "trying again in" in line for line in heard)
    assert len(batch) >= 30 and _count(generated_db) == before + len(batch)


def test_busy_writes_are_tried_again_with_waits_doubling_to_a_limit():
    from schemewatch.errors import DatabaseBusy

    failures, slept, heard = iter(range(7)), [], []

    def action():
        if next(failures, None) is not None:
            raise DatabaseBusy("database is busy or locked (locked)")
        return "written"

    assert store.retry_while_busy(action, heard.append, slept.append) == "written"
    assert slept == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert heard[0] == "database is busy or locked (locked); trying again in 0.5 s"
