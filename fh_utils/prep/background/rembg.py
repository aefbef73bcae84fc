"""rembg (the U^2-Net family the top teams used), only from a model file already on disk.

rembg downloads models on first use, and this module never lets it (the workbook may run offline). rembg
segments the salient subject of the whole image; the box is not used.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REMBG_RELEASES = "https://github.com/danielgatis/rembg/releases"
_ORT_THREADS = 0  # onnxruntime intra-op threads (0 = its default); pool workers set 1
_REMBG_SESSIONS: dict[tuple[str, str], Any] = {}


class RembgModelMissingError(FileNotFoundError):
    """The rembg model file is not on disk; the message says where to put it."""


def _rembg_candidates(model_name: str) -> list[Path]:
    """Where rembg looks for ``<model_name>.onnx``, in its order (rembg 2.0.x ``BaseSession``).

    ``resolve_existing`` checks ``<rembg home>/models/<name>/<name>.onnx`` and then the legacy flat folder
    ``<legacy home>/<name>.onnx``. Legacy home: ``$U2NET_HOME``, default ``$XDG_DATA_HOME/.u2net`` or
    ``~/.u2net``. Rembg home: ``$U2NET_HOME`` when set, else ``$REMBG_HOME``, default
    ``$XDG_DATA_HOME/rembg`` or ``~/.rembg``.
    """
    xdg = os.getenv("XDG_DATA_HOME")
    legacy = os.path.expanduser(os.getenv("U2NET_HOME", os.path.join(xdg or "~", ".u2net")))
    if os.getenv("U2NET_HOME"):
        home = legacy
    else:
        home = os.path.expanduser(os.getenv("REMBG_HOME", os.path.join(xdg, "rembg") if xdg else "~/.rembg"))
    fname = f"{model_name}.onnx"
    return [Path(home) / "models" / model_name / fname, Path(legacy) / fname]


def _custom_model(model_name: str) -> Path | None:
    """``model_name`` as the path of a U^2-Net-like ``.onnx`` file (rembg's ``u2net_custom`` session), else None."""
    return Path(model_name).expanduser() if str(model_name).endswith(".onnx") else None


def rembg_model_path(model_name: str = "u2net") -> Path:
    """Path of rembg's model file ``<model_name>.onnx`` (or ``model_name`` itself when it is an ``.onnx`` path).

    Follows rembg's own folder rules (see :func:`_rembg_candidates`): the first existing candidate, else
    ``$U2NET_HOME/<model_name>.onnx`` (default ``~/.u2net/``), the folder to copy a model into by hand.
    """
    custom = _custom_model(model_name)
    if custom is not None:
        return custom
    candidates = _rembg_candidates(model_name)
    return next((p for p in candidates if p.is_file()), candidates[-1])


def rembg_available(model_name: str = "u2net") -> bool:
    """Whether rembg is installed and its model file is on disk (nothing is downloaded or imported)."""
    return importlib.util.find_spec("rembg") is not None and rembg_model_path(model_name).is_file()


def missing_model_message(model_name: str) -> str:
    """What to do when the model file of ``model_name`` is not on disk: where to get it and where to put it."""
    if _custom_model(model_name) is not None:
        return (
            f"rembg model file {model_name!r} not found (a custom model must lie in rembg's model folder, "
            "$U2NET_HOME, default ~/.u2net). Otherwise use method='grabcut'."
        )
    candidates = _rembg_candidates(model_name)
    target = candidates[-1]
    return (
        f"rembg model file {target.name!r} not found; looked in {', '.join(str(p) for p in candidates)}. "
        "rembg would download it on first use, which this workbook never lets it do (it may run offline). "
        f"To use rembg: on a machine with network, download {target.name} from {REMBG_RELEASES} (or run "
        f"rembg there once with model {model_name!r}), copy the file to {target} (the folder is $U2NET_HOME, "
        f"default ~/.u2net: here {target.parent}), or set U2NET_HOME to the folder that holds it. "
        "Otherwise use method='grabcut'."
    )


def set_onnx_threads(n: int) -> None:
    """Intra-op threads of the onnxruntime sessions this process creates from now on (0: its default)."""
    global _ORT_THREADS
    _ORT_THREADS = n


def _rembg_session(model_name: str) -> Any:
    """The per-process rembg session for ``model_name``, created once; never downloads."""
    path = rembg_model_path(model_name)
    if not path.is_file():
        raise RembgModelMissingError(missing_model_message(model_name))
    key = (model_name, str(path))
    if key not in _REMBG_SESSIONS:
        import onnxruntime as ort  # heavy imports (rembg takes seconds): only when rembg is really used
        from rembg import new_session
        from rembg.sessions import sessions_class

        custom = _custom_model(model_name) is not None  # a file of the U^2-Net family: rembg's custom session
        session_name = "u2net_custom" if custom else model_name
        cls = next((c for c in sessions_class if c.name() == session_name), None)
        if cls is None:
            raise ValueError(f"rembg has no model {model_name!r}; known: {[c.name() for c in sessions_class]}")
        resolve = getattr(cls, "resolve_existing", None)  # rembg >= 2.0.6x
        if not custom and resolve is not None and resolve(f"{model_name}.onnx") is None:
            # Our reading of rembg's folder rules disagrees with this rembg version: it would download.
            raise RembgModelMissingError(missing_model_message(model_name))
        opts = ort.SessionOptions()
        if _ORT_THREADS:
            opts.intra_op_num_threads = _ORT_THREADS
        # rembg accepts a custom model_path only under its model folders ($U2NET_HOME, ~/.u2net, ~/.rembg).
        extra = {"model_path": os.path.abspath(path)} if custom else {}
        _REMBG_SESSIONS[key] = new_session(session_name, sess_opts=opts, **extra)
    return _REMBG_SESSIONS[key]


def rembg_mask(img: np.ndarray, model_name: str = "u2net") -> np.ndarray:
    """Soft foreground mask of the whole image by rembg, from a model file already on disk.

    Args:
        img: ``(H, W, 3)`` RGB uint8 image.
        model_name: rembg model (U^2-Net family: ``u2net``, ``u2netp``, ``u2net_human_seg``, ``silueta``...),
            or the path of an ``.onnx`` file with U^2-Net's input and outputs inside rembg's model folder
            (``$U2NET_HOME``), run by rembg's ``u2net_custom`` session.

    Returns:
        ``(H, W)`` uint8 mask, 255 = foreground.

    Raises:
        RembgModelMissingError: The model file is not on disk (the message says where to put it).
    """
    from PIL import Image

    session = _rembg_session(model_name)
    masks = session.predict(Image.fromarray(img))
    mask = np.maximum.reduce([np.asarray(m.convert("L"), dtype=np.uint8) for m in masks])
    if mask.shape != img.shape[:2]:
        mask = cv2.resize(mask, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    return mask
