"""Training, the monitor (exactly once, crash-safe, new models), explanations, evaluation."""

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import PYTHON, ROOT, copy_database

from schemewatch import features, history, modeling, store
from schemewatch.detector import AutoencoderConfig
from schemewatch.errors import ModelError
from schemewatch.monitor import ClaimingMonitor, Monitor
from schemewatch.payments import TYPOLOGIES

pytestmark = pytest.mark.both_engines

FAST = AutoencoderConfig(epochs=3, batch_size=512, seed=1)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
# On PostgreSQL the monitor is a claiming worker: small claims that a killed worker leaves to
# expire quickly (SQLite's single monitor accepts and ignores these).
CLAIMS = ("--claim-rows", "500", "--claim-seconds", "2")


@pytest.fixture(scope="module")
def trained(generated_template, tmp_path_factory):
    """The template database and a model trained on it, shared by read-only tests."""
    folder = tmp_path_factory.mktemp("trained")
    db = folder / "transactions.db"
    shutil.copy(generated_template, db)
    modeling.train(db, folder / "modeling", config=FAST)
    return db, folder / "modeling"


@pytest.fixture(scope="module")
def trained_pg(generated_template_pg, postgres_cluster, tmp_path_factory):
    """The same in PostgreSQL: a template database and a model trained on it."""
    folder = tmp_path_factory.mktemp("trained_pg")
    db = store.locate(
        postgres_cluster.create_database("trained_template", template=generated_template_pg.name)
    )
    modeling.train(db, folder / "modeling", config=FAST)
    return db, folder / "modeling"


@pytest.fixture
def scored_copy(engine, tmp_path, request):
    db, models = request.getfixturevalue("trained" if engine == "sqlite" else "trained_pg")
    shutil.copytree(models, tmp_path / "modeling")
    return copy_database(engine, db, tmp_path, request), tmp_path / "modeling"


def _scores(db):
    conn = store.connect(db)
    try:
        return [
            tuple(row)
            for row in conn.execute(
                "SELECT model_version, COUNT(*), COUNT(DISTINCT transaction_id), SUM(is_alert) "
                "FROM scores GROUP BY model_version"
            ).fetchall()
        ]
    finally:
        conn.close()


