"""S3T's slice orders and the deletion simulator: cyclic rotations put each slice first exactly once, matching
places likely-deleted slices late, and the simulator reproduces the closed form m*L*H_{m*B} within sampling error
(the reference setting: 5 shards x 6 slices, about 69 / 88 / 120 requests for B = 1 / 2 / 6, SISA about 11)."""
import numpy as np
import pytest

from clpet.unlearning.sequences import (cyclic_sequences, make_sequences, matching_sequences, random_sequences,
                                        sequence_score)
from clpet.unlearning.simulate import expected_deletions, expected_sisa_deletions, simulate


def test_cyclic_rotations_put_each_slice_first_exactly_once():
    seqs = cyclic_sequences(6, 6)
    assert seqs[0] == [0, 1, 2, 3, 4, 5] and seqs[1] == [5, 0, 1, 2, 3, 4]
    assert sorted(s[0] for s in seqs) == list(range(6))
    assert all(sorted(s) == list(range(6)) for s in seqs)
    assert all(sorted(col) == list(range(6)) for col in zip(*seqs))  # a Latin square
    assert cyclic_sequences(6, 2) == seqs[:2]


def test_matching_places_high_probability_slices_late():
    probs = [0.02, 0.02, 0.02, 0.02, 0.02, 0.90]  # slice 5 is deleted most
    seqs = matching_sequences(probs, 6)
    assert sorted(s[0] for s in seqs) == list(range(6)) and all(sorted(s) == list(range(6)) for s in seqs)
    kept = matching_sequences(probs, 2)
    assert [s.index(5) for s in kept] == [5, 4]  # the two kept sequences put the likely slice last and next to last
    assert len({s[0] for s in kept}) == 2
    assert sequence_score([0.1, 0.1]) > sequence_score([0.1, 0.8])


def test_random_sequences_are_distinct_permutations_and_bad_budgets_fail():
    seqs = random_sequences(4, 4, np.random.RandomState(0))
    assert len({tuple(s) for s in seqs}) == 4 and all(sorted(s) == [0, 1, 2, 3] for s in seqs)
    with pytest.raises(ValueError, match="sequences <= slices"):
        cyclic_sequences(3, 4)
    with pytest.raises(ValueError, match="unknown sequence selection"):
        make_sequences("greedy", 3, 1, 0)


@pytest.mark.parametrize("budget, reference", [(1, 69), (2, 88), (6, 120)])
def test_simulator_reproduces_the_closed_form(budget, reference):
    seqs = cyclic_sequences(6, budget)
    counts = np.array(simulate(seqs, n_shards=5, n_slices=6, trials=400, seed=budget))
    expected = expected_deletions(5, 6, budget)
    assert abs(expected - reference) < 1.5  # 68.5 / 87.9 / 119.8
    assert abs(counts.mean() - expected) < 4 * counts.std() / np.sqrt(len(counts))
    assert expected_sisa_deletions(5) == pytest.approx(11.4167, abs=1e-3)
