"""Every training feature the README claims, exercised on the CPU with a tiny model and a few rows.

Each test checks the behaviour itself (a dtype seen inside the forward pass, a weight that did or did not move,
the learning rate of each epoch), so it fails when the feature silently stops working.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from fh_utils.data.datasets import create_loaders
from fh_utils.models.factory import create_model, load_model
from fh_utils.runs import read_json
from fh_utils.training import engine
from fh_utils.training.engine import evaluate, fit, seed_everything

REPO = Path(__file__).resolve().parent.parent
TIMING = ["seconds", "train_img_per_s"]
BACKBONE = "mobilenetv4_conv_small"  # has convolutions (channels_last) and BatchNorm, and is fast at 32 px


@pytest.fixture(scope="module")
def tiny_loaders(demo_root):
    """ST2 at 32 px, 32 train rows (2 steps an epoch) and 16 val rows."""
    loaders = create_loaders(demo_root, "st2", img_size=32, batch_size=16, limit=32)
    loaders["val"] = create_loaders(demo_root, "st2", img_size=32, batch_size=16, limit=16, splits=("val",))["val"]
    return loaders


def _model(task: str = "st2", seed: int = 3) -> torch.nn.Module:
    seed_everything(seed)
    return create_model(task, BACKBONE, img_size=32)


def _fit(loaders, run_dir, model=None, **cfg):
    base = dict(epochs=1, lr=2e-3, scheduler="warmup_cosine", warmup_epochs=0.5, seed=3, device="cpu", threads=1)
    return fit(model if model is not None else _model(), loaders, run_dir, {**base, **cfg}, progress=False)


class _Recorder:
    """Forward hooks on every conv/linear layer: the dtypes of their outputs and the layout of the first input."""

    def __init__(self, model: torch.nn.Module):
        self.dtypes: set[torch.dtype] = set()
        self.channels_last_inputs: list[bool] = []
        self.handles = []
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                self.handles.append(m.register_forward_hook(self._record_dtype))
        self.handles.append(convs[0].register_forward_pre_hook(self._record_layout))

    def _record_dtype(self, module, args, output):
        if module.training:
            self.dtypes.add(output.dtype)

    def _record_layout(self, module, args):
        x = args[0]
        if module.training:
            self.channels_last_inputs.append(x.is_contiguous(memory_format=torch.channels_last)
                                             and not x.is_contiguous())  # fmt: skip

    def close(self):
        for h in self.handles:
            h.remove()


# ------------------------------------------------------------------------------------------------ precision


def test_bf16_autocast_runs_the_forward_pass_in_bf16_on_cpu(tiny_loaders, tmp_path):
    model = _model()
    rec = _Recorder(model)
    _fit(tiny_loaders, tmp_path / "run", model, amp="bf16")
    rec.close()
    assert torch.bfloat16 in rec.dtypes, rec.dtypes
    runtime = read_json(tmp_path / "run" / "config.json")["runtime"]
    assert runtime["amp_dtype"] == "torch.bfloat16"
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert np.isfinite(history["train_loss"]).all()


def test_amp_off_stays_fp32(tiny_loaders, tmp_path):
    model = _model()
    rec = _Recorder(model)
    _fit(tiny_loaders, tmp_path / "run", model, amp="off")
    rec.close()
    assert rec.dtypes == {torch.float32}


def _cpu_fp16_autocast_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            return torch.nn.Linear(2, 2)(torch.ones(1, 2)).dtype == torch.float16
    except (RuntimeError, ValueError):
        return False


def test_fp16_autocast_with_grad_scaler(tiny_loaders, tmp_path):
    if not torch.cuda.is_available() and not _cpu_fp16_autocast_works():
        pytest.skip(f"fp16 autocast needs a CUDA device (none here) or CPU fp16 autocast (torch {torch.__version__})")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _model()
    rec = _Recorder(model)
    scales = []
    original = torch.amp.GradScaler.scale

    def spy(self, outputs):
        scales.append(self.is_enabled())
        return original(self, outputs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.amp.GradScaler, "scale", spy)
        _fit(tiny_loaders, tmp_path / "run", model, amp="fp16", device=device)
    rec.close()
    assert torch.float16 in rec.dtypes, rec.dtypes
    assert scales and all(scales), "every step goes through an enabled GradScaler"
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["scaler"] and "scale" in last["scaler"], "the scaler's state is saved for resume"


def test_channels_last_feeds_convolutions_channels_last(tiny_loaders, tmp_path):
    model = _model()
    rec = _Recorder(model)
    _fit(tiny_loaders, tmp_path / "run", model, channels_last=True)
    rec.close()
    assert rec.channels_last_inputs and all(rec.channels_last_inputs)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    assert read_json(tmp_path / "run" / "config.json")["runtime"]["channels_last"] is True


@pytest.mark.slow
def test_compile_true_trains_through_the_compiled_model(tiny_loaders, tmp_path, monkeypatch):
    compiled = []
    real_compile = torch.compile

    class Counting(torch.nn.Module):
        """The compiled module, counting the training steps that go through it."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            self.calls += 1
            return self.inner(x)

    def spy(model, *args, **kwargs):
        compiled.append(Counting(real_compile(model, *args, **kwargs)))
        return compiled[-1]

    monkeypatch.setattr(engine.torch, "compile", spy)
    res = _fit(tiny_loaders, tmp_path / "run", compile=True)
    assert len(compiled) == 1 and compiled[0].calls == 2, "both training steps ran the compiled model"
    assert np.isfinite(res.history["train_loss"]).all()
    # The compiled module shares its parameters with the model that is evaluated and saved.
    assert compiled[0].inner._orig_mod is res.model


