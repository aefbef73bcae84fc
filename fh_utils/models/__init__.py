"""Model layer: :func:`create_model` (a timm backbone + one head per label), ``fh_colornet``, colour features.

Models know tasks and colour spaces, never files or datasets.
"""

from fh_utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "create_model": "factory", "load_model": "factory", "model_from_config": "factory",
        "state_dict_size_mb": "factory", "FashionHowNet": "factory", "RulesError": "factory",
        "PretrainedUnavailableError": "factory", "DEFAULT_BACKBONE": "config", "ModelConfig": "config",
    },
)  # fmt: skip