def _cli(*args, check=True, env=ENV):
    return subprocess.run(
        [PYTHON, "-m", "schemewatch", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=check,
        timeout=300,
    )


def test_model_card_records_what_the_issue_asks(trained):
    _, models = trained
    card = modeling.load_model(models).card
    for key in (
        "version",
        "trained_at",
        "rows",
        "features",
        "scaling",
        "threshold",
        "training_loss",
    ):
        assert key in card
    assert card["rows"] == 6_000 and len(card["training_loss"]) == FAST.epochs


def test_training_fits_a_stratified_sample_and_calibrates_on_every_row(generated_db, tmp_path):
    card = modeling.train(generated_db, tmp_path / "models", config=FAST, sample_rows=1_500)
    assert card["rows"] == 6_000 and abs(card["rows_fitted"] - 1_500) <= 40
    model = modeling.load_model(tmp_path / "models")
    conn = store.open_database(generated_db)
    transactions, matrix = modeling.feature_matrix(generated_db, conn)
    conn.close()
    scores = model.detector.score(matrix)
    assert (scores > card["threshold"]).mean() == pytest.approx(0.01, abs=0.002)
    low, high = np.percentile(matrix[:, 0], [1, 99])
    assert card["normal_ranges"]["log_amount"] == pytest.approx([low, high], rel=1e-6)
    keys = modeling.sample_keys(transactions["transaction_id"].to_numpy(), seed=1)
    assert np.array_equal(keys, modeling.sample_keys(np.arange(1, 6_001), seed=1))
    assert 0 <= keys.min() and keys.max() < 1


def test_chunks_are_halved_in_a_large_store(generated_db, monkeypatch):
    conn = store.open_database(generated_db)
    registry = modeling.load_registry(conn)
    monkeypatch.setattr(history, "CHUNK_ROWS", 2_000)
    sizes = [len(rows) for rows, _ in history.feature_chunks(generated_db, conn, registry)]
    assert sizes == [2_000, 2_000, 2_000]  # 6,000 rows: not a large store
    monkeypatch.setattr(history, "LARGE_STORE_ROWS", 5_000)
    sizes = [len(rows) for rows, _ in history.feature_chunks(generated_db, conn, registry)]
    conn.close()
    assert sizes == [1_000] * 6


def test_training_sample_is_read_back_from_the_spilled_feature_chunks(tmp_path):
    rng = np.random.default_rng(0)
    width = len(features.FEATURE_NAMES)
    chunks = [rng.random((size, width)).astype(np.float32) for size in (700, 1, 2_300)]
    spill = modeling._Spill(tmp_path)
    for chunk in chunks:
        spill.append(np.asfortranarray(chunk))  # feature chunks come column-major
    everything = np.concatenate(chunks)
    chosen = np.sort(rng.choice(len(everything), 1_234, replace=False))
    assert np.array_equal(spill.rows(chosen), everything[chosen])
    assert np.array_equal(spill.rows(np.array([700])), everything[[700]])  # the one-row chunk
    assert spill.rows(np.zeros(0, np.int64)).shape == (0, width)
    spill.close()


def test_threshold_leaves_the_alert_budget_above_it(scored_copy):
    db, models = scored_copy
    _cli("monitor", "--once", "--db", db, "--model-dir", models, *CLAIMS)
    [(_, count, distinct, alerts)] = _scores(db)
    assert count == distinct == 6_000
    assert alerts == pytest.approx(60, abs=15)


def test_training_and_scoring_never_read_the_ground_truth(scored_copy, tmp_path, engine, request):
    db, _ = scored_copy
    blind = copy_database(engine, db, tmp_path, request, "blind.db")
    conn = store.connect(blind)
    conn.execute("DROP TABLE ground_truth")
    conn.close()
    with_labels = modeling.train(db, tmp_path / "a", config=FAST)
    without = modeling.train(blind, tmp_path / "b", config=FAST)
    assert with_labels["threshold"] == pytest.approx(without["threshold"], rel=1e-5)
    _cli("monitor", "--once", "--db", blind, "--model-dir", tmp_path / "b")
    assert _scores(blind)[0][1] == 6_000


def test_monitor_refuses_a_model_with_a_different_feature_list(scored_copy):
    db, models = scored_copy
    version = modeling.current_version(models)
    card_path = models / version / modeling.CARD_FILE
    card = json.loads(card_path.read_text())
    card["features"] = card["features"][:-1]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="different feature list"):
        modeling.load_model(models)
    result = _cli("monitor", "--once", "--db", db, "--model-dir", models, check=False)
    assert result.returncode == 1
    assert "Error: model" in result.stderr and "retrain" in result.stderr
    assert "Traceback" not in result.stderr


def test_train_if_needed_keeps_a_fitting_model_and_replaces_a_stale_one(scored_copy):
    db, models = scored_copy
    version = modeling.current_version(models)
    kept = _cli("train", "--if-needed", "--epochs", "1", "--db", db, "--model-dir", models)
    assert "not retraining" in kept.stdout and modeling.current_version(models) == version
    card_path = models / version / modeling.CARD_FILE
    card = json.loads(card_path.read_text())
    card["features"] = card["features"][:-1]
    card_path.write_text(json.dumps(card))
    _cli("train", "--if-needed", "--epochs", "1", "--db", db, "--model-dir", models)
    assert modeling.current_version(models) != version
    assert modeling.why_train(models) is None


def test_monitor_without_a_model_says_how_to_get_one(generated_db, tmp_path):
    result = _cli(
        "monitor", "--once", "--db", generated_db, "--model-dir", tmp_path / "none", check=False
    )
    assert result.returncode == 1
    assert "no trained model" in result.stderr and "train.py" in result.stderr