# ------------------------------------------------------------------------------------------------ schedule


def _cosine_restarts_lr(t: float, lr: float, eta_min: float, t_0: int) -> float:
    t_cur = t % t_0
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t_cur / t_0)) / 2


class _StopAfter(Exception):
    pass


def test_default_scheduler_is_cosine_restarts_and_resumes_exactly(tiny_loaders, tmp_path):
    cfg = dict(epochs=4, lr=1e-3, min_lr=1e-5, t_0=2, t_mult=1, seed=3, device="cpu", threads=1)
    full = fit(_model(), tiny_loaders, tmp_path / "full", cfg, progress=False).history
    assert read_json(tmp_path / "full" / "config.json")["train"]["scheduler"] == "cosine_restarts"
    # The lr after epoch e (stepped per fractional epoch): mid-cycle, restarted, mid-cycle, restarted.
    expected = [_cosine_restarts_lr(e + 1, 1e-3, 1e-5, 2) for e in range(4)]
    assert full["lr"].tolist() == pytest.approx(expected, rel=1e-6)
    assert full["lr"][1] == pytest.approx(1e-3) and full["lr"][0] < 6e-4

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise _StopAfter

    with pytest.raises(_StopAfter):
        fit(_model(), tiny_loaders, tmp_path / "cut", cfg, progress=False, callbacks=[stop_after_two])
    resumed = fit(_model(seed=99), tiny_loaders, tmp_path / "cut", cfg, progress=False, resume=True).history
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING), check_exact=True)


# ------------------------------------------------------------------------------------------- what is kept


def test_best_pt_holds_the_ema_weights_when_ema_is_on(demo_root, tiny_loaders, tmp_path):
    # timm's EMA copies the weights on its first two updates: 4 steps make it differ from the raw weights.
    loaders = {**tiny_loaders, "train": create_loaders(demo_root, "st2", img_size=32, batch_size=8, limit=32,
                                                       splits=("train",))["train"]}  # fmt: skip
    _fit(loaders, tmp_path / "run", ema=True, ema_decay=0.5)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert best["epoch"] == last["epoch"] == 0  # both written after the only epoch
    floats = [k for k, v in best["model"].items() if v.is_floating_point() and "running" not in k]
    for k in floats:
        torch.testing.assert_close(best["model"][k], last["ema"][k], rtol=0, atol=0)
    assert any(not torch.equal(best["model"][k], last["model"][k]) for k in floats), "EMA equals the raw weights"


