"""FASHION-HOW workbook utilities: data, augmentation, models, training engine, metrics, plots.

Importing this package changes nothing in the environment (no ``os.environ`` writes): the variables that
matter on a small machine (``OMP_WAIT_POLICY=PASSIVE``, ``NO_ALBUMENTATIONS_UPDATE=1``) are set where the
workbook starts processes (the Makefile, the papermill runner, the tests), and pretrained weights come from the
Hugging Face cache or the hub as :mod:`fh_utils.models.pretrained` decides when a model is built.
"""

__version__ = "0.1.0"
