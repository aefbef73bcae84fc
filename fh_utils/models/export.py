"""Compact models: export a trained run to int8 by dynamic quantisation, save it, load it for CPU scoring.

Dynamic quantisation (``torch.ao.quantization.quantize_dynamic``) stores every ``nn.Linear`` weight as int8
and quantises activations on the fly; it needs no calibration data and runs on the CPU with PyTorch alone,
offline, as the scoring server does. Transformers (most weights in Linear layers) shrink about 4x: a ViT of
about twice the 25 MB fp32 budget fits in int8. Convolutions stay fp32, so CNNs barely shrink.

An export lives in its own folder: ``model_int8.pt`` (int8 state dict, ``model_config``, the run's crop
settings: :data:`fh_utils.models.ensemble.DATA_KEYS`) and ``config.json`` (the source run's, with
``run.kind = "int8"``), which notebook 05 scores like a run folder.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fh_utils.io import atomic_write, read_json, write_json
from fh_utils.models.ensemble import data_settings
from fh_utils.models.factory import load_model, model_from_config, state_dict_size_mb
from fh_utils.runs import CONFIG_FILE, INT8_FILE

INT8_KIND = "int8_dynamic"


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` layers dynamic quantisation can replace.

    Left out: a layer whose parent reads its ``.weight`` directly (timm's EVA / BEiT attention calls
    ``F.linear(x, self.qkv.weight, ...)`` with a separately stored bias, marked by ``q_bias``); the quantised
    layer has no such tensor.
    """
    names = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear) and not hasattr(parent, "q_bias"):
                names.append(f"{parent_name}.{child_name}" if parent_name else child_name)
    return names


def quantize_int8(model: nn.Module) -> nn.Module:
    """An int8 copy of ``model``: its ``nn.Linear`` layers dynamically quantised (CPU, fbgemm/x86 or qnnpack)."""
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    model = model.cpu().eval()
    spec = {name: default_dynamic_qconfig for name in quantizable_linears(model)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.10+ announces the move of eager quantisation to torchao
        q = quantize_dynamic(model, spec, dtype=torch.qint8)
    q.model_config = dict(getattr(model, "model_config", {}))
    q.input_config = dict(getattr(model, "input_config", {}))
    return q.eval()


def export_int8(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Quantise a run's ``best.pt`` to int8 and write it into ``out_dir`` (default ``<run_dir>-int8``).

    Returns:
        The path of ``model_int8.pt``. The folder also gets ``config.json`` (the run's, ``run.kind="int8"``)
        and ``export.json`` (fp32 and int8 sizes).
    """
    run = Path(run_dir)
    out = Path(out_dir) if out_dir else run.with_name(run.name + "-int8")
    out.mkdir(parents=True, exist_ok=True)
    fp32 = load_model(run, map_location="cpu")
    q = quantize_int8(fp32)
    config = read_json(run / CONFIG_FILE) if (run / CONFIG_FILE).exists() else {}
    data = config.get("data", {})
    state = {"kind": INT8_KIND, "model": q.state_dict(), "model_config": fp32.model_config,
             "data": data_settings(data), "source": str(run)}  # fmt: skip
    path = out / INT8_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        atomic_write(path, lambda tmp: torch.save(state, tmp))
    config["run"] = {**config.get("run", {}), "kind": "int8", "source": str(run)}
    write_json(out / CONFIG_FILE, config)
    sizes = {"source": str(run), "fp32_mb": round(state_dict_size_mb(fp32), 4),
             "int8_mb": round(state_dict_size_mb(q), 4), "file_mb": round(path.stat().st_size / 1e6, 4),
             "quantization": INT8_KIND}  # fmt: skip
    write_json(out / "export.json", sizes)
    return path


def load_int8(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load ``model_int8.pt`` (or its folder): the int8 model (eval, CPU) and the run's crop settings."""
    path = Path(path)
    if path.is_dir():
        path = path / INT8_FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("kind") != INT8_KIND:
            raise ValueError(f"{path} is not an int8 export (kind {state.get('kind')!r})")
        q = quantize_int8(model_from_config(state["model_config"]))
        q.load_state_dict(state["model"])
    return q.eval(), dict(state.get("data", {}))