def test_alerts_carry_plain_word_reasons_and_a_typology(scored_copy):
    db, models = scored_copy
    Monitor(db, models).tick()
    conn = store.connect(db)
    rows = conn.execute("SELECT reasons, resembles FROM scores WHERE is_alert = 1").fetchall()
    quiet = conn.execute("SELECT COUNT(*) FROM scores WHERE is_alert = 0 AND reasons IS NOT NULL")
    assert rows and quiet.fetchone()[0] == 0
    for reasons, resembles in rows:
        parsed = json.loads(reasons)
        assert 1 <= len(parsed) <= 3
        assert all(r["text"] and "normal is" in r["text"] or "paid" in r["text"] for r in parsed)
        assert resembles in TYPOLOGIES


def test_incremental_monitor_scores_like_a_backfill(scored_copy, tmp_path, engine, request):
    db, models = scored_copy
    backfill = copy_database(engine, db, tmp_path, request, "backfill.db")
    Monitor(backfill, models).tick()
    small = Monitor(db, models, batch_size=700)
    while small.tick().scored:
        pass
    query = "SELECT transaction_id, score FROM scores ORDER BY transaction_id"
    one = store.connect(backfill).execute(query).fetchall()
    many = store.connect(db).execute(query).fetchall()
    assert len(one) == len(many) == 6_000
    assert all(
        a[0] == b[0] and a[1] == pytest.approx(b[1], rel=1e-4)
        for a, b in zip(one, many, strict=True)
    )


@pytest.mark.parametrize("with_forest", [False, True])
def test_monitor_stores_the_detectors_own_score(scored_copy, with_forest):
    """Evaluation, the threshold and the monitor rank by one score: `detector.score`."""
    db, models = scored_copy
    if with_forest:  # a score that is not simply the largest contribution
        modeling.train(db, models, config=replace(FAST, isolation_forest=True))
    Monitor(db, models).tick()
    model = modeling.load_model(models)
    conn = store.open_database(db)
    transactions, matrix = modeling.feature_matrix(db, conn)
    stored = dict(
        conn.execute(
            "SELECT transaction_id, score FROM scores WHERE model_version = ?", (model.version,)
        ).fetchall()
    )
    expected = model.detector.score(matrix)
    got = np.array([stored[i] for i in transactions["transaction_id"].tolist()])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _all_scores(db):
    query = "SELECT transaction_id, score, is_alert, reasons FROM scores ORDER BY transaction_id"
    return store.connect(db).execute(query).fetchall()


def test_chunked_backfill_scores_like_the_whole_table(
    scored_copy, tmp_path, monkeypatch, engine, request
):
    """Chunks of 7 and 400 rows, with the history tail pruned often, give the same scores; also
    when every id's hash collides with others' (the tail then finds more rows than the windows
    need, and prunes by the text itself)."""
    db, models = scored_copy
    whole = copy_database(engine, db, tmp_path, request, "whole.db")
    Monitor(whole, models, chunk_size=1_000_000).tick()
    monkeypatch.setattr(history.Tail, "PRUNE_ROWS", 50)
    expected = _all_scores(whole)
    real_hashes = history.id_hashes
    for chunk_size, hashes in ((7, real_hashes), (400, _colliding(real_hashes))):
        monkeypatch.setattr(history, "id_hashes", hashes)
        copy = copy_database(engine, db, tmp_path, request, f"chunks-{chunk_size}.db")
        chunked = Monitor(copy, models, chunk_size=chunk_size)
        chunked.tick()
        assert chunked.tail.horizon > 0  # the tail was pruned on the way
        got = _all_scores(copy)
        assert len(got) == len(expected) == 6_000
        assert [g[0] for g in got] == [e[0] for e in expected]
        assert [g[2] for g in got] == [e[2] for e in expected]
        assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], rel=1e-5)


def _colliding(hashes):
    """Hashes with 16 values only: most ids share theirs with others."""
    return lambda column: hashes(column) % np.uint64(16)


def test_hash_collisions_are_found_by_the_check_hash():
    """Rows whose keys are equal but whose check hashes differ are not taken for one group."""
    keys = np.array([7, 3, 7], np.uint64)
    assert history._hashes_collide(keys, np.array([1, 2, 5], np.uint64))
    assert not history._hashes_collide(keys, np.array([1, 2, 1], np.uint64))
    assert not history._hashes_collide(np.array([1, 2, 3], np.uint64), np.arange(3))


