"""Probable label errors: planted label flips on a small learnable set rank at the top, and the CSV written for
review is an exclusion list as it is (no images, no model: 2-D Gaussian blobs and cross-validated logistic
regression probabilities)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fh_utils.data.exclude import read_exclusion
from fh_utils.scoring.label_issues import COLUMNS, head_label_issues, rank_label_issues
from fh_utils.tasks import Head, Task
from fh_utils.workbook import error_sets as S
from fh_utils.workbook import errors as E

BLOBS = Task("blobs", "three blobs", "x", (Head("Shape", "shape", ("a", "b", "c")),), "acsa")
N_FLIPS = 6


@pytest.fixture(scope="module")
def planted():
    """180 rows in 3 well-separated blobs, 6 labels flipped to another class; out-of-sample probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    x = np.concatenate([rng.normal(c, 0.6, (60, 2)) for c in centres])
    truth = np.repeat(np.arange(3), 60)
    flipped = rng.choice(len(truth), N_FLIPS, replace=False)
    given = truth.copy()
    given[flipped] = (truth[flipped] + rng.integers(1, 3, N_FLIPS)) % 3
    probs = cross_val_predict(LogisticRegression(), x, given, cv=5, method="predict_proba")
    return probs, given, truth, np.sort(flipped)


def test_planted_label_flips_rank_at_the_top_with_the_true_class_suggested(planted):
    probs, given, truth, flipped = planted
    ranked = head_label_issues(probs, given)
    top = ranked["index"].to_numpy()[: N_FLIPS + 2]
    assert set(flipped) <= set(top), (sorted(top), flipped)  # every flip within the first 8 of 180
    # cleanlab's pruning is conservative (on such blobs it misses about one flip in six): most flips flagged,
    # hardly anything else.
    flagged = set(ranked.loc[ranked["flagged"], "index"])
    assert ranked.loc[ranked["flagged"], "self_confidence"].is_monotonic_increasing  # least confident first
    assert len(flagged & set(flipped)) >= N_FLIPS - 1 and len(flagged - set(flipped)) <= 2
    found = ranked.set_index("index").loc[flipped]
    assert (found["suggested_id"].to_numpy() == truth[flipped]).all()
    assert (found["given_id"].to_numpy() == given[flipped]).all()
    np.testing.assert_allclose(found["self_confidence"], probs[flipped, given[flipped]])


def test_the_ranking_carries_each_rows_identity_and_leaves_unlabelled_rows_out(planted):
    probs, given, _, flipped = planted
    labels = given.copy()
    labels[:3] = -1  # no label: never judged
    ids = pd.DataFrame({"image_name": [f"p{i}.jpg" for i in range(len(given))], "source": "train",
                        "row": np.arange(len(given)), "fold": np.arange(len(given)) % 5})  # fmt: skip
    ranked = rank_label_issues({"Shape": probs}, labels[:, None], BLOBS, ids, "out-of-fold")
    assert list(ranked.columns) == COLUMNS and len(ranked) == len(given) - 3
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert not ranked["row"].isin([0, 1, 2]).any()
    assert (ranked["image_name"] == [f"p{r}.jpg" for r in ranked["row"]]).all()
    assert (ranked["given"] == [BLOBS.heads[0].class_names[c] for c in labels[ranked["row"]]]).all()
    with pytest.raises(ValueError, match="coverage"):
        rank_label_issues({"Shape": probs}, given[:, None], BLOBS, ids, "train")


def test_the_review_csv_lists_the_flagged_rows_and_reads_back_as_an_exclusion_list(planted, tmp_path):
    probs, given, _, flipped = planted
    ids = {"image_name": [f"p{i}.jpg" for i in range(len(given))], "source": ["train"] * len(given)}
    frame = S.frame_from_probabilities(BLOBS, {"Shape": probs}, given[:, None], ids)
    errors = S.ErrorSet(BLOBS, frame, S.OUT_OF_FOLD, tmp_path, "blobs")
    ranked = E.label_issues(errors)
    path = E.write_label_issues(errors, ranked)
    assert path == tmp_path / "label_issues.csv"
    written = pd.read_csv(path)
    assert len(written) == ranked["flagged"].sum() and (written["exclude"] == 0).all()
    assert read_exclusion(path).empty, "an unreviewed list excludes nothing"
    written["exclude"] = 1  # a reviewer marks every flagged row
    written.to_csv(path, index=False)
    listed = read_exclusion(path)
    assert set(listed["image_name"]) == set(ranked.loc[ranked["flagged"], "image_name"])
    assert set(listed["source"]) == {"train"}
    assert len({f"p{i}.jpg" for i in flipped} & set(listed["image_name"])) >= N_FLIPS - 1
    written.loc[0, "exclude"] = 0  # a reviewer keeps the first row: its label was right
    written.to_csv(path, index=False)
    assert written.loc[0, "image_name"] not in set(read_exclusion(path)["image_name"])
