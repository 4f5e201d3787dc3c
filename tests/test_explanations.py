"""Plain-word reasons, on hand-made rows and a hand-made model card."""

import numpy as np

from schemewatch import explanations, features

NAMES = features.FEATURE_NAMES


def _card():
    everywhere = {name: [0.0, 1.0] for name in NAMES}
    pension = {**everywhere, "amount_to_entitlement": [1.0, 1.0]}
    wages = {**everywhere, "amount_to_entitlement": [0.2, 1.0]}
    return {
        "normal_ranges": everywhere,
        "normal_ranges_by_scheme": {"OLD_AGE_PENSION": pension, "MGNREGA": wages},
    }


def _row(values: dict) -> np.ndarray:
    row = np.zeros(len(NAMES), np.float32)
    for name, value in values.items():
        row[NAMES.index(name)] = value
    return row


def test_reasons_use_the_normal_range_of_the_rows_scheme():
    matrix = np.vstack([_row({"amount_to_entitlement": 2.5})] * 2)
    contributions = np.vstack([_row({"amount_to_entitlement": 50.0})] * 2)
    rows = [
        {"scheme": "OLD_AGE_PENSION", "paid_at": 0, "instalment_period": "2025-05"},
        {"scheme": "PMAY_G", "paid_at": 0, "instalment_period": "2025-26/I1"},
    ]
    (pension, resembles), (housing, _) = explanations.explain(contributions, matrix, rows, _card())
    assert pension[0]["text"].startswith("paid 2.5× the entitlement; normal is 1.0× (")
    assert pension[0]["text"].endswith(f"{pension[0]['times_normal']}× the normal deviation)")
    assert housing[0]["text"].startswith("paid 2.5× the entitlement; normal is 0.0×–1.0× (")
    assert resembles == "over_entitlement"


def test_two_features_saying_the_same_thing_give_one_reason():
    matrix = np.vstack([_row({"off_cycle": 1.0, "position_in_period": 1.9})])
    contributions = np.vstack([_row({"off_cycle": 40.0, "position_in_period": 30.0})])
    rows = [{"scheme": "PM_KISAN", "paid_at": 1_780_000_000, "instalment_period": "2026-27/P1"}]
    [(reasons, resembles)] = explanations.explain(contributions, matrix, rows, _card())
    texts = [r["text"] for r in reasons]
    assert len(texts) == len(set(texts)) == 1 and "outside the usual payment window" in texts[0]
    assert resembles == "off_cycle"


def test_context_features_are_never_a_reason():
    usual = {"amount_to_entitlement": 0.5, "log_amount": 0.5}
    matrix = np.vstack([_row({"channel_post": 1.0, "scheme_mgnrega": 1.0, **usual})])
    contributions = np.vstack([_row({"channel_post": 99.0, "log_amount": 0.1})])
    rows = [{"scheme": "MGNREGA", "paid_at": 0, "instalment_period": "2025-05-F1"}]
    [(reasons, _)] = explanations.explain(contributions, matrix, rows, _card())
    assert [r["feature"] for r in reasons] == ["log_amount"]


def test_every_feature_has_its_own_plain_words():
    row = {"scheme": "PM_KISAN", "paid_at": 1_780_000_000, "instalment_period": "2026-27/P1"}
    for name in NAMES:
        if name in features.CONTEXT_FEATURES:
            continue
        text = explanations.sentence(name, 2.0, [0.0, 1.0], row)
        assert "channel" not in text, name  # the context fallback is not a reason
        assert "nan" not in text.lower() and "{" not in text, name
