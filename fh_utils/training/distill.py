"""Knowledge distillation: a frozen teacher (one model or an ensemble) and the loss that distils it.

The engine (:func:`fh_utils.training.engine.fit`) runs the teacher online, in eval mode, on the same
augmented batch the student sees. Per head the loss is

    (1 - alpha) * CE(student, labels; label smoothing) + alpha * T**2 * KL(teacher_T || student_T)

where ``_T`` means softmax of logits / T (Hinton et al., 2015; T**2 keeps the gradient scale of the soft term
independent of T). An ensemble teacher averages its members' softened probabilities: only the submitted model
(the student) must be a single network. The teacher is never part of the student's checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fh_utils.tasks import Task

TeacherSpec = str | Path | nn.Module | Sequence[str | Path | nn.Module]
WEIGHTS_SEPARATOR = "@"  # "<timm name>@<weights file>": a teacher from a backbone name and a local state dict


class Teacher(nn.Module):
    """Frozen teacher: one or more task models whose softened probabilities are averaged.

    Args:
        members: Models returning ``{label column: logits}`` for a uint8 batch (e.g. from
            :func:`fh_utils.models.load_model`).
        sources: What each member was loaded from (recorded in ``config.json``).
    """

    def __init__(self, members: Sequence[nn.Module], sources: Sequence[str] = ()):
        super().__init__()
        if not members:
            raise ValueError("a teacher needs at least one model")
        self.members = nn.ModuleList(members)
        self.sources = list(sources) or [type(m).__name__ for m in members]
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        """A teacher stays in eval mode (no dropout, frozen batch-norm statistics) whatever it is told."""
        return super().train(False)

    def probabilities(self, x: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
        """Mean over members of ``softmax(logits / temperature)`` per head, float32."""
        total: dict[str, torch.Tensor] = {}
        for member in self.members:
            out = member(_fit_input(member, x))
            for column, logits in out.items():
                p = (logits.float() / temperature).softmax(1)
                total[column] = total[column] + p if column in total else p
        return {k: v / len(self.members) for k, v in total.items()}

    def describe(self) -> dict[str, Any]:
        """What ``config.json`` records about the teacher (its weights never go into the student's files)."""
        return {"members": self.sources,
                "model_configs": [{k: v for k, v in getattr(m, "model_config", {}).items() if k != "class_names"}
                                  for m in self.members]}  # fmt: skip


def _fit_input(member: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # A member trained at another size sees the student's batch resized to its own (CNNs take any size,
    # ViTs need theirs); the models normalise uint8 or 0..255 float input themselves.
    size = getattr(member, "input_config", {}).get("img_size")
    if size and x.shape[-1] != size:
        return F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def _load_member(spec: str | Path, task: Task, img_size: int | None) -> nn.Module:
    from fh_utils.models.factory import create_model, load_model

    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir() or path.is_file():
        return load_model(path)
    if WEIGHTS_SEPARATOR in text:
        name, weights = (s.strip() for s in text.split(WEIGHTS_SEPARATOR, 1))
        file = Path(weights).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"teacher weights not found: {file}")
        model = create_model(task, name, pretrained=False, img_size=img_size or 224, size_budget=False,
                             enforce_rules=False, check_size=False)  # fmt: skip
        model.load_state_dict(_read_state_dict(file))
        return model
    raise FileNotFoundError(
        f"teacher {text!r} is neither a run folder, a checkpoint file nor '<timm name>{WEIGHTS_SEPARATOR}<weights "
        "file>' (a state dict of a model with this task's heads)"
    )


def _read_state_dict(file: Path) -> dict[str, torch.Tensor]:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    state = torch.load(file, map_location="cpu", weights_only=True)
    return state.get("ema") or state["model"] if isinstance(state, dict) and "model" in state else state


def build_teacher(
    spec: TeacherSpec,
    task: Task,
    student: nn.Module | None = None,
    device: torch.device | str = "cpu",
) -> Teacher:
    """A :class:`Teacher` from run folders, checkpoints, ``"<timm name>@<weights file>"`` or models.

    Args:
        spec: One item or a sequence of them, or a comma-separated string. An item is a run folder (its
            ``best.pt``), a checkpoint file, ``"<timm name>@<file>"`` (a ``.pth``/``.pt``/``.safetensors`` state
            dict of a model with this task's heads, built by :func:`fh_utils.models.create_model`) or a model.
        task: The task the student learns; every member must predict its heads.
        student: The student: its input size and colour spaces are checked against each member's.
        device: Where the teacher runs.

    Returns:
        The teacher, frozen and in eval mode, on ``device``.

    Raises:
        ValueError: A member predicts other heads or classes, or reads other colour spaces, than the student.
    """
    items: list[Any]
    if isinstance(spec, (str, Path)):
        items = [s.strip() for s in str(spec).split(",") if s.strip()]
    elif isinstance(spec, nn.Module):
        items = [spec]
    else:
        items = list(spec)
    student_input = getattr(student, "input_config", {})  # {} for no student too: getattr(None, ...) -> {}
    members, sources = [], []
    for item in items:
        member = item if isinstance(item, nn.Module) else _load_member(item, task, student_input.get("img_size"))
        _check_member(member, task, student_input, str(item) if not isinstance(item, nn.Module) else "a model")
        members.append(member)
        sources.append(str(item) if not isinstance(item, nn.Module) else type(item).__name__)
    return Teacher(members, sources).to(device)


def _check_member(member: nn.Module, task: Task, student_input: dict, name: str) -> None:
    heads = getattr(member, "heads", None)
    if heads is None:
        return  # a bare module: trusted to return the task's heads
    want = {h.column: h.num_classes for h in task.heads}
    got = {k: v.out_features for k, v in heads.items()}
    if got != want:
        raise ValueError(f"teacher {name} predicts {got}, the student's task needs {want}")
    spaces = getattr(member, "input_config", {}).get("color_spaces")
    if student_input and spaces and list(spaces) != list(student_input.get("color_spaces", spaces)):
        raise ValueError(f"teacher {name} reads colour spaces {spaces}, the student {student_input['color_spaces']}")


class DistillationLoss(nn.Module):
    """``(1 - alpha) * hard + alpha * T**2 * KL`` summed over heads with the hard loss's head weights.

    Args:
        hard: The task's hard-label loss (:class:`fh_utils.training.losses.MultiHeadLoss`: label smoothing,
            head weights, optional logit adjustment).
        alpha: Weight of the soft (teacher) term, 0..1.
        temperature: Softmax temperature of both teacher and student in the soft term.
    """

    def __init__(self, hard: nn.Module, alpha: float, temperature: float):
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"distill_alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"distill_temperature must be > 0, got {temperature}")
        self.hard, self.alpha, self.temperature = hard, float(alpha), float(temperature)

    def soft(self, outputs: dict[str, torch.Tensor], teacher_probs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``T**2 * KL(teacher_T || student_T)`` summed over heads (head weights of the hard loss), batch mean."""
        t = self.temperature
        weights = getattr(self.hard, "weights", {})
        total = 0.0
        for column, p_teacher in teacher_probs.items():
            log_student = F.log_softmax(outputs[column].float() / t, dim=1)
            kl = F.kl_div(log_student, p_teacher, reduction="batchmean")
            total = total + weights.get(column, 1.0) * (t * t) * kl
        return total

    def forward(
        self, outputs: dict[str, torch.Tensor], targets: torch.Tensor, teacher_probs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(total, hard term, soft term)``; the terms are unweighted by alpha."""
        hard = self.hard(outputs, targets)
        soft = self.soft(outputs, teacher_probs)
        return (1 - self.alpha) * hard + self.alpha * soft, hard, soft
