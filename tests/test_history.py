"""The history tail that chunked features carry: what compaction keeps and what it leaves alone."""

import numpy as np
import pandas as pd
import pytest

from schemewatch import features, generator, history, modeling, store
from schemewatch.schemes import DAY


def _carried(tail: history.Tail) -> pd.DataFrame:
    frames = pd.concat(tail.frames, ignore_index=True)
    return frames.sort_values("transaction_id", ignore_index=True)


def _batches(template, apart: bool) -> list[pd.DataFrame]:
    rows = store.transactions_for_scoring(template, 0, 6_000)
    batches = [rows.iloc[s : s + 300].reset_index(drop=True) for s in range(0, len(rows), 300)]
    if not apart:
        return batches
    # Each batch paid months after the one before, to people of its own: it leaves the recent
    # rows whole, as the very frame it was handed in.
    for number, batch in enumerate(batches):
        batch["paid_at"] = batch["paid_at"].iloc[0] + number * 100 * DAY + np.arange(len(batch))
        batch["beneficiary_id"] = "lone-" + batch["transaction_id"].astype(str)
        batch["account_id"] = "own-" + batch["transaction_id"].astype(str)
    return batches


@pytest.mark.parametrize("apart", [False, True], ids=["as-generated", "batches-apart"])
def test_compacting_the_tail_keeps_its_rows_and_leaves_the_callers_frames_whole(
    generated_template, monkeypatch, apart
):
    """Old rows gathered into one part column by column are the rows carried before, with
    matching id hashes; the frames handed to the tail keep every column and value."""
    batches = _batches(generated_template, apart)
    originals = [batch.copy() for batch in batches]
    monkeypatch.setattr(history.Tail, "PRUNE_ROWS", 300)
    monkeypatch.setattr(history.Tail, "MOST_OLD_PARTS", 2)
    compact = history.Tail._compact
    gathered = []

    def checked_compact(tail):
        before, parts = _carried(tail), len(tail.old)
        compact(tail)
        if parts > len(tail.old):
            gathered.append(parts)
            pd.testing.assert_frame_equal(_carried(tail), before)

    monkeypatch.setattr(history.Tail, "_compact", checked_compact)
    tail = history.Tail()
    for batch in batches:
        tail.add(batch)
    tail.settle()
    assert gathered and len(tail.old) == 1 and tail.old[0].alive.all()
    for part in tail.parts:
        np.testing.assert_array_equal(
            part.hashes.beneficiary, history.id_hashes(part.frame["beneficiary_id"])
        )
        np.testing.assert_array_equal(part.paid_at, part.frame["paid_at"].to_numpy())
    for batch, original in zip(batches, originals, strict=True):
        pd.testing.assert_frame_equal(batch, original)


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """A 400-row generated year (small enough to read a row at a time)."""
    path = tmp_path_factory.mktemp("small") / "small.db"
    conn = store.open_database(path)
    generator.generate(conn, transactions=400, seed=11, anomaly_rate=0.05)
    conn.close()
    return path


@pytest.mark.parametrize("size", [1, 7, 400])
def test_feature_chunks_equal_the_whole_table(small_store, monkeypatch, size):
    """The streamed pipeline training uses (the tail pruned every 5 rows) gives every row the
    values of one computation over the whole table, whatever the chunk size."""
    monkeypatch.setattr(history.Tail, "PRUNE_ROWS", 5)
    conn = store.open_database(small_store)
    registry = modeling.load_registry(conn)
    whole = store.transactions_for_scoring(small_store, 0)
    expected = features.compute_features(whole, registry)
    chunks = list(history.feature_chunks(small_store, conn, registry, size=size))
    assert len(chunks) == -(-len(whole) // size)
    rows = pd.concat([rows for rows, _ in chunks], ignore_index=True)
    assert rows["transaction_id"].tolist() == whole["transaction_id"].tolist()
    np.testing.assert_allclose(np.concatenate([m for _, m in chunks]), expected, rtol=1e-6)


def test_finding_a_parts_rows_by_hash_matches_membership_even_where_leading_bits_agree():
    """Rows are found by a binary search of their hashes' leading bits, then compared whole:
    hashes that differ only in their trailing bits, or repeat, are told apart as np.isin does."""
    generator_of = np.random.default_rng(3)
    hashes = generator_of.integers(0, 2**63, 50_000, dtype=np.int64).astype(np.uint64)
    hashes[:10] = (hashes[0] >> np.uint64(30) << np.uint64(30)) + np.arange(10, dtype=np.uint64)
    hashes[10:20] = hashes[5]
    frame = pd.DataFrame({"paid_at": np.arange(len(hashes))})
    part = history._Part(frame, history._Hashes.__new__(history._Hashes))
    part.hashes.beneficiary = hashes
    asked = np.concatenate(
        [
            generator_of.choice(hashes, 2_000),
            generator_of.integers(0, 2**63, 2_000, dtype=np.int64).astype(np.uint64),
            hashes[[3, 10]],
            hashes[[0]] + np.uint64(100),  # the same leading bits as the first ten, not one of them
        ]
    )
    for values in (asked, asked[:0], hashes[[7]]):
        assert np.array_equal(part.rows_with("beneficiary", values), np.isin(hashes, values))
