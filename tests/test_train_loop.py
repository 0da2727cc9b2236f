"""The training loop's batching: every row once per epoch, seeded; length grouping when asked."""

import numpy as np

from cluster.train.loop import epoch_batches, steps_per_epoch


def padded(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    """Padded characters of an epoch: each batch pads to its longest text."""
    return sum(int(lengths[b].max()) * len(b) for b in batches)


def test_each_row_once_and_same_count_as_steps():
    lengths = np.random.default_rng(1).integers(5, 140, size=3_333)
    batches = epoch_batches(lengths, 32, seed=0, epoch=0)
    assert len(batches) == steps_per_epoch(len(lengths), 32)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))


def test_seeded_by_seed_and_epoch():
    lengths = np.random.default_rng(2).integers(5, 140, size=2_000)
    same = [b.tolist() for b in epoch_batches(lengths, 16, seed=3, epoch=1)]
    assert same == [b.tolist() for b in epoch_batches(lengths, 16, seed=3, epoch=1)]
    assert same != [b.tolist() for b in epoch_batches(lengths, 16, seed=3, epoch=2)]
    assert same != [b.tolist() for b in epoch_batches(lengths, 16, seed=4, epoch=1)]


def test_length_grouping_cuts_padding_but_keeps_batch_order_random():
    rng = np.random.default_rng(3)
    lengths = rng.integers(5, 140, size=8_000)
    grouped = epoch_batches(lengths, 32, seed=0, epoch=0, megabatch=50)
    shuffled = np.array_split(rng.permutation(len(lengths)), len(grouped))
    assert padded(lengths, grouped) < 0.8 * padded(lengths, shuffled)
    # Batch order is shuffled: mean lengths of consecutive batches are not sorted.
    means = [lengths[b].mean() for b in grouped]
    assert means != sorted(means) and means != sorted(means, reverse=True)
