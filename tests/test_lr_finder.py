"""The learning-rate range test (fh_utils.training.lr_finder, fh_utils.workbook.lr_find, ``python -m fh_utils
lr-find``, notebooks 03/04's ``lr_find``): the model and the data untouched, the curve's length, the early stop,
the suggestion, the command and the notebooks' parameter."""

from __future__ import annotations

import random

import nbformat
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from fh_utils.__main__ import main
from fh_utils.models import create_model
from fh_utils.paths import runs_dir
from fh_utils.runner.notebooks import UnknownParameterError, check_injected_parameters
from fh_utils.tasks import get_task
from fh_utils.training.losses import class_priors
from fh_utils.training.lr_finder import find_lr, suggest_lrs
from fh_utils.workbook import workflow
from fh_utils.workbook.lr_find import run_lr_finder

NOTEBOOKS = ("03_train_st1.ipynb", "04_train_st2.ipynb")
# The demo data as the notebooks' tests shrink it: 32 rows at 32 px (two batches), cached after the first pass.
TINY = dict(backbone="fh_colornet", img_size=32, batch_size=16, limit=32, device="cpu", num_workers=0, cache=True,
            threads=1)  # fmt: skip


@pytest.fixture(scope="module")
def random_batches() -> DataLoader:
    """Two shuffled batches of random 32-px uint8 images with ST2 labels: what the engine's loaders yield."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 18, (32, 1), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1))


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("st2", "fh_colornet", img_size=32)


def _rng_states(loader: DataLoader) -> list:
    return [random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state(), loader.generator.get_state()]


def test_the_finder_leaves_the_models_weights_and_the_datas_randomness_unchanged(demo_root):
    """Bit-identical weights and buffers, on the same device; every RNG as it was, so the next batch (sampler
    order and augmentation) is the one a fresh loader gives."""
    setup = workflow.prepare_training("st2", dict(data_root=str(demo_root), run_name="lrf-same", imbalance="sampler",
                                                  lr_find=True, **TINY))  # fmt: skip
    loaders, model = workflow.build_loaders(setup), workflow.build_model(setup)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p.data_ptr() for p in model.parameters()]
    rngs = _rng_states(loaders["train"])
    result, _ = run_lr_finder(setup, model, loaders, num_iter=8, progress=False)
    assert len(result.lrs) == 8  # it trained: 8 steps over the 2 batches of the loader, iterated again
    after = model.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, changed
    assert [p.data_ptr() for p in model.parameters()] == params and next(model.parameters()).device.type == "cpu"
    for a, b in zip(rngs, _rng_states(loaders["train"])):
        assert (a == b) if not isinstance(a, (np.ndarray, torch.Tensor)) else bool((a == b).all())
    x, y = next(iter(loaders["train"]))
    x_fresh, y_fresh = next(iter(workflow.build_loaders(setup)["train"]))
    assert torch.equal(y, y_fresh) and torch.equal(x, x_fresh)
    assert (setup.run_dir / "figures" / "lr_find.png").stat().st_size > 0


@pytest.mark.parametrize("config", [{}, {"grad_clip": 1.0, "channels_last": True, "loss": "logit_adjust"}])
def test_the_curve_has_the_requested_length_and_the_suggestion_lies_within_the_sweep(random_batches, config):
    priors = class_priors(random_batches.dataset.tensors[1].numpy(), get_task("st2")) if config else None
    res = find_lr(_tiny_model(), random_batches, {"device": "cpu", "lr": 2e-3, **config}, "st2", priors,
                  start_lr=1e-6, end_lr=1e-2, num_iter=12, progress=False)  # fmt: skip
    assert len(res.lrs) == len(res.losses) == len(res.raw_losses) == 12 and res.stopped == ""
    assert res.lrs[0] == pytest.approx(1e-6) and res.lrs[-1] == pytest.approx(1e-2)
    assert np.allclose(np.diff(np.log(res.lrs)), np.log(1e4) / 11)  # exponential steps
    assert res.suggestion == res.suggestions["valley"]
    for rule in ("valley", "steep"):
        assert res.lrs[0] <= res.suggestions[rule] <= res.lrs[-1], rule
    assert np.isfinite(res.losses).all() and "suggested lr" in res.describe()
    assert list(res.to_frame().columns) == ["step", "lr", "loss", "raw_loss"]


def test_a_huge_end_lr_stops_the_sweep_early_on_divergence(random_batches):
    res = find_lr(_tiny_model(), random_batches, {"device": "cpu"}, "st2", start_lr=1e-4, end_lr=1e9, num_iter=40,
                  progress=False)  # fmt: skip
    assert 2 <= len(res.lrs) < 40 and res.stopped, res.describe()
    assert np.isfinite(res.losses).all() and np.isfinite(res.raw_losses).all()
    assert res.lrs[0] <= res.suggestion <= res.lrs[-1] < 1e9


def test_bad_sweep_settings_are_refused_with_their_name(random_batches):
    for bad, match in ((dict(start_lr=1.0, end_lr=0.1), "start_lr"), (dict(num_iter=1), "num_iter"),
                       (dict(smooth=1.0), "smooth"), (dict(diverge=1.0), "diverge")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            find_lr(_tiny_model(), random_batches, {"device": "cpu"}, "st2", progress=False, **bad)


def test_each_rule_picks_its_point_of_a_known_curve():
    lrs = np.logspace(-6, 1, 70)
    # flat, a long descent whose steepest part is at step 35, a minimum at step 50, then a blow-up
    losses = np.concatenate([np.full(20, 2.0), 2.0 - 1.5 / (1 + np.exp(-(np.arange(30) - 15) / 3)), [0.45],
                             np.linspace(0.6, 3.0, 19)])  # fmt: skip
    assert np.argmin(losses) == 50
    got = suggest_lrs(lrs, losses)
    assert got["steep"] in (lrs[34], lrs[35])  # the steepest step: 34 -> 35 or 35 -> 36 (equal, but for rounding)
    assert got["minimum"] == pytest.approx(lrs[50] / 10)
    assert lrs[20] < got["valley"] < lrs[50]  # inside the descent, before the minimum
    assert suggest_lrs(lrs[:1], losses[:1]) == dict.fromkeys(("valley", "steep", "minimum"), lrs[0])


def test_the_command_prints_the_suggestion_and_refuses_a_bad_parameter(demo_root, capsys):
    args = ["lr-find", "st2", "-p", "data_root", str(demo_root), "-p", "run_name", "lrf-cli", "--num-iter", "6",
            "--end-lr", "1", "--quiet"]  # fmt: skip
    for name, value in TINY.items():
        args += ["-p", name, str(value)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "suggested lr: " in out and float(out.rsplit("suggested lr: ", 1)[1]) > 0
    assert "this run's lr 2.00e-03" in out  # notebook 04's own lr: its parameters cell, then the -p overrides
    assert (runs_dir() / "lrf-cli" / "figures" / "lr_find.png").exists()
    assert main(["lr-find", "st2", "-p", "img_szie", "32"]) == 2
    assert "unknown parameter 'img_szie' (did you mean 'img_size'?)" in capsys.readouterr().err
    assert main(args[:-3] + ["--end-lr", "1e-9"]) == 2  # below start_lr: a clear error, no traceback
    assert "start_lr" in capsys.readouterr().err


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_notebooks_declare_lr_find_off_and_run_it_between_the_model_and_training(name):
    from fh_utils.paths import notebooks_dir

    cells = nbformat.read(notebooks_dir() / name, as_version=4).cells
    params = next(c for c in cells if "parameters" in c.metadata.get("tags", []))
    assert "lr_find: bool = False  # " in params.source and "lr_find" in workflow.training_parameter_names()
    check_injected_parameters([params.source, "# Parameters\nlr_find = True\n", "check_injected_parameters()"])
    with pytest.raises(UnknownParameterError, match="'lr_fnd' \\(did you mean 'lr_find'\\?\\)"):
        check_injected_parameters([params.source, "# Parameters\nlr_fnd = True\n", "check_injected_parameters()"])
    code = [c.source for c in cells if c.cell_type == "code"]
    model, finder, train = (next(i for i, s in enumerate(code) if key in s)
                            for key in ("build_model(setup)", "run_lr_finder(", "workflow.train("))  # fmt: skip
    assert model < finder < train and code[finder].startswith("if lr_find:")
