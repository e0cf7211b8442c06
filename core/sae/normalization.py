"""A dictionary's normalization: how raw activations become what its encoder reads (on the way in)
and how its reconstruction goes back to raw activations (on the way out).

Every dictionary holds exactly one, `sae.normalization`:

- `Scaling` (trained here): inputs times a constant `input_scale`, the reconstruction divided by
  `output_scale` (a transcoder's out-hook has its own; an SAE's output is its input, so it has one
  constant for both). `SAEConfig.normalize_activations = "expected_average_only_in"` sets them from
  data; `SparseAutoencoder.save` folds them into the weights, so a saved dictionary has scales 1.
- `TokenStandardization` (SAELens's `normalize_activations: layer_norm`, OpenAI's GPT-2 SAEs): each
  token standardized before encoding — less its mean over d_in, divided by its standard deviation +
  `eps` — and the reconstruction un-standardized with the same token's statistics.
- `ResidualCentering` (SAEs of a TransformerLens model with centered writing weights, such as
  SAELens's gpt2-small-res-jb): the centering projection is folded into the encoder by the importer
  (`core.sae.saelens`), so inputs pass unchanged and the reconstruction adds the input's mean back.

The last two come only from the readers of other libraries' folders and are for inference: they
cannot be folded into weights, and training refuses them (`trainable`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

LAYER_NORM_EPS = 1e-5
"""What `TokenStandardization` adds to each token's standard deviation before dividing by it (SAELens's)."""


class Normalization(nn.Module):
    """The one way in and out of a dictionary's space (see the module docstring)."""

    kind: str = ""
    """How config.json names it (the flag that marks it, for the imported ones)."""
    trainable: bool = True
    """Whether a dictionary with it can be trained here."""
    needs_input_to_restore: bool = False
    """Whether `restore` needs the raw input activations (their per-token statistics)."""

    def normalize_input(self, x: Tensor) -> Tensor:
        """Raw in-hook activations [..., d_in] -> what the encoder (and a skip path) reads."""
        return x

    def normalize_target(self, y: Tensor) -> Tensor:
        """Raw out-hook activations [..., d_out] -> the space the decoder writes in (a training target)."""
        return y

    def restore(self, y: Tensor, x: Tensor | None) -> Tensor:
        """A reconstruction in the decoder's space [..., d_out] -> raw out-hook activations; `x`: the raw
        in-hook activations of the same tokens, or None where they are not given."""
        return y

    def scales(self) -> tuple[float, float]:
        """(input scale, output scale) folded into the weights at save (1, 1 where none applies)."""
        return 1.0, 1.0


class Scaling(Normalization):
    """Inputs times `input_scale`, outputs divided by `output_scale` (for an SAE, one constant: `tied`)."""

    kind = "scaling"

    def __init__(self, *, tied: bool, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        self.tied = tied
        self.register_buffer("input_scale", torch.tensor(1.0, device=device, dtype=dtype))
        if not tied:
            self.register_buffer("output_scale", torch.tensor(1.0, device=device, dtype=dtype))

    def _output_scale(self) -> Tensor:
        return self.input_scale if self.tied else self.output_scale

    @torch.no_grad()
    def set_scales(self, input_scale: float, output_scale: float | None = None) -> None:
        """Set the constants (the buffers keep their device and dtype). A tied scaling has one: an
        output scale other than the input's is refused."""
        if self.tied and output_scale is not None and float(output_scale) != float(input_scale):
            raise ValueError(f"an SAE has one normalization constant (its output is its input): got input scale "
                             f"{float(input_scale)} and output scale {float(output_scale)}.")
        self.input_scale.fill_(float(input_scale))
        if not self.tied and output_scale is not None:
            self.output_scale.fill_(float(output_scale))

    def normalize_input(self, x: Tensor) -> Tensor:
        return x * self.input_scale

    def normalize_target(self, y: Tensor) -> Tensor:
        return y * self._output_scale()

    def restore(self, y: Tensor, x: Tensor | None) -> Tensor:
        return y / self._output_scale()

    def scales(self) -> tuple[float, float]:
        return float(self.input_scale), float(self._output_scale())

    def extra_repr(self) -> str:
        return f"input_scale={float(self.input_scale):.4g}" + ("" if self.tied else
                                                                f", output_scale={float(self.output_scale):.4g}")


class TokenStandardization(Normalization):
    """SAELens's `layer_norm`: each token standardized on the way in, un-standardized on the way out."""

    kind = "input_layer_norm"
    trainable = False
    needs_input_to_restore = True

    def __init__(self, eps: float = LAYER_NORM_EPS):
        super().__init__()
        self.eps = eps

    @staticmethod
    def statistics(x: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, standard deviation) over the last dimension of each token of raw `x`."""
        mean = x.mean(-1, keepdim=True)
        return mean, (x - mean).std(-1, keepdim=True)

    def normalize_input(self, x: Tensor) -> Tensor:
        mean, std = self.statistics(x)
        return (x - mean) / (std + self.eps)

    def restore(self, y: Tensor, x: Tensor | None) -> Tensor:
        if x is None:
            raise ValueError("this dictionary standardizes each token (SAELens's layer_norm), so decode needs the "
                             "activations too: decode(feature_acts, x), or call it on x directly (forward).")
        mean, std = self.statistics(x.to(y.dtype))
        return y * std + mean


class ResidualCentering(Normalization):
    """A residual-stream SAE of a model with centered writing weights: the reconstruction adds the
    input's mean over d_model back (the centering of the input is folded into the encoder)."""

    kind = "residual_centering"
    trainable = False

    def restore(self, y: Tensor, x: Tensor | None) -> Tensor:
        return y if x is None else y + x.to(y.dtype).mean(-1, keepdim=True)


IMPORTED_NORMALIZATIONS: dict[str, type[Normalization]] = {
    ResidualCentering.kind: ResidualCentering, TokenStandardization.kind: TokenStandardization}
"""The normalizations only other libraries' dictionaries have, by the config.json flag that marks them."""

__all__ = ["IMPORTED_NORMALIZATIONS", "LAYER_NORM_EPS", "Normalization", "ResidualCentering", "Scaling",
           "TokenStandardization"]
