"""Training configuration: :class:`TrainConfig`, saved in every run's ``config.json`` and reloadable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fh_utils.config import config_from_dict, config_to_dict
from fh_utils.runs import check_checkpoint_rule

OPTIMIZERS = ("adamw", "adam")
SCHEDULERS = ("cosine_restarts", "warmup_cosine", "none")
LOSSES = ("ce", "logit_adjust")
AMP_MODES = ("auto", "off", "bf16", "fp16")
# Long-tail recipes (issue 31): deferred re-balancing (fh_utils.training.rebalance), batch mixing
# (fh_utils.training.mixing); classifier re-training is crt_epochs (fh_utils.training.crt).
REBALANCE_MODES = ("none", "sampler", "reweight")
MIX_MODES = ("none", "cutmix", "mixup")


@dataclass
class TrainConfig:
    """Everything that defines a training run besides the model and data (saved in ``config.json``).

    Defaults are the seed's recipe (Myungbin, 2nd place): AdamW, CosineAnnealingWarmRestarts(T_0=30,
    T_mult=2), label smoothing 0.1, AMP on GPU. Every field is reachable from notebooks 03/04 under the same
    name, except ``head_weights`` (a dict: API only).

    Attributes:
        epochs: Training epochs.
        lr: Peak learning rate.
        optimizer: ``"adamw"`` or ``"adam"``.
        weight_decay: Decoupled weight decay (none on biases and norms).
        scheduler: ``"cosine_restarts"`` (stepped per fractional epoch), ``"warmup_cosine"`` or ``"none"``.
        t_0: First cycle length of ``cosine_restarts``, epochs.
        t_mult: Cycle growth of ``cosine_restarts``.
        warmup_epochs: Linear warm-up of ``warmup_cosine``, epochs (may be fractional).
        min_lr: Learning-rate floor.
        label_smoothing: Cross-entropy label smoothing.
        head_weights: Loss weight per label column (default 1 each).
        loss: ``"ce"`` or ``"logit_adjust"`` (Menon et al.; needs the training class priors).
        logit_adjust_tau: Strength of the logit adjustment.
        grad_clip: Clip the gradient norm to this value (0: off).
        ema: Keep an exponential moving average of the weights; ``best.pt`` then holds the EMA weights.
        ema_decay: EMA decay per step.
        early_stopping: Stop after this many epochs without improvement (0: off).
        amp: ``"auto"`` (bf16 on CUDA when supported, else fp16), ``"off"``, ``"bf16"`` or ``"fp16"``.
        channels_last: ``"auto"`` (on CUDA), True or False.
        compile: ``torch.compile`` the training step's model.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
        threads: torch CPU threads (0: the cores the data workers leave free).
        seed: Seed of everything random in an epoch (re-seeded from ``(seed, epoch)``).
        distill_alpha: Weight of the teacher's soft term when ``fit`` is given a teacher (0..1).
        distill_temperature: Softmax temperature of the distillation term.
        keep_epochs: The weights of the last this many epochs are kept in ``checkpoints/`` (weight averaging
            reads them; 0: none).
        checkpoint: The rule that chooses what the run submits (:data:`fh_utils.runs.TRAINING_RULES`):
            ``"best"`` (the best val epoch, ``best.pt``), ``"last"`` (the last epoch, ``final.pt``) or ``"avg"``
            (the mean of the last ``keep_epochs`` epochs' weights with batch-norm statistics recomputed on the
            training data as the last epoch drew it (DRS: balanced), ``averaged.pt``). Notebook 05 and ``package``
            take it; the honest estimate follows it. cRT's ``crt.pt`` (``crt_epochs``) starts from this checkpoint
            and is submitted by asking for rule ``"crt"`` there.
        rebalance: Deferred re-balancing (Cao et al., 2019): plain sampling until ``rebalance_epoch``, then
            ``"sampler"`` (DRS: the class-balanced sampler of ``DataConfig.sampler_head``) or ``"reweight"``
            (DRW: every head's loss weighted by class-balanced effective-number weights, Cui et al. 2019, beta
            ``drw_beta``); ``"none"``: off. The train loader must not be balanced already.
        drw_beta: DRW's effective-number beta: a class of n photos weighs ``(1 - beta) / (1 - beta ** n)``.
            0.9999 (Cao et al.) weighs about 1/n up to thousands of photos; a smaller beta caps the spread of
            the weights near ``1 / (1 - beta)`` photos (0.99: classes over ~100 photos weigh alike).
        rebalance_epoch: First re-balanced epoch, 1-based as in ``history.csv``; 0: the last fifth of the run
            (``epochs * 4 // 5 + 1``, e.g. 10 of 12; Cao et al. switch at 160 of 200).
        crt_epochs: Classifier re-training (cRT, Kang et al., 2020) after training: the heads re-initialised
            and trained this many epochs on the frozen backbone with class-balanced batches; saved as ``crt.pt``
            and scored on val (``metrics.json`` ``"crt"``, ``val_crt.npz``). 0: off.
        mix: Batch mixing: ``"cutmix"`` (a box of another image pasted in: no pixel is a blend of two colours),
            ``"mixup"`` (whole images blended; for comparison) or ``"none"``. The loss is
            ``lam * L(y_a) + (1 - lam) * L(y_b)`` (every head, any loss).
        mix_prob: Probability that a batch is mixed.
        mix_alpha: Beta(alpha, alpha) distribution of the mixing weight.
    """

    epochs: int = 30
    lr: float = 1e-4
    optimizer: str = "adamw"
    weight_decay: float = 0.05
    scheduler: str = "cosine_restarts"
    t_0: int = 30
    t_mult: int = 2
    warmup_epochs: float = 1.0
    min_lr: float = 1e-7
    label_smoothing: float = 0.1
    head_weights: dict[str, float] | None = None
    loss: str = "ce"
    logit_adjust_tau: float = 1.0
    grad_clip: float = 0.0
    ema: bool = False
    ema_decay: float = 0.999
    early_stopping: int = 0
    amp: str = "auto"
    channels_last: str | bool = "auto"
    compile: bool = False
    device: str = "auto"
    threads: int = 0
    seed: int = 0
    distill_alpha: float = 0.5
    distill_temperature: float = 4.0
    keep_epochs: int = 5
    checkpoint: str = "best"
    rebalance: str = "none"
    rebalance_epoch: int = 0
    drw_beta: float = 0.9999
    crt_epochs: int = 0
    mix: str = "none"
    mix_prob: float = 0.5
    mix_alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        check_checkpoint_rule(self.checkpoint, training=True)
        if self.checkpoint == "avg" and self.keep_epochs < 1:
            raise ValueError("checkpoint='avg' averages the kept epochs' weights: keep_epochs must be at least 1")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        self._check_recipes()

    def _check_recipes(self) -> None:
        if self.rebalance not in REBALANCE_MODES:
            raise ValueError(f"rebalance must be one of {REBALANCE_MODES}, got {self.rebalance!r}")
        if not 0.0 < self.drw_beta < 1.0:
            raise ValueError(f"drw_beta must be between 0 and 1 (exclusive), got {self.drw_beta}")
        if self.rebalance != "none" and not 0 <= self.rebalance_epoch <= self.epochs:
            raise ValueError(f"rebalance_epoch must be 1..epochs ({self.epochs}) or 0 (the last fifth), "
                             f"got {self.rebalance_epoch}")  # fmt: skip
        if self.crt_epochs < 0:
            raise ValueError(f"crt_epochs must be >= 0, got {self.crt_epochs}")
        if self.mix not in MIX_MODES:
            raise ValueError(f"mix must be one of {MIX_MODES}, got {self.mix!r}")
        if not 0.0 <= self.mix_prob <= 1.0:
            raise ValueError(f"mix_prob must be in [0, 1], got {self.mix_prob}")
        if self.mix_alpha <= 0:
            raise ValueError(f"mix_alpha must be > 0, got {self.mix_alpha}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``config.json``."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict of fields; an unknown key is an error naming the known ones."""
        return config_from_dict(cls, values, "training config")
