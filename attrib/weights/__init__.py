"""Learned parameter-group weights: options, the algorithm, the artifact, group mappings."""
