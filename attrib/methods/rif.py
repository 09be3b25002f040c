"""Rescaled influence functions (RIF): each training row's influence divided by one minus its
leverage h_n = phi_n^T H^-1 phi_n under the method's own damped kernel, `--rif` on any
method with a kernel.

Removing row n from a ridge regression moves a query's prediction by exactly
g_q^T H^-1 g_n / (1 - h_n) (Sherman-Morrison): plain influence is the first-order term, and
it underestimates the rows the model fits by themselves (large h_n). On a linearized model
the same correction is RIF. TRAK's kernel is a sum over rows (Phi^T Phi + lambda), so h_n is
phi_n K^-1 phi_n; K-FAC's factors are means over rows, so there it is that over the store's
row count. DAS divides by 1 - h_n already.
"""

from __future__ import annotations

from attrib.errors import AttribError
from attrib.methods.base import Method


def with_rif(cls: type[Method]) -> type[Method]:
    """`cls` with every training row's score divided by 1 - h_n."""
    if cls.preconditioner in (None, "identity"):
        raise AttribError(
            f"--rif divides by the leverage under a method's kernel, and {cls.name} has none: "
            "use it with trak, trak-block, kfac, ekfac, dtrak or jtrak"
        )
    if cls.scale_reads_features:
        raise AttribError(
            f"--method {cls.name} scales each row by its own features already (DAS's leverage, "
            "TrackStar's norm): drop --rif"
        )

    class Rescaled(cls):
        summary = f"{cls.summary}; RIF: each row's score over 1 - its leverage"
        scale_reads_features = True
        ensembles = False  # a leverage is one model's
        rif = True

        def _rescale(self, phi):
            return 1.0 / (1.0 - self.kernel.leverage(phi.float())).clamp(min=1e-6)

        def train_scale(self, phi, scalars):
            base = super().train_scale(phi, scalars)
            factor = self._rescale(phi)
            return factor if base is None else base.to(factor.device) * factor

        def train_preconditioned(self, phi, scalars):
            return super().train_preconditioned(phi, scalars) * self._rescale(phi)[:, None]

    Rescaled.__name__ = Rescaled.__qualname__ = f"{cls.__name__}Rif"
    return Rescaled
