"""The package's layers: no import circle between modules, and no import from a lower layer to a higher one.

Every import counts, at module level and inside functions (``tests/import_graph.py`` reads them with ``ast``).
The layers, from the bottom up (a module may import its own package and anything below its layer):

0. core: ``fh_utils`` itself, ``config``, ``io``, ``paths``, ``tasks``, ``runs``, ``_lazy`` (which import each
   other, in no circle)
1. ``data``: reading, validating, decoding, the datasets and loaders
2. ``scoring`` and ``models`` (side by side: neither imports the other)
3. ``training``: the engine, its configuration, metrics, TTA
4. ``inference``: prediction, and what the packaged submission runs
5. ``ledger``: the record of packaged submissions
6. ``prep``: offline data preparation (demo rendering, background removal)
7. ``leaderboard``: the upload (client rule, archive, ``task.ipynb``, packaging, dry run)
8. ``runner``: the headless notebook runner and the demo pipeline (which runs a dry run)
9. ``sweeps``: many runs of a notebook as one study (its worker runs notebooks)
10. ``workbook``: what the notebooks call (the training steps take ``sweeps.trial``'s callbacks)
11. ``__main__``: the command line over all of it
"""

from __future__ import annotations

from import_graph import closure, cycles, graph

LAYERS = (
    ("fh_utils", "config", "io", "paths", "tasks", "runs", "_lazy"),
    ("data",),
    ("scoring", "models"),
    ("training",),
    ("inference",),
    ("ledger",),
    ("prep",),
    ("leaderboard",),
    ("runner",),
    ("sweeps",),
    ("workbook",),
    ("__main__",),
)
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def room(module: str) -> str:
    """``fh_utils.data.reader`` -> ``data``; ``fh_utils`` -> ``fh_utils``: the top-level module or package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_arrows(edges: dict[str, set[str]]) -> list[str]:
    """Every import from a module to one of a higher layer, or to another package of its own layer (but core)."""
    found = []
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            a, b = room(module), room(target)
            if a != b and (RANK[a] < RANK[b] or RANK[a] == RANK[b] > 0):
                found.append(f"{module} ({a}, layer {RANK[a]}) -> {target} ({b}, layer {RANK[b]})")
    return found


def test_every_module_has_a_layer():
    unknown = sorted({room(m) for m in graph()} - set(RANK))
    assert not unknown, f"add {unknown} to a layer of LAYERS"


def test_no_import_circle():
    assert cycles(graph()) == []


def test_no_import_runs_up_a_layer():
    assert upward_arrows(graph()) == []


def test_scoring_imports_only_core_and_data():
    edges = graph()
    allowed = {*LAYERS[0], "data", "scoring"}
    outside = sorted(f"{m} -> {t}" for m, ts in edges.items() if room(m) == "scoring" for t in ts
                     if room(t) not in allowed)  # fmt: skip
    assert outside == []


def test_the_training_steps_reach_the_sweeps_through_the_trial_module_alone():
    edges = graph()
    sweeps = sorted({t for m, ts in edges.items() if room(m) in ("training", "workbook") for t in ts
                     if room(t) == "sweeps" and not m.startswith("fh_utils.workbook.compare")})  # fmt: skip
    assert sweeps == ["fh_utils.sweeps.trial"]
    # What importing it (and calling its callbacks) runs: the package's lazy face, the study's storage, core.
    loaded = closure("fh_utils.sweeps.trial", graph(runtime_only=True))
    above = sorted(m for m in loaded if RANK[room(m)] > RANK["training"])
    assert above == ["fh_utils.sweeps", "fh_utils.sweeps.study", "fh_utils.sweeps.trial"]


def test_the_checks_see_a_circle_and_an_upward_import():
    edges = {"fh_utils.data.a": {"fh_utils.training.b"}, "fh_utils.training.b": {"fh_utils.data.a"}}
    assert cycles(edges) == [["fh_utils.data.a", "fh_utils.training.b"]]
    assert upward_arrows(edges) == ["fh_utils.data.a (data, layer 1) -> fh_utils.training.b (training, layer 3)"]
    assert upward_arrows({"fh_utils.models.x": {"fh_utils.scoring.y"}}) != []  # side by side: no arrow either way
