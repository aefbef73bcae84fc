"""Prediction, the layer between training and the workbook.

:class:`~fh_utils.inference.predictor.Predictor` loads a model file (one run's ``best.pt``, a saved
``ensemble.pt`` or an int8 ``model_int8.pt``) with the crop settings each member was validated with, makes
the crops (:func:`fh_utils.data.datasets.create_dataset`, the one preprocessing), predicts with the recorded
test-time augmentation and returns probabilities or the official DataFrame. Notebook 05, the final evaluation
of notebooks 03/04 and the packaged leaderboard submission (:mod:`fh_utils.inference.aif`) all go through it.

Nothing here imports :mod:`fh_utils.workbook`, scikit-learn, matplotlib or Jupyter: the packaged submission
ships this layer and those under it, and runs with torch, timm, numpy, pandas, OpenCV, albumentations and
Pillow alone.
"""

from fh_utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {"Predictor": "predictor", "Prediction": "predictor", "load_members": "predictor"},
)
