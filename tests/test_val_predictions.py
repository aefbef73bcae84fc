"""val_predictions.csv: per head the true and predicted class, the row's loss and every class's probability."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fh_utils.tasks import ST2
from fh_utils.workbook.evaluation import save_predictions


def test_each_row_has_its_loss_and_every_class_probability(tmp_path):
    n, c = 4, ST2.heads[0].num_classes
    probs = np.full((n, c), 0.01)
    probs[np.arange(n), [0, 1, 2, 3]] = 1 - 0.01 * (c - 1)  # predicts 0, 1, 2, 3
    targets = np.array([[0], [1], [5], [3]])
    result = {"targets": targets, "predictions": probs.argmax(1)[:, None], "probabilities": {"Color": probs}}
    dataset = SimpleNamespace(df=pd.DataFrame({"image_name": [f"{i}.jpg" for i in range(n)]}))
    frame = pd.read_csv(save_predictions(tmp_path, dataset, result, ST2))
    key, names = ST2.heads[0].key, ST2.heads[0].class_names
    assert list(frame[f"{key}_true"]) == [0, 1, 5, 3] and list(frame[f"{key}_pred"]) == [0, 1, 2, 3]
    assert frame[f"{key}_loss"].tolist() == pytest.approx([-np.log(0.83), -np.log(0.83), -np.log(0.01), -np.log(0.83)])
    assert [f"{key}_p_{name}" for name in names] == [col for col in frame if col.startswith(f"{key}_p_")]
    assert frame[[f"{key}_p_{name}" for name in names]].to_numpy() == pytest.approx(probs)
