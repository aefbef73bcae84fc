"""A sweep's description (``sweeps/*.yaml``): which notebook, fixed parameters, and a grid or a search space.

```yaml
name: st2-seeds          # the study and the run folder outputs/runs/<name>/ (default: the file's stem)
notebook: 04_train_st2.ipynb   # in notebooks/ (or a path)
fixed: {epochs: 12}      # parameters every trial gets
grid:                    # every combination, once (exclusive with search)
  seed: [0, 1, 2, 3, 4]
# search:                # or a search space for Optuna's sampler, with n_trials
#   lr: {low: 3.0e-4, high: 1.0e-2, log: true}    # float (int when low and high are ints; step optional)
#   img_size: {choices: [40, 56, 72]}              # categorical
# n_trials: 20
sampler: tpe             # search only: tpe or random
pruner: none             # none, or median (stops a trial whose epoch score is below the median of earlier ones)
direction: maximize
seed: 0                  # seed of the sampler (worker i uses seed + i)
```
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fh_utils.paths import notebooks_dir
from fh_utils.runner.notebooks import check_parameters

SAMPLERS = ("tpe", "random")
PRUNERS = ("none", "median")
# Set by the sweep for every trial: a spec that sets them would be overwritten.
RESERVED = ("run_name", "resume")


@dataclass
class SweepSpec:
    """A parsed, validated sweep description (see the module docstring for the YAML)."""

    name: str
    notebook: str
    fixed: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    search: dict[str, dict] = field(default_factory=dict)
    n_trials: int = 0
    sampler: str = "tpe"
    pruner: str = "none"
    direction: str = "maximize"
    seed: int = 0

    @property
    def notebook_path(self) -> Path:
        """The notebook file (a bare name is looked up in ``notebooks/``)."""
        path = Path(self.notebook)
        if path.is_absolute():
            return path
        folder = notebooks_dir()
        return folder / path if (folder / path).exists() else path.resolve()

    @property
    def swept(self) -> list[str]:
        """Names of the parameters that vary between trials."""
        return list(self.grid or self.search)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid, in a fixed order (the first name varies slowest)."""
        names = list(self.grid)
        return [dict(zip(names, values)) for values in itertools.product(*(self.grid[n] for n in names))]

    @property
    def total_trials(self) -> int:
        """Trials the sweep runs: the grid's size, or ``n_trials``."""
        return len(self.grid_points()) if self.grid else self.n_trials

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-safe) for the study's record and the workers."""
        return asdict(self)


def _validate(spec: SweepSpec) -> SweepSpec:
    if bool(spec.grid) == bool(spec.search):
        raise ValueError(f"sweep {spec.name!r}: give exactly one of 'grid' or 'search'")
    if spec.search and spec.n_trials < 1:
        raise ValueError(f"sweep {spec.name!r}: a search needs n_trials >= 1")
    if spec.sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {spec.sampler!r}")
    if spec.pruner not in PRUNERS:
        raise ValueError(f"pruner must be one of {PRUNERS}, got {spec.pruner!r}")
    if spec.direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {spec.direction!r}")
    for name, values in spec.grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"grid {name!r}: give a non-empty list of values")
    for name, space in spec.search.items():
        if not isinstance(space, dict) or not ("choices" in space or {"low", "high"} <= set(space)):
            raise ValueError(f"search {name!r}: give {{choices: [...]}} or {{low: .., high: .., log: .., step: ..}}")
    names = [*spec.fixed, *spec.swept]
    taken = sorted(set(names) & set(RESERVED))
    if taken:
        raise ValueError(f"sweep {spec.name!r}: {taken} are set by the sweep for each trial")
    both = sorted(set(spec.fixed) & set(spec.swept))
    if both:
        raise ValueError(f"sweep {spec.name!r}: {both} both fixed and swept")
    check_parameters(spec.notebook_path, {n: None for n in names})
    return spec


def load_spec(source: str | Path | dict | SweepSpec, **fixed: Any) -> SweepSpec:
    """Read and validate a sweep spec (a YAML file, a dict or a spec); ``fixed`` adds or overrides fixed values.

    Raises:
        ValueError: An unknown key, a grid and a search (or neither), a parameter the notebook does not declare.
    """
    if isinstance(source, SweepSpec):
        values = source.to_dict()
    elif isinstance(source, dict):
        values = dict(source)
    else:
        path = Path(source)
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        values.setdefault("name", path.stem)
    known = set(SweepSpec.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown sweep key(s) {unknown}; known: {sorted(known)}")
    if "notebook" not in values or "name" not in values:
        raise ValueError("a sweep spec needs 'name' and 'notebook'")
    values["fixed"] = {**(values.get("fixed") or {}), **fixed}
    for key in ("grid", "search"):
        values[key] = values.get(key) or {}
    spec = SweepSpec(**values)
    json.dumps(spec.to_dict())  # the spec travels to the workers as JSON: fail here, not in a worker
    return _validate(spec)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"name=value"`` (value read as YAML: ``epochs=1`` is an int) as ``(name, value)``."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(f"expected name=value, got {text!r}")
    return name.strip(), yaml.safe_load(value)