def test_early_stopping_stops_after_the_patience_and_keeps_the_best_epoch(tiny_loaders, tmp_path, monkeypatch):
    scores = iter([0.5, 0.6, 0.55, 0.58, 0.9, 0.95])
    real_evaluate = engine.evaluate

    def scripted(*args, **kwargs):
        result = real_evaluate(*args, **kwargs)
        return {**result, "score": next(scores)}

    monkeypatch.setattr(engine, "evaluate", scripted)
    res = _fit(tiny_loaders, tmp_path / "run", epochs=6, early_stopping=2)
    assert res.history["val_score"].tolist() == [0.5, 0.6, 0.55, 0.58]
    assert res.metrics["epoch"] == 2 and res.metrics["score"] == 0.6
    assert "early stopping" in (tmp_path / "run" / "train.log").read_text()


def test_gradient_clipping_bounds_the_norm_of_every_step(tiny_loaders, tmp_path):
    norms: list[float] = []

    def before_step(optimizer, args, kwargs):
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(before_step)
    try:
        _fit(tiny_loaders, tmp_path / "clip", grad_clip=1e-3)
        clipped, norms[:] = list(norms), []
        _fit(tiny_loaders, tmp_path / "free")
        free = list(norms)
    finally:
        handle.remove()
    assert len(clipped) == len(free) == 2  # one per step
    assert max(clipped) <= 1e-3 * (1 + 1e-4), clipped
    assert min(free) > 1e-2, "without clipping the gradients are far larger: the bound above means something"


def test_a_zero_head_weight_leaves_that_head_untouched(demo_root, tmp_path):
    loaders = create_loaders(demo_root, "st1", img_size=32, batch_size=16, limit=32)
    model = _model("st1")
    before = {name: p.detach().clone() for name, p in model.heads.named_parameters()}
    _fit(loaders, tmp_path / "run", model, head_weights={"Daily": 0.0, "Gender": 1.0, "Embellishment": 2.0},
         weight_decay=0.0)  # fmt: skip
    after = dict(model.heads.named_parameters())
    for name, value in before.items():
        moved = not torch.equal(value, after[name].detach())
        assert moved == (not name.startswith("Daily")), name
    assert read_json(tmp_path / "run" / "config.json")["train"]["head_weights"]["Daily"] == 0.0


# ------------------------------------------------------------------------------------------- data options


