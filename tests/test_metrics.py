import numpy as np
import pytest

from fh_utils.tasks import ST1, ST2
from fh_utils.training.metrics import acsa, per_class_accuracy, task_metrics


def test_acsa_is_the_mean_of_per_class_accuracies():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 2])
    # class 0: 3/4, class 1: 1/2, class 2: 1/1; class 3 absent (NaN, not counted)
    acc = per_class_accuracy(y_true, y_pred, 4)
    assert acc[:3] == pytest.approx([0.75, 0.5, 1.0]) and np.isnan(acc[3])
    assert acsa(y_true, y_pred, 4) == pytest.approx((0.75 + 0.5 + 1.0) / 3)


def test_st1_score_is_mean_top1_and_st2_score_is_acsa():
    y_true = np.array([[0, 0, 0], [1, 1, 1], [1, 2, 2], [1, 3, 0]])
    y_pred = np.array([[0, 0, 0], [1, 0, 1], [0, 2, 2], [1, 3, 1]])
    m = task_metrics(ST1, y_true, y_pred)
    assert m["heads"]["Daily"]["top1"] == pytest.approx(0.75)
    assert m["heads"]["Gender"]["top1"] == pytest.approx(0.75)
    assert m["heads"]["Embellishment"]["top1"] == pytest.approx(0.75)
    assert m["score"] == pytest.approx(0.75)

    colours = np.array([0] * 8 + [1] * 2)
    preds = np.array([0] * 8 + [0, 1])
    m2 = task_metrics(ST2, colours[:, None], preds[:, None])
    assert m2["heads"]["Color"]["top1"] == pytest.approx(0.9)
    assert m2["score"] == pytest.approx((1.0 + 0.5) / 2)
    assert m2["heads"]["Color"]["per_class"]["Coral"] == pytest.approx(0.5)
    assert m2["heads"]["Color"]["per_class"]["Black"] is None


@pytest.mark.parametrize("seed", range(5))
def test_acsa_equals_scikit_learn_balanced_accuracy_on_random_labels(seed):
    """Random imbalanced labels over 18 classes, some absent from y_true (absent classes do not count) and
    predictions that are right about half the time."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(seed)
    present = rng.choice(18, size=int(rng.integers(5, 18)), replace=False)
    y_true = rng.choice(present, size=500, p=rng.dirichlet(np.ones(len(present))))
    y_pred = np.where(rng.random(500) < 0.5, y_true, rng.integers(0, 18, 500))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn warns about predicted classes absent from y_true
        expected = balanced_accuracy_score(y_true, y_pred)
    assert acsa(y_true, y_pred, 18) == pytest.approx(expected, abs=1e-12)
    assert task_metrics(ST2, y_true[:, None], y_pred[:, None])["score"] == pytest.approx(expected, abs=1e-12)
    assert acsa(y_true, y_pred, 18) != pytest.approx(float(np.mean(y_true == y_pred)), abs=1e-3), "ACSA is not top-1"


@pytest.mark.parametrize("seed", range(3))
def test_confusion_matrix_equals_scikit_learn_and_drops_out_of_range_pairs(seed):
    """The NumPy confusion matrix (the packaged submission has no scikit-learn) is scikit-learn's, cell for cell,
    including pairs with a class outside the range, which both leave out."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    from fh_utils.training.metrics import confusion_matrix

    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(-1, 7, 300), rng.integers(0, 8, 300)
    expected = sk_confusion_matrix(y_true, y_pred, labels=np.arange(6))
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, 6), expected)
    assert confusion_matrix(y_true, y_pred, 6).sum() == ((y_true >= 0) & (y_true < 6) & (y_pred < 6)).sum()


def test_labels_given_as_floats_count_as_their_classes():
    """Labels that arrive as floats (a CSV column read as float, a tensor's .float()) are cast, not refused."""
    from fh_utils.training.metrics import confusion_matrix

    y_true, y_pred = np.array([0, 1, 2, 2]), np.array([0, 2, 2, 1])
    expected = confusion_matrix(y_true, y_pred, 3)
    np.testing.assert_array_equal(confusion_matrix(y_true.astype(float), y_pred, 3), expected)
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred.astype(float), 3), expected)


def test_absent_classes_and_empty_inputs_warn_nothing_and_give_nan():
    """An absent class is NaN without a NumPy warning (a notebook must not fill with RuntimeWarnings); top-1 of no
    rows is NaN."""
    import math
    import warnings

    from fh_utils.training.metrics import top1

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        acc = per_class_accuracy(np.array([0, 0]), np.array([0, 1]), 3)
        assert acc[0] == 0.5 and np.isnan(acc[1]) and np.isnan(acc[2])
        assert math.isnan(top1(np.array([]), np.array([])))


def test_an_unknown_metric_is_named():
    from dataclasses import replace

    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        task_metrics(replace(ST2, metric="f1"), np.zeros((2, 1), int), np.zeros((2, 1), int))
