"""A built-in, **synthetic** stand-in for the (non-public) ETRI FASHION-HOW 2024 dataset.

Nothing here comes from the real data: every image is drawn from scratch. The tree has the real layout
(the four CSVs with their exact columns, ``train/`` and ``val/`` with the 14 real folder names, a mix of
JPEGs and PNGs, some of them RGBA with a transparent background) and the real class imbalance scaled
down, so that every notebook and test of the workbook runs end to end without the real download.

Each image shows a person-like figure (head, hair, arms, legs) wearing one garment on a cluttered
background (gradients, random shapes and stripes, some in palette colours), under varied lighting, with
garment shading, sensor noise and JPEG compression. The box (``BBox_*``) is tight around the garment.
Every image carries all four labels, drawn independently; each is carried by one visual factor:

* **Color** (18): the garment's base colour, from :func:`demo_palette`, jittered per image and then
  changed by the lighting (brightness, colour temperature), shading and noise, so that near colours
  (Coral/Orange/Red, Beige/Ivory, Navy/Royalblue, Mustard/Yellow/Khaki) are learnable but not trivial.
* **Gender** (5): the silhouette. Mannish: boxy, wider than the shoulders, long sleeves; Unisex:
  straight, short sleeves; Girlish: A-line dress flaring from a high waist; Elegant: fitted waist and a
  long skirt; Sexy: short, sleeveless, low-cut crop top.
* **Daily** (6): the fabric pattern inside the box. Loungewear: heathered knit with fine ribs; Light
  going-out: plain; Office: thin vertical pinstripes; Formal: checks; Event: polka dots; Sportswear:
  bold diagonal bands. Patterns are a shade of the base colour, so the base colour stays dominant.
* **Embellishment** (3): decoration on the garment. None; Point: one brooch-sized motif on the chest;
  Lots: many small buttons, studs, stars or flowers scattered over it.

The folder an image sits in is random and gives no label away. Generation is deterministic: each image
is drawn from its own generator seeded by ``(seed, split, index)``, so the bytes do not depend on the
number of worker processes.

Modules, by job: :mod:`.plan` decides what to make (images, file names, labels, CSV rows) from the seed;
:mod:`.render` draws one image, from :mod:`.scene` (background, camera), :mod:`.figure` (the figure and the
garment's shape), :mod:`.fabric` (colour, pattern, shading) and :mod:`.decoration`, with the colours of
:mod:`.palette`; :mod:`.write` writes the images and the CSVs, :mod:`.manifest` records how the tree was
made, and :mod:`.dataset` holds the entry points.
"""

from fh_utils._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "generate_demo_dataset": "dataset", "ensure_demo_dataset": "dataset",
        "render_image": "render", "demo_palette": "palette", "FOLDERS": "plan",
        "DEMO_MANIFEST": "manifest", "DEMO_VERSION": "manifest",
    },
)  # fmt: skip
