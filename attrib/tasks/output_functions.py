"""The output functions f(z; theta) whose gradients stores hold and whose changes ground
truths record, as a small type that knows which direction is "better" (a margin rises as the
model gets an example right, a loss falls), so no caller compares names to decide a sign."""

from __future__ import annotations

from dataclasses import dataclass

from attrib.errors import AttribError


@dataclass(frozen=True)
class OutputFunction:
    name: str
    summary: str
    higher_is_better: bool = False

    def helpful(self, change):
        """A change of the output (a number or an array) as help: positive when the output
        moved the better way."""
        return change if self.higher_is_better else -change


OUTPUT_FUNCTIONS = {
    f.name: f
    for f in (
        OutputFunction("loss", "the per-example training loss"),
        OutputFunction("margin", "the correct class's logit margin (TRAK's)", True),
        OutputFunction("square", "the squared norm of the predicted noise (D-TRAK's)"),
        OutputFunction("das", "the mean predicted noise, normalized per pass (DAS's)"),
        OutputFunction("journey", "the loss along a sampling trajectory (Journey-TRAK's)"),
    )
}


def output_function(name: str) -> OutputFunction:
    if name not in OUTPUT_FUNCTIONS:
        raise AttribError(f"unknown output function {name!r}; one of {', '.join(OUTPUT_FUNCTIONS)}")
    return OUTPUT_FUNCTIONS[name]
