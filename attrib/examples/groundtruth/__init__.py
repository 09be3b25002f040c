"""Data only: ground truths shipped for the demo (package data, so wheels include them)."""
