"""The Method interface: what a method needs, and how it scores.

Every method scores as  tau(q, n) = finalize( u(q) . phi(n) * s(n) )  where
- u(q) = `query_vectors`: the query's features, optionally weighted per group (weights act on
  the query side only, METHODS.md section 4), then through the method's kernel;
- phi(n) = the stored training features, streamed shard by shard;
- s(n) = `train_scale`: a per-example factor (TRAK's out-to-loss factor Q_n, cosine's 1/|phi|).
Kernels are symmetric, so applying them to the (few) queries instead of the (many) training
examples gives the same scores at a fraction of the cost.

A method declares what it needs in one frozen record (`requires`: the output functions,
Kronecker factors, the kind of store it scores; requirements.py) and names its preconditioner
(the damped inverse-Hessian approximation, preconditioners.py), so no other module keeps a
list of methods. A new method is one class, registered in `attrib.methods`.

torch is imported inside functions: the registry is read by the CLI at start-up.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from attrib.errors import AttribError
from attrib.methods.preconditioners import PRECONDITIONERS, Preconditioner
from attrib.methods.requirements import Requirements
from attrib.store.kinds import GRADIENTS, PERTURBED, REPRESENTATION

if TYPE_CHECKING:
    import torch

    from attrib.store import Store

# Relative damping: lambda = c * mean diag of the kernel's Gram matrix. Defaults per method
# were chosen on the validation queries of the digits and pydoc benchmark tasks (docs/quality.md).
DEFAULT_DAMPING = 0.1
# Every concrete method class, in definition order: base.py names them in its messages
# without importing the package that registers them (which imports base.py).
DEFINED: list[type[Method]] = []


class Method(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    requires: ClassVar[Requirements] = Requirements()
    # The damped inverse-Hessian approximation applied to the query side (preconditioners.py),
    # or None for a method without curvature or damping.
    preconditioner: ClassVar[str | None] = None
    default_damping: ClassVar[float] = DEFAULT_DAMPING
    # The damping of the exact stage of `score --rescore` (full-space eigenbases, solves)
    # when --lambda is not given; None: default_damping. Full space has many more small
    # eigenvalues than a projection keeps, so damping relative to their mean wants more.
    default_exact_damping: ClassVar[float | None] = None
    linear: ClassVar[bool] = True  # score linear in the query features
    # A kernel fit to the training features' own second moments (TRAK's Gram, EK-FAC's
    # corrected eigenvalues) already puts every group on the scale the influence needs;
    # learn-weights then starts from (and is pulled toward) the method's own weighting.
    calibrated: ClassVar[bool] = False
    # The score is a sum of per-module terms without a per-example factor, so on an ensemble
    # store (`attrib ensemble`) it is exactly the sum of the members' scores.
    ensembles: ClassVar[bool] = False
    # train_scale reads the features themselves (a norm, a leverage), not only scalar
    # columns: scoring then builds each block's (rows x D) matrix instead of streaming modules.
    scale_reads_features: ClassVar[bool] = False
    # Scores divided by 1 - leverage (`--rif`, methods/rif.py).
    rif: ClassVar[bool] = False
    # LDS keeps rising with the projection's size (K-FAC's family; TRAK's does not), so
    # featurize's default store for it is larger (featurize/options.py, docs/quality.md).
    gains_from_projection: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if cls.preconditioner is not None:
            needs = PRECONDITIONERS[cls.preconditioner].factors
            if needs != cls.requires.factors:  # said at import: featurize reads `requires`
                raise TypeError(f"{cls.__name__}: requires.factors must be {needs}")
        if "name" in cls.__dict__:
            DEFINED.append(cls)

    def __init__(self, store: Store, damping: float | None = None):
        exact = self.default_exact_damping
        exact = self.default_damping if exact is None else exact
        # `score --rescore`'s exact stage: --lambda when given, else the exact default; a
        # store of exact gradients (--proj-dim full) is scored as that stage would score it.
        self.exact_damping = exact if damping is None else damping
        if damping is None:
            full = store.settings.get("projection", {}).get("kind") == "none"
            damping = exact if full else self.default_damping
        if damping < 0:
            raise AttribError("--lambda must be at least 0")
        self.store, self.damping = store, damping
        self.slices = store.layout.slices
        self._check_store_kind(store)
        missing = [s for s in self.requires.scalars if s not in store.settings.get("scalars", ())]
        if missing:
            raise AttribError(
                f"--method {self.name} reads each row's {missing[0]}, which {store.path} does "
                f"not hold: featurize with --method {self.name} (on a model that defines it)"
            )
        normalized = store.settings.get("projection", {}).get("normalizer") is not None
        if self.requires.optimizer_state and not normalized:
            raise AttribError(
                f"--method {self.name} needs gradients divided by the optimizer's second "
                f"moments, and {store.path} was featurized without them: featurize with "
                f"--method {self.name} --optimizer-state CHECKPOINT"
            )
        kind = PRECONDITIONERS.get(self.preconditioner)
        self.kernel: Preconditioner | None = kind(store, damping) if kind else None
        if self.requires.factors and not store.settings.get("factors"):
            # Said before any work (a cached kernel, the queries' model) rather than after it.
            raise AttribError(
                f"--method {self.name} needs Kronecker factors, which {store.path} was not "
                f"featurized with; featurize with --method {self.name} (or pick another method)"
            )

    def _check_store_kind(self, store: Store) -> None:
        from attrib.store.ensemble import is_ensemble
        from attrib.store.kinds import is_perturbed, is_representation

        representation = self.requires.store == REPRESENTATION
        perturbed = self.requires.store == PERTURBED
        if representation and not is_representation(store):
            raise AttribError(
                f"--method {self.name} scores the model's hidden states and {store.path} "
                f"holds gradients: featurize with --method {self.name} for it"
            )
        if is_representation(store) and not representation:
            raise AttribError(
                f"{store.path} holds the model's hidden states (featurize --method repsim), "
                "not gradients: use --method repsim, or featurize again for a gradient method"
            )
        if perturbed and not is_perturbed(store):
            raise AttribError(
                f"--method {self.name} scores the outputs of perturbed copies: run `attrib "
                f"perturb --train {store.path} --out COPIES` and score COPIES/train"
            )
        if not store.module_names and not perturbed:
            raise AttribError(
                f"{store.path} holds rows without gradients (featurize --no-gradients): it is "
                "for `attrib perturb`; featurize without --no-gradients to score it"
            )
        if is_perturbed(store) and not perturbed:
            raise AttribError(
                f"{store.path} holds outputs of perturbed copies, not gradients: "
                "use --method daunce or daunce-corr"
            )
        if is_ensemble(store) and not self.ensembles:
            usable = [m.name for m in DEFINED if m.ensembles and m.requires.store == GRADIENTS]
            raise AttribError(
                f"{store.path} is an ensemble store and {self.name} does not add up over its "
                f"members (normalized or squared per model): use --method "
                f"{', '.join(usable[:-1])} or {usable[-1]} on it"
            )

    @property
    def label(self) -> str:
        """The method as result rows name it (`ekfac+rif` under --rif)."""
        return f"{self.name}+rif" if self.rif else self.name

    @classmethod
    def exact_preconditioner(cls) -> str | None:
        """The preconditioner `score --rescore` fits on exact gradients from the checkpoint,
        or None: not rescorable (no exact form, or a factor read off the projected rows)."""
        kind = PRECONDITIONERS.get(cls.preconditioner)
        exact = kind is not None and kind.exact and not cls.scale_reads_features
        return cls.preconditioner if exact else None

    def prepare(self) -> Method:
        """Load or compute what the method needs from the training store (its kernel)."""
        if self.kernel is not None:
            self.kernel.fit()
        return self

    def kernel_bytes(self) -> int:
        """Memory `prepare` and scoring hold for the kernel (its peak when it is computed)."""
        return self.kernel.nbytes() if self.kernel is not None else 0

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        """x through the method's preconditioner (as is without one)."""
        return self.kernel.apply(x) if self.kernel is not None else x

    @abstractmethod
    def query_vectors(self, g: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """(Q x D) query features -> (Q x D) vectors to dot with training features."""

    def train_scale(self, phi: torch.Tensor, scalars: dict) -> torch.Tensor | None:
        """A per-example factor for the training side of one shard (rows x D), or None."""
        return None

    def module_factors(self, scalars: dict) -> list[torch.Tensor | None] | None:
        """Per module, a per-example factor its features are multiplied by before the
        product (what train_features does, module by module), or None for none at all."""
        return None

    def train_features(self, phi: torch.Tensor, scalars: dict) -> torch.Tensor:
        """The training features as the product uses them (TRAK on an ensemble store scales
        each member's columns by that member's out-to-loss factor); default: as stored."""
        return phi

    # -- the factorization learn-weights uses: tau = sum_j w_j q_j . psi_j -----------------
    def query_plain(self, g: torch.Tensor) -> torch.Tensor:
        """The query side before weights and kernel (cosine normalizes, others keep g)."""
        return g

    def train_preconditioned(self, phi: torch.Tensor, scalars: dict) -> torch.Tensor:
        """The training side with the kernel applied: psi(n) = s(n) K phi(n), so that the
        unweighted (linear part of the) score is query_plain(g) . psi(n)."""
        scale = self.train_scale(phi, scalars)
        return phi if scale is None else phi * scale[:, None]

    def finalize(self, scores: torch.Tensor) -> torch.Tensor:
        """A last elementwise step on the scores (a method that is not linear, e.g. DAS)."""
        return scores

    def self_scores(self, phi, scalars, weights: torch.Tensor | None) -> torch.Tensor:
        """tau(n, n) for every example of one shard."""
        scores = (self.query_vectors(phi, weights) * self.train_features(phi, scalars)).sum(1)
        scale = self.train_scale(phi, scalars)
        return self.finalize(scores if scale is None else scores * scale)


def weighted(g: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return g if weights is None else g * weights.to(g.dtype)


def scalar(scalars: dict, name: str) -> torch.Tensor:
    import torch

    return torch.from_numpy(scalars[name]).float()
