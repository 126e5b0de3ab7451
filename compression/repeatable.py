"""A model whose output changes from one run to the next on the same inputs cannot be compressed measurably.

Every metric compares the compressed model's outputs with the upload's on the same rows, and every stage is
judged by how far they moved: a forward pass that draws random numbers (ViT-MAE's random patch masking, which its
`ViTMAEModel` runs at inference too; a variational encoder's sampling) moves them by itself, so each stage would
report a collapse that is only the dice. Found in seconds, before any stage, with what to change.
"""

from __future__ import annotations

import torch

from compression.evaluate import output_tensor
from compression.modes import evaluating

# Below this relative gap two runs count as the same computation (a CPU kernel may sum in another order).
REPEAT_TOLERANCE = 1e-4


def check_repeatable(model: torch.nn.Module, example_inputs: tuple, first_output: torch.Tensor) -> None:
    """Raise ValueError if `model`, run again on `example_inputs`, does not give `first_output` again."""
    with evaluating(model), torch.no_grad():
        second = output_tensor(model(*example_inputs))
    if not first_output.is_floating_point() or not first_output.numel():
        same = torch.equal(first_output, second)
    else:
        scale = float(first_output.detach().float().nan_to_num(posinf=0.0, neginf=0.0).abs().max())
        same = torch.allclose(second.float(), first_output.float(), rtol=0.0,
                              atol=REPEAT_TOLERANCE * max(scale, 1e-12), equal_nan=True)
    if not same:
        raise ValueError("the model's output changes between two runs on the same inputs: its forward draws random "
                         "numbers (e.g. ViT-MAE's random patch masking, a variational encoder's sampling), so no "
                         "stage's fidelity could be measured; export (or configure) it without the randomness, e.g. "
                         "with the noise passed in as an input or a mask ratio of 0 and a fixed patch order")
