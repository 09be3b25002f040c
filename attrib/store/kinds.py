"""What a store holds, read from its settings: gradient features (the default), the outputs
of perturbed copies (`attrib perturb`) or the model's pooled hidden states (`featurize
--method repsim`), so every layer can tell them apart."""

from __future__ import annotations

# The projection kinds recorded by stores that hold no projected gradients.
PERTURBED = "perturbed"
REPRESENTATION = "representation"


def _kind(store) -> str | None:
    return (store.settings.get("projection") or {}).get("kind")


def is_perturbed(store) -> bool:
    return _kind(store) == PERTURBED


def is_representation(store) -> bool:
    return _kind(store) == REPRESENTATION
