"""Metrics against numbers worked out by hand (comments show the arithmetic)."""
import json
import math

import numpy as np
import pytest

from clpet.metrics import (
    DeletionRecord,
    a_avg,
    a_last,
    a_t,
    accuracy_matrix,
    average_task_accuracy,
    bwt,
    forgetting,
    fwt,
    plasticity,
    summarize,
    summarize_deletions,
)

NAN = float("nan")
# three experiences with unequal test sets
COUNTS = [100, 50, 200]
# correct[t, j]; lower triangle only (class-incremental: no evaluation on future experiences)
CORRECT = [
    [90, NAN, NAN],  # R = 90
    [95, 45, NAN],  # R = 95, 90
    [70, 40, 150],  # R = 70, 80, 75
]
R_EXPECTED = [[90, NAN, NAN], [95, 90, NAN], [70, 80, 75]]


def close(a, b):
    return a is not None and abs(a - b) < 1e-9


def test_accuracy_matrix():
    R = accuracy_matrix(CORRECT, COUNTS)
    np.testing.assert_allclose(R, R_EXPECTED, equal_nan=True)


def test_a_t_is_sample_weighted():
    A = a_t(CORRECT, COUNTS)
    # A_0 = 90/100; A_1 = (95+45)/150 = 93.333 (plain mean of R would be 92.5);
    # A_2 = (70+40+150)/350 = 74.2857 (plain mean would be 75)
    assert close(A[0], 90.0)
    assert close(A[1], 100 * 140 / 150)
    assert close(A[2], 100 * 260 / 350)
    assert not close(A[1], 92.5) and not close(A[2], 75.0)
    assert close(a_last(CORRECT, COUNTS), 100 * 260 / 350)
    # (90 + 280/3 + 520/7) / 3 = (1890 + 1960 + 1560) / 63
    assert close(a_avg(CORRECT, COUNTS), 5410 / 63)


def test_forgetting_bwt_plasticity():
    R = accuracy_matrix(CORRECT, COUNTS)
    # j=0: max(90, 95) - 70 = 25 ; j=1: 90 - 80 = 10 -> 17.5
    assert close(forgetting(R), 17.5)
    # j=0: 70 - 90 = -20 ; j=1: 80 - 90 = -10 -> -15
    assert close(bwt(R), -15.0)
    # (90 + 90 + 75) / 3
    assert close(plasticity(R), 85.0)
    # (70 + 80 + 75) / 3
    assert close(average_task_accuracy(R), 75.0)
    assert fwt(R, [10, 15, 25]) is None  # upper triangle not evaluated


def test_fwt_with_upper_triangle_and_forgetting_ignores_it():
    correct = [[90, 50, 20], [95, 45, 60], [70, 40, 150]]  # R[0,1] = 100, R[1,2] = 30, R[0,2] = 10
    R = accuracy_matrix(correct, COUNTS)
    # j=1: R[0,1] - b1 = 100 - 15 = 85 ; j=2: R[1,2] - b2 = 30 - 25 = 5 -> 45
    assert close(fwt(R, [10, 15, 25]), 45.0)
    assert fwt(R, None) is None
    # R[0,1] = 100 is an evaluation before experience 1 was learned: not part of the max
    assert close(forgetting(R), 17.5)
    assert a_t(correct, COUNTS) == a_t(CORRECT, COUNTS)
    assert close(average_task_accuracy(R), 75.0)
    with pytest.raises(ValueError):
        fwt(R, [10, 15])


def test_summarize_full():
    s = summarize(CORRECT, COUNTS)
    assert s["forgetting_definition"] == "chaudhry_max_minus_last"
    assert close(s["A_last"], 100 * 260 / 350) and close(s["A_avg"], 5410 / 63)
    assert close(s["forgetting"], 17.5) and close(s["bwt"], -15) and close(s["plasticity"], 85)
    assert close(s["avg_task_acc"], 75) and s["fwt"] is None
    assert s["acc_matrix"] == [[90.0, None, None], [95.0, 90.0, None], [70.0, 80.0, 75.0]]
    assert s["n_experiences_done"] == 3 and s["n_experiences"] == 3
    for key in ("A_last", "A_avg", "A_t", "forgetting", "bwt", "fwt", "plasticity", "avg_task_acc", "acc_matrix"):
        assert key in s
    json.dumps(s, allow_nan=False)


