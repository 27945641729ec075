"""Theory (SPEC §7): can a randomly-signed single-hidden-layer network represent XOR, and the
capacity-speed lemma.  One file per part of the method:

* `reference`: the reference implementation's formula, exactly (fractions), for any input
  dimension, useful-pattern count and requirement (`reference_probability[_exact]`).
* `corners`: the exact goodness-flow decision on the four corners.
* `lp`: the LP cross-checks (activation-pattern enumeration, one LP per choice).
* `squares`: the XOR-5D support, the quadrant squares (`squares_representable`).
* `templates`: one sign template (biases absent, free or sign-constrained) -> the decision
  for its support and method.
* `probability`: network variants (`VARIANTS`), P(H) by exact enumeration over unit-type counts
  or Monte Carlo with a Wilson interval (`exact_probability`), and `minimal_width`.
* `lemma`: Lemma 2.1's exhaustive-search counts with and without a sufficient template.

The derivations are in docs/theory.md.
"""
from .corners import CORNERS
from .lemma import format_lemma, lemma_demo
from .probability import VARIANTS, Variant, exact_probability, get_variant, minimal_width, wilson_interval
from .reference import reference_probability, reference_probability_exact
from .templates import representable
from .squares import squares_representable

__all__ = ["reference_probability", "reference_probability_exact", "representable", "squares_representable",
           "exact_probability", "minimal_width", "lemma_demo", "format_lemma", "Variant", "VARIANTS",
           "get_variant", "wilson_interval", "CORNERS"]
