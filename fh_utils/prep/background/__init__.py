"""Offline background removal: a mirrored "no background" copy of the image tree for training.

Two methods: GrabCut (:mod:`.grabcut`, OpenCV, always available) seeded with the garment box, and rembg
(:mod:`.rembg`, the U^2-Net family) only when its model file is already on disk; :mod:`.remove` picks one for
an image and fills what it removes. :func:`create_nobg_tree` (:mod:`.tree`) writes
``<out_root>/<split>/<image_name>`` for every image of the CSVs (names and extensions kept), atomically and
resumably: :mod:`.jobs` makes one output image, :mod:`.workers` runs them in a process pool, and
:mod:`.manifest` records how the tree was made and refuses a run with other settings.
"""

from fh_utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "create_nobg_tree": "tree", "sample_pairs": "tree",
        "remove_background": "remove", "resolve_method": "remove", "blend_fill": "remove", "METHODS": "remove",
        "grabcut_mask": "grabcut",
        "rembg_mask": "rembg", "rembg_model_path": "rembg", "rembg_available": "rembg",
        "RembgModelMissingError": "rembg",
        "MANIFEST_NAME": "manifest", "ManifestMismatchError": "manifest",
    },
)  # fmt: skip
