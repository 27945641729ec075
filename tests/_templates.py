"""Templates the template tests share (imported by the test modules; not a test module)."""
from __future__ import annotations

import torch

from polarity import Template


def sample_template(meta: dict | None = None) -> Template:
    """Every encoding in one small template: no free entry, a free list, a free mask, empty, scalar."""
    g = torch.Generator().manual_seed(0)
    few = torch.randint(0, 2, (40, 30), generator=g, dtype=torch.int8) * 2 - 1
    few[3, 4] = few[17, 0] = few[39, 29] = 0
    half = torch.randint(-1, 2, (7, 5), generator=g, dtype=torch.int8)
    full = torch.randint(0, 2, (3, 2, 3, 3), generator=g, dtype=torch.int8) * 2 - 1
    return Template({"conv.weight": full, "fc1.weight": few, "fc2.weight": half,
                     "empty.weight": torch.zeros(0, 4), "scalar": torch.tensor(-1)},
                    {"source": "fuzz", "note": "ü", **(meta or {})})


def random_signs(shapes, free: float, seed: int) -> dict[str, torch.Tensor]:
    """±1 signs of the given shapes with a fraction ``free`` of zeros (unconstrained)."""
    g = torch.Generator().manual_seed(seed)
    signs = {}
    for i, shape in enumerate(shapes):
        s = torch.randint(0, 2, shape, generator=g) * 2 - 1
        s[torch.rand(shape, generator=g) < free] = 0
        signs[f"layer{i}.weight"] = s
    return signs
