"""How many DataLoader worker processes a run gets: ``num_workers = -1`` (auto) for this machine and device.

The loader-worker rule of a GPU trial (issue 22): a trial needs as many workers as it takes to serve the crops its
GPU consumes. Both tables are by input side, px. :data:`CACHED_CROPS_PER_S_PER_WORKER`: training crops/s one
worker process serves from the warm decode-once cache with the training augmentation
(benchmarks/loader_throughput.py --scaling). :data:`GPU_TRAIN_IMG_PER_S`: img/s one fit consumes on the GPU, the
recipes' models (fh_colornet at 56 px, eva02_tiny at 224 px, bf16 + channels_last; benchmarks/gpu_sweep.sh). The
loader's are measured (RESULTS.md, issue 22: steady rate of one worker, products_b, the 2-core dev CPU,
2026-12-01); the GPU's are NOT measured yet (no GPU lent so far): estimates from the models' step costs (a small
model's step is bound by kernel launches).
"""

from __future__ import annotations

import math
import os

import torch

CACHED_CROPS_PER_S_PER_WORKER = {56: 1538.0, 112: 1037.0, 224: 568.0}
GPU_TRAIN_IMG_PER_S = {56: 12000.0, 112: 6000.0, 224: 3000.0}
LOADER_HEADROOM = 1.25  # workers for 125 % of the demand: augmentation cost varies, workers start every epoch
MAX_WORKERS = 8


def _by_size(table: dict[int, float], img_size: int) -> float:
    # The figure of the nearest measured side on a log scale (64 px takes 56's, 160 px takes 224's).
    return table[min(table, key=lambda side: abs(math.log(side / max(1, img_size))))]


def workers_to_keep_up(img_per_s: float, crops_per_s_per_worker: float, headroom: float | None = None) -> int:
    """Loader workers that serve ``img_per_s`` training crops a second, at least 1.

    ``headroom`` is the margin over the demand (default :data:`LOADER_HEADROOM`).
    """
    headroom = LOADER_HEADROOM if headroom is None else headroom
    return max(1, math.ceil(headroom * img_per_s / crops_per_s_per_worker))


def resolve_num_workers(num_workers: int, device: torch.device | str = "cpu", cache: bool = True,
                        img_size: int = 224, cores: int | None = None) -> int:  # fmt: skip
    """``-1`` (auto) becomes a worker count for this machine; any other value is kept.

    On 2 cores a worker process competes with the training process (torch slowed ~4x here), so auto gives 0
    there. On the CPU with more cores: half of them (the other half trains), at most 4 with the decode-once cache
    (cheap crops), 8 without. On a GPU the main process needs one core and the workers the rest, as many as keep
    up with the GPU: with the cache :func:`workers_to_keep_up` of :data:`GPU_TRAIN_IMG_PER_S` at
    :data:`CACHED_CROPS_PER_S_PER_WORKER` for ``img_size``, without it (decoding every epoch) all spare cores;
    at most :data:`MAX_WORKERS` either way.

    Args:
        num_workers: The setting; ``-1`` is auto.
        device: The training device.
        cache: Whether crops come from the decode-once cache.
        img_size: Input side, px (the per-worker rate and the GPU's consumption depend on it).
        cores: The cores this run may use (a sweep trial's share, its ``threads``); default: the machine's.
    """
    if num_workers >= 0:
        return int(num_workers)
    cores = cores or os.cpu_count() or 1
    if cores <= 2:
        return 0
    if torch.device(device).type == "cpu":
        return max(0, min(4 if cache else MAX_WORKERS, cores // 2))
    spare = min(MAX_WORKERS, cores - 1)
    if not cache:
        return spare
    demand = _by_size(GPU_TRAIN_IMG_PER_S, img_size)
    return min(spare, workers_to_keep_up(demand, _by_size(CACHED_CROPS_PER_S_PER_WORKER, img_size)))
