"""Distillation's parts one by one, with tiny models and tmp_path checkpoints (no training).

Pinned down: the soft term and the total against a hand computation at a non-default temperature and alpha, per
head (head weights of the hard loss, heads the teacher does not cover), and the exact errors of its settings; the
teacher's averaged softened probabilities, its frozen eval state, its ``describe()`` record and the resizing of the
batch for a member of another input size; every way of naming a teacher (run folder, checkpoint, comma list,
``"<timm name>@<weights>"`` with ``.pth``/``.pt``/``.safetensors``, ``~``) and the exact messages when it is
missing, of another task or reads other colour spaces.
"""

import datetime
import pickle
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from fh_utils.models import factory
from fh_utils.tasks import get_task
from fh_utils.training.distill import DistillationLoss, Teacher, _fit_input, build_teacher

ST1, ST2 = get_task("st1"), get_task("st2")
ST1_HEADS = {h.column: h.num_classes for h in ST1.heads}
ST2_HEADS = {h.column: h.num_classes for h in ST2.heads}
NOT_NAMED = ("is neither a run folder, a checkpoint file nor '<timm name>@<weights file>' "
             "(a state dict of a model with this task's heads)")  # fmt: skip


class Toy(nn.Module):
    """A task model in miniature: ``{column: logits}`` from the batch's channel means; records what it saw."""

    def __init__(self, heads=None, seed=0, input_config=None, model_config=None, dtype=torch.float32):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.heads = nn.ModuleDict({c: nn.Linear(3, n) for c, n in (heads or ST1_HEADS).items()})
        with torch.no_grad():
            for head in self.heads.values():
                head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 3)
                head.bias.copy_(torch.randn(head.bias.shape, generator=g))
        self.drop = nn.Dropout(0.5)  # would change the logits if the teacher ever ran in training mode
        if input_config is not None:
            self.input_config = input_config
        if model_config is not None:
            self.model_config = model_config
        self.dtype, self.seen = dtype, []

    def forward(self, x):
        self.seen.append(x)
        feats = self.drop(x.float().mean((2, 3)) / 255.0)
        return {c: head(feats).to(self.dtype) for c, head in self.heads.items()}


class Bare(nn.Module):
    """A module with no heads, configs or parameters: trusted to return the task's heads."""

    def forward(self, x):
        return {"Daily": x.float().mean((1, 2, 3))[:, None].repeat(1, 2)}


class Student(nn.Module):
    def __init__(self, **input_config):
        super().__init__()
        self.input_config = input_config


def _batch(*shape, seed=0):
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- the loss


class Hard(nn.Module):
    """A stand-in hard loss: a fixed value, optional head weights, and a record of its calls."""

    def __init__(self, value=1.7, weights=None):
        super().__init__()
        self.value, self.calls = value, []
        if weights is not None:
            self.weights = weights

    def forward(self, outputs, targets):
        self.calls.append((outputs, targets))
        return torch.tensor(self.value)


def _hand_kl(p_teacher, student_logits, t):
    # KL(p || q) summed over classes, averaged over the batch ("batchmean"), q = softmax(student / T)
    q = (student_logits.double() / t).softmax(1)
    p = p_teacher.double()
    return float((p * (p.log() - q.log())).sum(1).mean())


def _outputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(3, 4, generator=g) * 2, "b": torch.randn(3, 2, generator=g) * 2}


def _probs(seed=2):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(3, 4, generator=g).softmax(1), "b": torch.randn(3, 2, generator=g).softmax(1)}


def test_soft_term_is_t_squared_batchmean_kl_weighted_by_the_hard_loss_head_weights():
    out, teach = _outputs(), _probs()
    t = 3.0
    loss = DistillationLoss(Hard(weights={"a": 2.0}), alpha=0.25, temperature=t)  # "b" has no weight: 1.0
    want = 2.0 * t * t * _hand_kl(teach["a"], out["a"], t) + 1.0 * t * t * _hand_kl(teach["b"], out["b"], t)
    assert loss.soft(out, teach).item() == pytest.approx(want, rel=1e-5)
    # a hard loss without head weights weighs every head 1
    plain = DistillationLoss(Hard(), alpha=0.25, temperature=t)
    want_plain = t * t * (_hand_kl(teach["a"], out["a"], t) + _hand_kl(teach["b"], out["b"], t))
    assert plain.soft(out, teach).item() == pytest.approx(want_plain, rel=1e-5)


