import numpy as np
import pandas as pd
import pytest

from schemewatch import features, modeling, store


@pytest.fixture
def tables(conn, generated_db):
    return store.transactions_for_scoring(generated_db, 0), modeling.load_registry(conn)


def test_features_have_the_declared_shape_and_are_finite(tables):
    transactions, registry = tables
    matrix = features.compute_features(transactions, registry)
    assert matrix.shape == (len(transactions), len(features.FEATURE_NAMES))
    assert matrix.dtype == np.float32 and np.isfinite(matrix).all()


@pytest.mark.parametrize("split", [0.5, 0.9])
def test_incremental_batches_match_the_whole_table(tables, split):
    transactions, registry = tables
    whole = features.compute_features(transactions, registry)
    cut = int(len(transactions) * split)
    earlier, later = transactions.iloc[:cut], transactions.iloc[cut:]
    for start in range(0, len(later), 400):
        batch = later.iloc[start : start + 400]
        seen = pd.concat([earlier, later.iloc[:start]])
        history = features.history_needed(batch, seen)
        part = features.compute_features(batch, registry, history)
        np.testing.assert_allclose(part, whole[cut + start : cut + start + len(batch)], rtol=1e-6)


def test_features_do_not_mutate_their_input(tables):
    transactions, registry = tables
    before = transactions.copy()
    features.compute_features(transactions, registry)
    pd.testing.assert_frame_equal(transactions, before)


def test_behavioural_features_see_only_the_past(tables):
    transactions, registry = tables
    whole = features.compute_features(transactions, registry)
    prefix = features.compute_features(transactions.iloc[:1000], registry)
    np.testing.assert_allclose(prefix, whole[:1000], rtol=1e-6)


def _column(matrix, name):
    return matrix[:, features.FEATURE_NAMES.index(name)]


@pytest.mark.parametrize(
    "typology, feature",
    [
        ("burst", "log_payments_24h"),
        ("duplicate_instalment", "period_amount_to_entitlement"),
        ("shared_account_ring", "log_beneficiaries_on_account"),
        ("agent_collusion", "log_agent_beneficiaries_10min"),
        ("payment_after_death", "log_days_paid_after_death"),
        ("geo_mismatch", "km_from_home"),
        ("off_cycle", "off_cycle"),
        ("over_entitlement", "amount_to_entitlement"),
        ("ghost_beneficiary", "log_beneficiaries_sharing_phone"),
    ],
)
def test_each_typology_stands_out_on_its_behavioural_feature(conn, tables, typology, feature):
    transactions, registry = tables
    matrix = features.compute_features(transactions, registry)
    labelled = pd.read_sql_query(
        "SELECT transaction_id FROM ground_truth WHERE typology = ?", conn, params=(typology,)
    )["transaction_id"]
    mask = transactions["transaction_id"].isin(labelled).to_numpy()
    normal = (
        ~transactions["transaction_id"]
        .isin(pd.read_sql_query("SELECT transaction_id FROM ground_truth", conn)["transaction_id"])
        .to_numpy()
    )
    values = _column(matrix, feature)
    assert np.median(values[mask]) > np.quantile(values[normal], 0.95)