def test_id_hashes_are_equal_for_equal_text_wherever_it_sits():
    """The same id hashes alike in frames of different make-up (sliced, concatenated, missing)."""
    first = pd.Series(["B0001", None, "", "B0002", "महेश"], dtype="str")
    second = pd.concat([pd.Series(["x"], dtype="str"), first.iloc[::-1]], ignore_index=True)
    for hashes in (history.id_hashes, history.check_hashes):
        a, b = hashes(first), hashes(second.iloc[1:])
        np.testing.assert_array_equal(a, b[::-1])
        assert len(set(a.tolist())) == 5  # missing, empty and each id apart
    assert (history.id_hashes(first) != history.check_hashes(first))[[0, 3, 4]].all()


def test_a_live_monitor_starts_with_its_history_in_one_frame(scored_copy):
    """The tail is pruned into one part of old rows and one of recent rows (ids hashed) before
    watching starts."""
    db, models = scored_copy
    assert Monitor(db, models).tick().scored == 6_000  # a backfill; then a live start:
    live = Monitor(db, models, chunk_size=1_000)
    assert live.tick().scored == 0  # everything is scored: it only gets ready
    assert len(live.tail) > 0 and len(live.tail.old) == 1 and len(live.tail.recent) <= 1


def test_live_history_stays_bounded(scored_copy, monkeypatch):
    """Rows older than the longest window leave the live monitor's memory."""
    db, models = scored_copy
    monkeypatch.setattr(history.Tail, "PRUNE_ROWS", 100)
    live = Monitor(db, models, batch_size=500)
    while live.tick().scored:
        pass
    tail = live.tail
    tail.prune()
    kept = pd.concat(tail.frames)
    assert len(kept) < 6_000
    older = kept[kept["paid_at"] < tail.horizon]
    # Before the horizon: only each beneficiary's latest payment of each scheme and one per
    # account they use.
    latest_per_scheme = older.groupby(["beneficiary_id", "scheme"]).ngroups
    assert len(older) <= latest_per_scheme + older["beneficiary_id"].nunique()
    assert len(tail.dropped_periods) > 0


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_nothing_unscored_and_nothing_twice(scored_copy):
    db, models = scored_copy
    feed = subprocess.Popen(
        [
            PYTHON,
            "live_feed_simulator.py",
            "--db",
            str(db),
            "--rate",
            "400",
            "--quiet",
            "--seed",
            "2",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for kill_after in (2.0, 3.1, 1.7, 2.6):
            monitor = subprocess.Popen(
                [
                    PYTHON,
                    "monitor.py",
                    "--db",
                    str(db),
                    "--model-dir",
                    models,
                    "--poll",
                    "0.05",
                    "--batch-size",
                    "500",
                    *CLAIMS,
                    "--quiet",
                ],
                cwd=ROOT,
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(kill_after)
            monitor.send_signal(signal.SIGKILL)
            monitor.wait(timeout=30)
            assert "Traceback" not in monitor.stderr.read()
    finally:
        feed.send_signal(signal.SIGINT)
        feed.wait(timeout=60)
    _cli("monitor", "--once", "--db", db, "--model-dir", models, *CLAIMS)
    conn = store.connect(db)
    transactions = conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
    assert transactions > 6_500
    [(_, count, distinct, _)] = _scores(db)
    assert count == distinct == transactions
    missing = conn.execute(
        "SELECT COUNT(*) FROM transactions t LEFT JOIN scores s USING (transaction_id) "
        "WHERE s.transaction_id IS NULL"
    ).fetchone()[0]
    assert missing == 0


@pytest.mark.slow
def test_monitor_picks_up_a_newly_trained_model_without_restart(scored_copy):
    db, models = scored_copy
    monitor = subprocess.Popen(
        [PYTHON, "monitor.py", "--db", str(db), "--model-dir", models, "--poll", "0.1", "--quiet"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _scores(db):
            time.sleep(0.5)
        first = modeling.current_version(models)
        modeling.train(db, models, config=AutoencoderConfig(epochs=2, batch_size=512, seed=9))
        second = modeling.current_version(models)
        assert second != first
        while time.time() < deadline:
            versions = {v: n for v, n, _, _ in _scores(db)}
            if versions.get(second) == 6_000:
                break
            time.sleep(0.5)
    finally:
        monitor.send_signal(signal.SIGINT)
        monitor.wait(timeout=60)
    assert versions.get(second) == 6_000 and versions.get(first) == 6_000, monitor.stderr.read()


def test_evaluation_reports_every_model_and_beats_basic_features_on_behaviour(trained):
    db, models = trained
    report = json.loads(_cli("evaluate", "--json", "--db", db, "--model-dir", models).stdout)
    names = {"autoencoder", "isolation_forest", "autoencoder_basic_features"}
    assert set(report["models"]) == names
    for figures in report["models"].values():
        assert set(figures) >= {
            "precision",
            "recall",
            "f1",
            "pr_auc",
            "roc_auc",
            "recall_at_budget",
            "per_typology",
        }
        assert set(figures["recall_at_budget"]) == {"0.005", "0.01", "0.02"}
        assert set(figures["per_typology"]) == set(TYPOLOGIES)
    behavioural = ("burst", "duplicate_instalment", "shared_account_ring", "payment_after_death")

    def mean_recall(name):
        typologies = report["models"][name]["per_typology"]
        return sum(typologies[t]["recall_at_1pct"] for t in behavioural) / len(behavioural)

    # With 2% anomalies and a 1% budget, at most half of them can be caught.
    assert mean_recall("autoencoder") > mean_recall("autoencoder_basic_features") + 0.1
    models = report["models"]
    assert models["autoencoder"]["pr_auc"] > models["autoencoder_basic_features"]["pr_auc"] + 0.3


def test_evaluate_if_needed_runs_once_per_model_and_not_without_ground_truth(trained, tmp_path):
    db, models = trained
    own_models = tmp_path / "modeling"
    shutil.copytree(models, own_models)
    for saved in own_models.glob("*/evaluation.json"):
        saved.unlink()
    command = ("evaluate", "--if-needed", "--quiet", "--model-dir", own_models)
    first = _cli(*command, "--db", db)
    assert "autoencoder" in first.stdout and "recall at 1.0% budget" in first.stdout
    assert "computing features" not in first.stderr  # --quiet
    version = modeling.current_version(own_models)
    assert (own_models / version / "evaluation.json").exists()
    again = _cli(*command, "--db", db)
    assert again.stdout == f"Not evaluating: the evaluation of model {version} is already saved.\n"
    (own_models / version / "evaluation.json").unlink()
    unlabelled = tmp_path / "unlabelled.db"
    store.open_database(unlabelled).close()
    nothing = _cli(*command, "--db", unlabelled)
    assert "no ground-truth labels" in nothing.stdout
    assert not (own_models / version / "evaluation.json").exists()


def test_commands_that_load_tensorflow_print_none_of_its_start_up_lines(trained, tmp_path):
    db = tmp_path / "transactions.db"
    shutil.copy(trained[0], db)
    quiet_env = {k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = _cli("monitor", "--once", "--db", db, "--model-dir", trained[1], env=quiet_env)
    assert "Scored" in result.stdout
    assert "oneDNN" not in result.stderr and "absl" not in result.stderr, result.stderr


def test_daily_summary_matches_the_scored_rows(scored_copy):
    db, models = scored_copy
    Monitor(db, models, batch_size=2_500).tick()  # two ticks' worth, to exercise the upsert
    Monitor(db, models, batch_size=2_500).tick()
    Monitor(db, models).tick()
    conn = store.connect(db)
    raw = conn.execute(
        "SELECT date(t.paid_at + 19800, 'unixepoch') AS day, t.scheme, t.state, COUNT(*), "
        "SUM(t.amount), SUM(s.is_alert) FROM transactions t "
        "JOIN scores s USING (transaction_id) GROUP BY 1, 2, 3"
    ).fetchall()
    summary = conn.execute(
        "SELECT day, scheme, state, transactions, amount, alerts FROM daily_summary"
    ).fetchall()
    raw, summary = (sorted((*r[:4], round(r[4], 2), r[5]) for r in rows) for rows in (raw, summary))
    assert raw == summary and sum(r[3] for r in summary) == 6_000


def test_an_admins_threshold_applies_to_rows_scored_afterwards(scored_copy):
    db, models = scored_copy
    Monitor(db, models, batch_size=3_000).tick()
    version = modeling.current_version(models)
    calibrated = modeling.load_model(models).threshold
    previous = modeling.set_threshold(models, version, calibrated / 100, "meera")
    assert previous == pytest.approx(calibrated)
    Monitor(db, models).tick()
    conn = store.connect(db)
    thresholds = conn.execute("SELECT COUNT(DISTINCT threshold) FROM scores").fetchone()[0]
    rates = dict(
        conn.execute(
            "SELECT transaction_id > 3000, AVG(is_alert) FROM scores GROUP BY 1"
        ).fetchall()
    )
    assert thresholds == 2 and rates[1] > 5 * rates[0]
    with pytest.raises(ModelError, match="positive"):
        modeling.set_threshold(models, version, 0, "meera")


def _worker(db, models) -> subprocess.Popen:
    return subprocess.Popen(
        [PYTHON, "monitor.py", "--db", str(db), "--model-dir", models, "--poll", "0.05"]
        + [*CLAIMS, "--quiet"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_workers_one_killed_again_and_again_score_every_row_exactly_once(scored_copy, engine):
    if engine == "sqlite":
        pytest.skip("several monitor workers share a PostgreSQL store; SQLite runs one monitor")
    db, models = scored_copy
    feed = subprocess.Popen(
        [PYTHON, "live_feed_simulator.py", "--db", str(db), "--rate", "400", "--quiet"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    steady = _worker(db, models)
    watch = store.connect(db)
    killed_holding_a_claim = 0
    try:
        for pause in (0.0, 0.15, 0.3):
            # The steady worker is held while the victim starts, so a backlog builds up and the
            # victim's claims are full ranges; the held worker's own open claim expires meanwhile
            # and is taken over, so its late commit must be refused too.
            steady.send_signal(signal.SIGSTOP)
            victim = _worker(db, models)
            name = f"{socket.gethostname()}:{victim.pid}"
            deadline = time.time() + 90
            while time.time() < deadline and not _holds_open_claim(watch, name):
                time.sleep(0.02)
            time.sleep(pause)  # killed at different moments of its range
            killed_holding_a_claim += _holds_open_claim(watch, name)
            victim.send_signal(signal.SIGKILL)
            steady.send_signal(signal.SIGCONT)
            victim.wait(timeout=30)
            assert "Traceback" not in victim.stderr.read()
    finally:
        watch.close()
        feed.send_signal(signal.SIGINT)
        feed.wait(timeout=60)
    try:
        _cli("monitor", "--once", "--db", db, "--model-dir", models, *CLAIMS)
    finally:
        steady.send_signal(signal.SIGINT)
        steady.wait(timeout=60)
    assert "Traceback" not in steady.stderr.read()
    conn = store.connect(db)
    transactions = conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0]
    assert transactions > 6_500
    [(_, count, distinct, _)] = _scores(db)
    assert count == distinct == transactions
    # The daily summary adds each commit's counts: a range scored twice would count twice.
    summed = conn.execute("SELECT SUM(transactions) FROM daily_summary").fetchone()[0]
    assert summed == transactions
    takeovers = conn.execute("SELECT SUM(takeovers) FROM score_claims").fetchone()[0]
    assert killed_holding_a_claim >= 2 and takeovers >= 1  # ranges left by the dead were redone
    conn.close()


def _holds_open_claim(conn, worker: str) -> bool:
    sql = "SELECT COUNT(*) FROM score_claims WHERE worker = ? AND done_at IS NULL"
    return conn.execute(sql, (worker,)).fetchone()[0] > 0


def test_claimed_ranges_score_like_the_single_monitor(scored_copy, tmp_path, engine, request):
    """A worker reads each range's history from the store: same scores as the carried tail."""
    db, models = scored_copy
    single = copy_database(engine, db, tmp_path, request, "single.db")
    Monitor(single, models).tick()
    worker = ClaimingMonitor(db, models, claim_rows=700, worker="w1")
    while worker.tick().scored:
        pass
    assert not worker.waiting_for_others()
    expected, got = _all_scores(single), _all_scores(db)
    assert len(got) == len(expected) == 6_000
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert [g[2] for g in got] == [e[2] for e in expected]
    assert [g[1] for g in got] == pytest.approx([e[1] for e in expected], rel=1e-5)


def test_a_damaged_stream_from_the_reading_process_is_one_clear_error():
    import pyarrow as pa

    from schemewatch.errors import DatabaseError

    sink = pa.BufferOutputStream()
    table = pa.table({"transaction_id": list(range(1000)), "scheme": ["PM_KISAN"] * 1000})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    whole = sink.getvalue().to_pybytes()
    assert store.scoring.arrow_stream_table(whole, "x.db").equals(table)
    for damaged in (whole[: len(whole) // 2], b"\x00" * 16 + whole[16:], b""):
        with pytest.raises(DatabaseError, match="cannot read x.db: .*run the command again"):
            store.scoring.arrow_stream_table(damaged, "x.db")


def test_backfill_ticks_keep_the_whole_registry_until_it_changes(scored_copy, monkeypatch):
    from schemewatch import monitor as monitor_module

    db, models = scored_copy
    monkeypatch.setattr(monitor_module, "FULL_REGISTRY_ROWS", 0)  # every tick: whole registry
    loads = []
    real_load = modeling.load_registry

    def load_registry(conn, beneficiary_ids=None):
        loads.append(beneficiary_ids)
        return real_load(conn, beneficiary_ids)

    monkeypatch.setattr(modeling, "load_registry", load_registry)
    watching = Monitor(db, models, batch_size=2_000, chunk_size=1_000)
    assert watching.tick().scored == 2_000 and watching.tick().scored == 2_000
    assert loads == [None]  # the second tick used the first one's
    conn = store.open_database(db)
    person = conn.execute(f"SELECT beneficiary_id FROM {store.BENEFICIARIES}").fetchone()[0]
    with store.write_transaction(conn):
        store.mark_deceased(conn, person, "2026-01-01")
    conn.close()
    assert watching.tick().scored == 2_000
    assert loads == [None, None]  # a death was registered: loaded again
    assert watching.whole_registry[1].beneficiaries.loc[person, "death_time"] > 0


def test_a_failed_read_in_the_reading_process_is_one_clear_error(scored_copy):
    from schemewatch.errors import DatabaseError

    db, _ = scored_copy
    sql = f"SELECT no_such_column FROM {store.TRANSACTIONS} WHERE transaction_id > ?"
    with pytest.raises(DatabaseError) as caught:
        store.start_read_in_subprocess(db, sql, (1,))()
    message = str(caught.value)
    assert message.startswith(f"cannot read {db}: ") and "no_such_column" in message
    assert "\n" not in message and "Traceback" not in message
    read = store.start_read_in_subprocess(db, sql.replace("no_such_column", "COUNT(*) AS n"), (1,))
    assert read()["n"].tolist() == [6_000 - 1]


def test_a_monitor_waits_out_a_database_another_writer_holds_and_loses_nothing(scored_copy):
    from schemewatch.live_feed import LiveFeed

    db, models = scored_copy
    conn = store.open_database(db)
    LiveFeed(conn, seed=4).tick(200)
    conn.close()
    holder = store.connect(db)
    with store.write_transaction(holder):  # another process's long write, from the start
        monitor = subprocess.Popen(
            [PYTHON, "monitor.py", "--once", "--db", str(db), "--model-dir", str(models)],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**ENV, "SCHEMEWATCH_BUSY_TIMEOUT_MS": "300"},
        )
        heard = []
        for line in monitor.stderr:
            heard.append(line)
            if "trying again in" in line:
                break
    holder.close()
    out, rest = monitor.communicate(timeout=300)
    errors = "".join(heard) + rest
    assert monitor.returncode == 0, errors
    assert "busy" in errors and "Traceback" not in errors
    conn = store.connect(db)
    stored = store.last_transaction_id(conn)
    conn.close()
    [(_, count, distinct, _)] = _scores(db)
    assert count == distinct == stored  # every row scored, once
