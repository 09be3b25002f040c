"""Measuring attribution quality: LDS against retrained models, mislabel AUC, tail-patch,
recall@k, and per-group attribution strength."""
