"""Theory (SPEC §7): can a randomly-signed single-hidden-layer network represent XOR, and the
capacity-speed lemma.

* `reference_probability` / `reference_probability_exact`: the reference implementation's
  formula, exactly (fractions), for any input dimension, useful-pattern count and requirement.
* `representable`: the exact decision for one sign template (corners or the XOR-5D squares;
  biases absent, free or sign-constrained), with an LP cross-check (``method="lp"``).
* `exact_probability`: P(H) for a network variant (`VARIANTS`), enumerated exactly over unit-type
  counts or by Monte Carlo with a Wilson interval.
* `minimal_width`: the smallest width at which free signs / a sufficient template can represent XOR.
* `lemma_demo`: Lemma 2.1's exhaustive-search counts with and without a sufficient template.

The derivations are in the docstrings of `polarity.theory.xor` and `polarity.theory.lemma`.
"""
from .lemma import format_lemma, lemma_demo
from .xor import (CORNERS, VARIANTS, Variant, exact_probability, get_variant, minimal_width,
                  reference_probability, reference_probability_exact, representable,
                  squares_representable, wilson_interval)

__all__ = ["reference_probability", "reference_probability_exact", "representable", "squares_representable",
           "exact_probability", "minimal_width", "lemma_demo", "format_lemma", "Variant", "VARIANTS",
           "get_variant", "wilson_interval", "CORNERS"]
