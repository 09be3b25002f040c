"""Learned parameter-group weights: the artifact, group mappings, and learning them."""

from attrib.weights.artifact import WeightsArtifact, load_weights, save_weights

__all__ = ["WeightsArtifact", "load_weights", "save_weights"]