def test_partial_matrix_two_rows_done():
    expected = {"A_t": [90.0, 100 * 140 / 150], "forgetting": 90 - 95, "bwt": 95 - 90,
                "plasticity": 90.0, "avg_task_acc": 92.5}
    as_rows = summarize([[90], [95, 45]], COUNTS)  # ragged rows, counts of all 3 experiences
    as_array = summarize(np.array(CORRECT[:2] + [[NAN, NAN, NAN]]), COUNTS)  # NaN row not done yet
    for s in (as_rows, as_array):
        assert close(s["A_t"][0], expected["A_t"][0]) and close(s["A_t"][1], expected["A_t"][1])
        assert close(s["A_last"], expected["A_t"][1])
        assert close(s["A_avg"], (90 + 100 * 140 / 150) / 2)
        for k in ("forgetting", "bwt", "plasticity", "avg_task_acc"):
            assert close(s[k], expected[k]), k
        assert s["acc_matrix"] == [[90.0, None, None], [95.0, 90.0, None]]
        assert s["n_experiences_done"] == 2 and s["n_experiences"] == 3
        json.dumps(s, allow_nan=False)


def test_single_experience():
    s = summarize([[40]], [50], baseline=[10])
    assert close(s["A_last"], 80.0) and close(s["A_avg"], 80.0) and s["A_t"] == [80.0]
    assert s["forgetting"] is None and s["bwt"] is None and s["fwt"] is None
    assert close(s["plasticity"], 80.0) and close(s["avg_task_acc"], 80.0)
    json.dumps(s, allow_nan=False)


def test_nothing_done_yet():
    s = summarize([[None, None]], [10, 10])
    assert s["A_t"] == [] and s["A_last"] is None and s["acc_matrix"] == []
    json.dumps(s, allow_nan=False)


def test_missing_seen_entry_gives_none_not_nan():
    s = summarize([[9, None], [None, 5]], [10, 10])
    assert s["A_t"] == [90.0, None] and s["A_avg"] is None
    assert s["forgetting"] is None and s["bwt"] is None
    json.dumps(s, allow_nan=False)


def test_invalid_inputs():
    with pytest.raises(ValueError):
        accuracy_matrix([[11]], [10])  # more correct than samples
    with pytest.raises(ValueError):
        accuracy_matrix([[1, 2]], [10])  # counts too short
    with pytest.raises(ValueError):
        accuracy_matrix([[1]], [0])


def test_summarize_deletions():
    recs = [
        DeletionRecord(request=0, n_samples=1, retrained_samples_x_steps=0, wall_time_s=0.5, full_retrain=False,
                       accuracy_after=80.0),
        DeletionRecord(1, 2, 100.0, 1.5, False, 79.0),
        DeletionRecord(2, 1, 5000.0, 30.0, True, 81.0),
        DeletionRecord(3, 1, 0.0, 0.1, False, float("nan")),
    ]
    s = summarize_deletions(reversed(recs))  # order restored by request index
    assert s["n_requests"] == 4 and s["n_samples_deleted"] == 5
    assert s["requests_before_full_retrain"] == 2 and s["n_full_retrains"] == 1
    assert math.isclose(s["total_retrained_samples_x_steps"], 5100.0)
    assert math.isclose(s["total_wall_time_s"], 32.1)
    assert s["accuracy_curve"] == [80.0, 79.0, 81.0, None]
    json.dumps(s, allow_nan=False)
    assert summarize_deletions(recs[:2])["requests_before_full_retrain"] == 2
