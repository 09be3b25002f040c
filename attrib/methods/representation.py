"""Representation similarity: the baseline without gradients (DATE-LM, bergson's leaderboard).

The cosine of the checkpoint's own pooled hidden states (featurize/representation.py), scored
by the same streaming products as every method, so tables, indexes and reports carry it."""

from __future__ import annotations

from attrib.methods.gradient import Cosine
from attrib.methods.requirements import Requirements
from attrib.store.kinds import REPRESENTATION


class RepSim(Cosine):
    name = "repsim"
    summary = "cosine of the model's own pooled hidden states (a baseline: no gradients)"
    requires = Requirements(store=REPRESENTATION)
