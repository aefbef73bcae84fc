"""int8 export: a trained run quantised, saved, loaded and scored like a run; Linear-heavy models shrink ~4x."""

from __future__ import annotations

import numpy as np
import torch

from fh_utils.io import read_json
from fh_utils.models.export import export_int8, load_int8, quantize_int8
from fh_utils.models.factory import create_model, state_dict_size_mb
from fh_utils.runs import INT8_FILE
from fh_utils.workbook import submission


def test_int8_export_loads_and_agrees_with_fp32_on_the_demo_val(demo_root):
    from fh_utils.workbook import workflow

    params = dict(data_root=str(demo_root), run_name="export-st2", backbone="fh_colornet", img_size=32, epochs=1,
                  batch_size=16, lr=2e-3, scheduler="warmup_cosine", device="cpu", num_workers=0, cache=False,
                  limit=64, color_baseline=False)  # fmt: skip
    run_dir, _ = workflow.train_from_params("st2", params, progress=False)
    path = export_int8(run_dir)
    assert path.name == INT8_FILE and path.parent.name == "export-st2-int8"
    sizes = read_json(path.parent / "export.json")
    assert sizes["int8_mb"] <= sizes["fp32_mb"]
    model, data = load_int8(path)
    assert any("quantized" in type(m).__module__ for m in model.modules())
    fp32 = submission.prepare_submission(str(run_dir), data_root=str(demo_root), threads=1)
    int8 = submission.prepare_submission(str(path.parent), data_root=str(demo_root), threads=1)
    assert int8.model_path == path and int8.task.name == "st2"
    a = submission.predict_submission(fp32, progress=False).submission["color"].to_numpy()
    b = submission.predict_submission(int8, progress=False).submission["color"].to_numpy()
    assert len(a) == len(b) > 50 and np.mean(a == b) >= 0.9, np.mean(a == b)


def test_a_linear_heavy_model_shrinks_about_4x_and_predicts_close_to_fp32():
    model = create_model("st1", "deit_tiny_patch16_224", img_size=32, size_budget=False).eval()
    q = quantize_int8(model)
    fp32_mb, int8_mb = state_dict_size_mb(model), state_dict_size_mb(q)
    assert int8_mb < 0.35 * fp32_mb, (fp32_mb, int8_mb)
    x = torch.randint(0, 256, (16, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        ref, out = model(x), q(x)
    for column in ref:
        assert torch.allclose(ref[column].softmax(1), out[column].softmax(1), atol=0.05)
    assert q.model_config == model.model_config and q.input_config == model.input_config
