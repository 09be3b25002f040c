"""What a store holds: gradient features (the default), the outputs of perturbed copies
(`attrib perturb`) or the model's pooled hidden states (`featurize --method repsim`). Recorded
as the manifest's `kind`; stores written before it was recorded tell it by their projection's
kind. Every layer asks here, so no one else reads the manifest for it."""

from __future__ import annotations

GRADIENTS = "gradients"
PERTURBED = "perturbed"
REPRESENTATION = "representation"
KINDS = (GRADIENTS, REPRESENTATION, PERTURBED)


def store_kind(store) -> str:
    settings = store.settings
    if settings.get("kind") in KINDS:
        return settings["kind"]
    projected = (settings.get("projection") or {}).get("kind")
    return projected if projected in (PERTURBED, REPRESENTATION) else GRADIENTS


def is_perturbed(store) -> bool:
    return store_kind(store) == PERTURBED


def is_representation(store) -> bool:
    return store_kind(store) == REPRESENTATION
