"""What a store holds, read from its settings: gradient features (the default) or the
outputs of perturbed copies (`attrib perturb`), so every layer can tell them apart."""

from __future__ import annotations

PERTURBED = "perturbed"  # the projection kind recorded by a store of perturbed outputs


def is_perturbed(store) -> bool:
    return (store.settings.get("projection") or {}).get("kind") == PERTURBED
