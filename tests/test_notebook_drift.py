"""Notebooks 03 and 04 share every code cell but their task-specific ones: a drift between them fails here."""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
OWN = {"parameters", "task-specific"}  # a cell tagged with one of these may differ between the two


def _shared_code_cells(name: str) -> list[str]:
    cells = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))["cells"]
    return ["".join(c["source"]) for c in cells
            if c["cell_type"] == "code" and not OWN & set(c.get("metadata", {}).get("tags", []))]  # fmt: skip


def test_the_training_notebooks_share_every_code_cell_but_their_task_specific_ones():
    st1, st2 = _shared_code_cells("03_train_st1.ipynb"), _shared_code_cells("04_train_st2.ipynb")
    assert len(st1) == len(st2), f"03 has {len(st1)} shared code cells, 04 has {len(st2)}"
    for i, (a, b) in enumerate(zip(st1, st2)):
        assert a == b, f"shared code cell {i} differs between 03 and 04:\n--- 03\n{a}\n--- 04\n{b}"


def test_only_the_set_up_cell_is_task_specific():
    for name, task in (("03_train_st1.ipynb", "st1"), ("04_train_st2.ipynb", "st2")):
        cells = json.loads((NOTEBOOKS / name).read_text(encoding="utf-8"))["cells"]
        own = ["".join(c["source"]) for c in cells if "task-specific" in c.get("metadata", {}).get("tags", [])]
        assert len(own) == 1 and f'prepare_training("{task}"' in own[0], name
