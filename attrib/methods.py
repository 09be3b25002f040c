"""Attribution methods, as far as featurization is concerned: which output function's
gradients each method's features are (for tasks that offer that output function; language
models and diffusion always use their loss)."""

METHOD_OUTPUTS: dict[str, str] = {
    "tracin": "loss",
    "cosine": "loss",
    "trak": "margin",
    "trak-block": "margin",
}