def _tiny_root(demo_root: Path, dest: Path, rows: dict[str, int]) -> Path:
    """A copy of the first rows of the demo ST2 CSVs and their images (a data root small enough for GrabCut)."""
    for split, n in rows.items():
        name = f"Fashion-How24_sub2_{split}.csv"
        df = pd.read_csv(demo_root / name).head(n)
        dest.mkdir(parents=True, exist_ok=True)
        df.to_csv(dest / name, index=False)
        for image in df["image_name"]:
            (dest / split / image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(demo_root / split / image, dest / split / image)
    return dest


@pytest.fixture(scope="module")
def tiny_root(demo_root, tmp_path_factory) -> Path:
    return _tiny_root(demo_root, tmp_path_factory.mktemp("tiny") / "data", {"train": 16, "val": 8})


def test_training_with_use_nobg_reads_the_background_removed_tree(tiny_root, tmp_path):
    from fh_utils.prep.background import create_nobg_tree

    nobg = tmp_path / "nobg"
    create_nobg_tree(tiny_root, nobg, method="grabcut", work_size=96, workers=1, progress=False)
    loaders = create_loaders(tiny_root, "st2", img_size=32, batch_size=8, use_nobg=True, nobg_root=str(nobg),
                             augment="none")  # fmt: skip
    for split in ("train", "val"):
        paths = [s.path for s in loaders[split].dataset.source.specs]
        assert paths and all(Path(p).is_relative_to(nobg / split) for p in paths), paths[:2]
    raw = create_loaders(tiny_root, "st2", img_size=32, batch_size=8, augment="none")
    assert not torch.equal(loaders["val"].dataset[0][0], raw["val"].dataset[0][0]), "same pixels as the raw image"
    res = _fit(loaders, tmp_path / "run", epochs=1)
    again = evaluate(load_model(tmp_path / "run"), loaders["val"], "st2", device="cpu", progress=False)
    assert len(res.history) == 1 and res.metrics["score"] == res.history["val_score"].iloc[0] == again["score"]


# -------------------------------------------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fh_utils", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_cli_cache_fills_the_cache_once(tiny_root, tmp_path):
    cache = tmp_path / "cache"
    args = ["cache", str(tiny_root), "--tasks", "st2", "--splits", "train", "val", "--img-size", "32",
            "--cache-dir", str(cache), "--workers", "1"]  # fmt: skip
    first = _cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "st2 train: 16 rows, 16 entries built" in first.stdout and "st2 val: 8 rows, 8 entries built" in first.stdout
    entries = sorted(p.relative_to(cache) for p in cache.rglob("*.npy"))
    assert len(entries) == 24
    second = _cli(*args)
    assert second.returncode == 0 and "16 rows, 0 entries built" in second.stdout, second.stdout
    assert sorted(p.relative_to(cache) for p in cache.rglob("*.npy")) == entries


def test_cli_nobg_writes_the_mirrored_tree(tiny_root, tmp_path):
    out = tmp_path / "nobg"
    done = _cli("nobg", str(tiny_root), "--out", str(out), "--method", "grabcut", "--work-size", "96",
                "--workers", "1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    expected = {f"{split}/{name}" for split in ("train", "val")
                for name in pd.read_csv(tiny_root / f"Fashion-How24_sub2_{split}.csv")["image_name"]}  # fmt: skip
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.suffix != ".json"}
    assert written == expected
    assert (out / "nobg_manifest.json").is_file()
    again = _cli("nobg", str(tiny_root), "--out", str(out), "--method", "grabcut", "--work-size", "96",
                 "--workers", "1")  # fmt: skip
    assert again.returncode == 0 and "'n_done_now': 0" in again.stdout, again.stdout


# ------------------------------------------------------------------------------------------------- make demo


@pytest.mark.slow
def test_make_demo_twice_runs_the_notebooks_again(tmp_path, _outputs_in_tmp):
    from fh_utils.runner.demo import run_demo

    spec = tmp_path / "demo.yaml"
    spec.write_text(yaml.safe_dump({
        "data_root": str(tmp_path / "demo"), "demo_data": {"seed": 0, "scale": 0.05},
        "runs": [{"notebook": "01_eda.ipynb", "folder": "twice-eda",
                  "parameters": {"run_name": "twice-eda", "samples_per_class": 1, "swatch_boxes_per_class": 1}}],
    }))  # fmt: skip
    executed = _outputs_in_tmp / "runs" / "twice-eda" / "01_eda.ipynb"

    def run_stamp():
        meta = json.loads(executed.read_text(encoding="utf-8"))["metadata"]["papermill"]
        return executed.stat().st_mtime_ns, meta["start_time"]

    first = run_demo(spec)
    assert first["runs"] == {"twice-eda": str(executed.parent)}
    stamp = run_stamp()
    html = executed.with_suffix(".html").stat().st_mtime_ns
    run_demo(spec)
    again = run_stamp()
    assert again[0] > stamp[0] and again[1] > stamp[1], "the notebook ran again"
    assert executed.with_suffix(".html").stat().st_mtime_ns > html
