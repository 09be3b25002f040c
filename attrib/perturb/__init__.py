"""Perturbed copies of a checkpoint (Daunce) and the stores of their outputs."""