def test_soft_term_covers_only_the_heads_the_teacher_predicts():
    out, teach = _outputs(), _probs()
    t = 1.5
    loss = DistillationLoss(Hard(weights={"a": 1.0, "b": 5.0}), alpha=0.5, temperature=t)
    got = loss.soft(out, {"a": teach["a"]})
    assert got.item() == pytest.approx(t * t * _hand_kl(teach["a"], out["a"], t), rel=1e-5)
    assert loss.soft(out, {}) == 0.0  # no teacher heads: nothing to distil


def test_soft_term_is_float32_whatever_the_student_logits_dtype():
    out, teach = _outputs(), _probs()
    loss = DistillationLoss(Hard(), alpha=0.5, temperature=2.0)
    double = loss.soft({k: v.double() for k, v in out.items()}, teach)
    assert double.dtype == torch.float32
    assert double.item() == pytest.approx(loss.soft(out, teach).item(), rel=1e-5)


def test_a_training_step_s_loss_and_teacher_pass_raise_no_warnings():
    # run every step of a training: a warning (e.g. an implicit softmax dimension) would flood the log
    out, teach = _outputs(), _probs()
    loss = DistillationLoss(Hard(weights={"a": 2.0}), alpha=0.25, temperature=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(out, torch.zeros(3, 2, dtype=torch.long), teach)
        Teacher([Toy(input_config={"img_size": 8})]).probabilities(_batch(2, 3, 16, 16), 3.0)


def test_a_teacher_that_agrees_with_the_student_adds_no_soft_loss():
    out = _outputs()
    t = 2.5
    same = {k: (v / t).softmax(1) for k, v in out.items()}
    assert DistillationLoss(Hard(), 0.5, t).soft(out, same).item() == pytest.approx(0.0, abs=1e-6)


def test_forward_weighs_hard_by_one_minus_alpha_and_soft_by_alpha_and_returns_both_terms():
    out, teach = _outputs(), _probs()
    targets = torch.zeros(3, 2, dtype=torch.long)
    hard = Hard(value=1.7, weights={"a": 2.0})
    loss = DistillationLoss(hard, alpha=0.25, temperature=3.0)
    total, hard_term, soft_term = loss(out, targets, teach)
    want_soft = loss.soft(out, teach).item()
    assert hard.calls[0][0] is out and hard.calls[0][1] is targets  # the hard loss sees the labels
    assert hard_term.item() == pytest.approx(1.7)
    assert soft_term.item() == pytest.approx(want_soft, rel=1e-6)
    assert total.item() == pytest.approx(0.75 * 1.7 + 0.25 * want_soft, rel=1e-6)
    # the ends of the range: all hard, all soft
    assert DistillationLoss(hard, 0.0, 3.0)(out, targets, teach)[0].item() == pytest.approx(1.7)
    assert DistillationLoss(hard, 1.0, 3.0)(out, targets, teach)[0].item() == pytest.approx(want_soft, rel=1e-6)


def test_settings_are_kept_as_floats_with_the_hard_loss():
    hard = Hard()
    loss = DistillationLoss(hard, alpha=1, temperature=3)
    assert loss.hard is hard
    assert (loss.alpha, loss.temperature) == (1.0, 3.0)
    assert type(loss.alpha) is float and type(loss.temperature) is float
    assert DistillationLoss(hard, alpha=0, temperature=1e-3).temperature == 1e-3  # any positive T is fine


@pytest.mark.parametrize("alpha", [-0.1, 1.5, 1.0000001])
def test_alpha_outside_zero_to_one_is_refused_by_name(alpha):
    with pytest.raises(ValueError) as err:
        DistillationLoss(Hard(), alpha=alpha, temperature=2.0)
    assert str(err.value) == f"distill_alpha must be in [0, 1], got {alpha}"


@pytest.mark.parametrize("temperature", [0, 0.0, -1.0])
def test_temperature_not_positive_is_refused_by_name(temperature):
    with pytest.raises(ValueError) as err:
        DistillationLoss(Hard(), alpha=0.5, temperature=temperature)
    assert str(err.value) == f"distill_temperature must be > 0, got {temperature}"


# ------------------------------------------------------------------------------------------- the teacher


def test_probabilities_average_the_members_softened_probabilities_as_float32():
    a, b = Toy(seed=1), Toy(seed=2, dtype=torch.float64)
    teacher = Teacher([a, b])
    x = _batch(2, 3, 4, 4)
    t = 2.5
    got = teacher.probabilities(x, t)
    with torch.no_grad():
        la, lb = a(x), b(x)
    assert set(got) == set(ST1_HEADS)
    for column in ST1_HEADS:
        want = ((la[column].float() / t).softmax(1) + (lb[column].float() / t).softmax(1)) / 2
        assert got[column].dtype == torch.float32
        torch.testing.assert_close(got[column], want)
        torch.testing.assert_close(got[column].sum(1), torch.ones(2))
    one = Teacher([a]).probabilities(x, t)["Daily"]
    torch.testing.assert_close(one, (la["Daily"] / t).softmax(1))


def test_teacher_is_frozen_and_stays_in_eval_mode_whatever_it_is_told():
    member = Toy().train()
    teacher = Teacher([member])
    assert not teacher.training and not member.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert teacher.train() is teacher and teacher.train(True) is teacher
    assert not teacher.training and not member.training and not member.drop.training
    x = _batch(4, 3, 2, 2)
    # eval mode: dropout off, so two passes agree
    torch.testing.assert_close(teacher.probabilities(x, 2.0)["Daily"], teacher.probabilities(x, 2.0)["Daily"])
    assert not teacher.probabilities(x, 2.0)["Daily"].requires_grad


def test_a_teacher_needs_at_least_one_model():
    for make in (lambda: Teacher([]), lambda: build_teacher("", ST1), lambda: build_teacher(" , ,", ST1)):
        with pytest.raises(ValueError) as err:
            make()
        assert str(err.value) == "a teacher needs at least one model"


def test_sources_default_to_the_members_class_names():
    assert Teacher([Toy(), Bare()]).sources == ["Toy", "Bare"]
    assert Teacher([Toy(), Bare()], ["run-a", "run-b"]).sources == ["run-a", "run-b"]


def test_describe_records_sources_and_model_configs_without_class_names():
    cfg = {"task": "st1", "backbone": "tiny", "img_size": 8, "class_names": {"Daily": ["x"]}}
    teacher = Teacher([Toy(model_config=cfg), Bare()], ["run-a", "bare"])
    assert teacher.describe() == {
        "members": ["run-a", "bare"],
        "model_configs": [{"task": "st1", "backbone": "tiny", "img_size": 8}, {}],
    }
    assert cfg["class_names"] == {"Daily": ["x"]}  # the member's own config is left alone


def test_a_member_of_another_input_size_sees_the_batch_resized_to_its_own():
    member = Toy(input_config={"img_size": 8})
    x = _batch(2, 3, 16, 12)
    Teacher([member]).probabilities(x, 2.0)
    want = F.interpolate(x.float(), size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    assert member.seen[-1].shape == (2, 3, 8, 8)
    torch.testing.assert_close(member.seen[-1], want)
    # the width decides: a batch already 8 px wide goes in as it is (uint8, unresized)
    tall = _batch(2, 3, 16, 8)
    assert _fit_input(member, tall) is tall
    # no input size (or no input_config at all): the batch as it is
    square = _batch(2, 3, 16, 16)
    assert _fit_input(Toy(input_config={"color_spaces": ["rgb"]}), square) is square
    assert _fit_input(Toy(input_config={"img_size": None}), square) is square
    assert _fit_input(Bare(), square) is square
    # upsizing too, with the same interpolation
    small = _batch(1, 3, 4, 4)
    up = F.interpolate(small.float(), size=(8, 8), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(_fit_input(member, small), up)


# ---------------------------------------------------------------------------------------- build_teacher


def test_models_are_checked_against_the_task_s_heads_and_named_in_the_error():
    with pytest.raises(ValueError) as err:
        build_teacher([Toy(heads=ST2_HEADS)], ST1)
    assert str(err.value) == f"teacher a model predicts {ST2_HEADS}, the student's task needs {ST1_HEADS}"
    fewer = {**ST1_HEADS, "Daily": ST1_HEADS["Daily"] - 1}  # same columns, another class count
    with pytest.raises(ValueError) as err:
        build_teacher(Toy(heads=fewer), ST1)
    assert str(err.value) == f"teacher a model predicts {fewer}, the student's task needs {ST1_HEADS}"
    # a bare module (no heads) is trusted
    assert build_teacher([Bare()], ST1).sources == ["Bare"]


def test_colour_spaces_must_match_the_student_s():
    hsv = Toy(input_config={"img_size": 8, "color_spaces": ["hsv"]})
    with pytest.raises(ValueError) as err:
        build_teacher([hsv], ST1, Student(img_size=8, color_spaces=["rgb"]))
    assert str(err.value) == "teacher a model reads colour spaces ['hsv'], the student ['rgb']"
    # a tuple and a list of the same spaces agree
    build_teacher([Toy(input_config={"color_spaces": ("rgb", "hsv")})], ST1, Student(color_spaces=["rgb", "hsv"]))
    # nothing to compare: no student, a student without spaces or input config, a member without spaces
    build_teacher([hsv], ST1)
    build_teacher([hsv], ST1, Student(img_size=8))
    build_teacher([hsv], ST1, nn.Linear(1, 1))
    build_teacher([Toy(input_config={"img_size": 8})], ST1, Student(img_size=8, color_spaces=["rgb"]))
    build_teacher([Toy()], ST1, Student(img_size=8, color_spaces=["rgb"]))


def test_build_teacher_takes_one_model_or_a_list_and_moves_it_to_the_device():
    one = build_teacher(Toy(), ST1)
    assert isinstance(one, Teacher) and one.sources == ["Toy"] and len(one.members) == 1
    assert {p.device.type for p in one.parameters()} == {"cpu"}
    two = build_teacher((Toy(seed=1), Bare()), ST1, device="meta")
    assert two.sources == ["Toy", "Bare"]
    assert {p.device.type for p in two.parameters()} == {"meta"}
    assert not two.training and not any(p.requires_grad for p in two.parameters())


@pytest.fixture(scope="module")
def st2_model():
    torch.manual_seed(7)
    return factory.create_model("st2", "fh_colornet", img_size=16).eval()


@pytest.fixture()
def st2_run(st2_model, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": st2_model.state_dict(), "model_config": st2_model.model_config}, run / "best.pt")
    return run


def _assert_same_weights(member, model):
    want = model.state_dict()
    got = member.state_dict()
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], msg=k)


def test_run_folders_and_checkpoints_load_as_members_named_as_given(st2_model, st2_run):
    spec = f" {st2_run} , {st2_run / 'best.pt'} ,"  # a comma list, spaces and an empty item
    teacher = build_teacher(spec, ST2)
    assert teacher.sources == [str(st2_run), str(st2_run / "best.pt")]
    for member in teacher.members:
        _assert_same_weights(member, st2_model)
    x = _batch(2, 3, 16, 16)
    with torch.no_grad():
        want = (st2_model(x)["Color"] / 2.0).softmax(1)
    torch.testing.assert_close(teacher.probabilities(x, 2.0)["Color"], want)
    assert build_teacher(st2_run / "best.pt", ST2).sources == [str(st2_run / "best.pt")]  # a Path
    assert build_teacher([st2_run], ST2).sources == [str(st2_run)]
    # a student without an input config: the run's own size
    assert build_teacher(str(st2_run), ST2, nn.Linear(1, 1)).members[0].input_config["img_size"] == 16


def test_a_run_folder_under_the_home_directory_may_be_named_with_a_tilde(st2_run, monkeypatch):
    monkeypatch.setenv("HOME", str(st2_run.parent))
    assert build_teacher("~/run", ST2).sources == ["~/run"]
    model = _save(st2_run / "weights.pth")
    teacher = build_teacher("fh_colornet@~/run/weights.pth", ST2)
    _assert_same_weights(teacher.members[0], model)
    with pytest.raises(FileNotFoundError) as err:
        build_teacher("fh_colornet@~/none.pth", ST2)
    assert str(err.value) == f"teacher weights not found: {st2_run.parent / 'none.pth'}"


def _save(file):
    """A fresh ST2 model whose plain state dict is saved to ``file``."""
    torch.manual_seed(8)
    model = factory.create_model("st2", "fh_colornet", img_size=16, check_size=False)
    torch.save(model.state_dict(), file)
    return model


def test_a_run_of_another_task_is_refused_with_both_head_sets(st2_run):
    with pytest.raises(ValueError) as err:
        build_teacher(str(st2_run), ST1)
    assert str(err.value) == f"teacher {st2_run} predicts {ST2_HEADS}, the student's task needs {ST1_HEADS}"


def test_a_missing_teacher_names_the_forms_it_may_take(tmp_path):
    missing = str(tmp_path / "no-such-run")
    with pytest.raises(FileNotFoundError) as err:
        build_teacher(missing, ST2)
    assert str(err.value) == f"teacher {missing!r} {NOT_NAMED}"
    with pytest.raises(FileNotFoundError) as err:
        build_teacher(f"fh_colornet@{tmp_path / 'none.pth'}", ST2)
    assert str(err.value) == f"teacher weights not found: {tmp_path / 'none.pth'}"


def test_timm_name_and_weights_file_builds_the_model_at_the_student_s_size(tmp_path, monkeypatch):
    folder = tmp_path / "w@1"  # an "@" in the file's path too: only the first one separates the name
    folder.mkdir()
    model = _save(folder / "teacher.pth")
    calls = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return create(*args, **kwargs)

    create = factory.create_model
    monkeypatch.setattr(factory, "create_model", spy)
    teacher = build_teacher(f"fh_colornet @ {folder / 'teacher.pth'} ", ST2, Student(img_size=16))
    assert teacher.sources == [f"fh_colornet @ {folder / 'teacher.pth'}"]
    _assert_same_weights(teacher.members[0], model)
    assert teacher.members[0].input_config["img_size"] == 16
    # untrained architecture, any size (a teacher may be big), no rules, no trial forward pass
    assert calls == [((ST2, "fh_colornet"), dict(pretrained=False, img_size=16, size_budget=False,
                                                 enforce_rules=False, check_size=False))]  # fmt: skip
    # without a student: the default 224 px
    assert build_teacher(f"fh_colornet@{folder / 'teacher.pth'}", ST2).members[0].input_config["img_size"] == 224


def test_a_teacher_over_the_task_s_size_budget_still_loads(tmp_path):
    from dataclasses import replace

    tiny_budget = replace(ST2, rules=replace(ST2.rules, size_budget_mb=1e-6))
    _save(tmp_path / "teacher.pth")
    assert len(build_teacher(f"fh_colornet@{tmp_path / 'teacher.pth'}", tiny_budget).members) == 1


def test_weights_files_may_be_a_state_dict_a_checkpoint_or_safetensors(tmp_path):
    model = _save(tmp_path / "plain.pth")
    other = factory.create_model("st2", "fh_colornet", img_size=16, check_size=False)
    # a checkpoint: its EMA weights when there are any, else its model weights
    torch.save({"model": other.state_dict(), "ema": model.state_dict()}, tmp_path / "ema.pt")
    torch.save({"model": model.state_dict(), "ema": None, "epoch": 3}, tmp_path / "no-ema.pt")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    for name in ("plain.pth", "ema.pt", "no-ema.pt", "w.safetensors"):
        teacher = build_teacher(f"fh_colornet@{tmp_path / name}", ST2)
        _assert_same_weights(teacher.members[0], model)


def test_weights_are_read_on_the_cpu_and_as_tensors_only(tmp_path, monkeypatch):
    _save(tmp_path / "w.pth")
    seen = []
    load = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    build_teacher(f"fh_colornet@{tmp_path / 'w.pth'}", ST2)
    assert seen == [{"map_location": "cpu", "weights_only": True}]  # a GPU-saved file loads on a CPU machine
    monkeypatch.undo()
    # a pickle of anything but tensors and plain containers is refused, not run
    torch.save({"model": datetime.date(2024, 1, 1)}, tmp_path / "odd.pt")
    with pytest.raises(pickle.UnpicklingError, match=re.escape("Weights only load failed")):
        build_teacher(f"fh_colornet@{tmp_path / 'odd.pt'}", ST2)
