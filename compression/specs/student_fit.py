"""Whether a zoo student can stand in for a model, decided from shapes and dtypes alone (torch-free).

The API refuses a misfit at submission from the uploaded model's signature; the library applies the same rule
to the example inputs before building the student, so a notebook user gets the same message.
"""

from __future__ import annotations

from typing import Literal, Sequence

# The architectures of compression.zoo a student can be built from (a test keeps this in step with the zoo).
ZooArchitecture = Literal["mlp", "small_cnn", "resnet", "tiny_transformer"]
ZOO_ARCHITECTURES: tuple[str, ...] = ZooArchitecture.__args__

# What each architecture takes: (input rank including the batch, floating-point input?, what it is for)
_INPUTS = {
    "mlp": (None, True, "float input of any rank"),
    "small_cnn": (4, True, "images [N, C, H, W] with H == W"),
    "resnet": (4, True, "images [N, C, H, W]"),
    "tiny_transformer": (2, False, "token ids [N, L]"),
}


def zoo_student_problems(architecture: str, inputs: Sequence[tuple[Sequence[int | None], bool]],
                         outputs: Sequence[Sequence[int | None]]) -> list[str]:
    """Why a zoo `architecture` cannot be the student of a model with these inputs ((shape, is_float) each, batch
    first, None for a dynamic dimension) and output shapes; empty when it can."""
    if architecture not in _INPUTS:
        return [f"unknown zoo architecture '{architecture}'; choose one of {list(ZOO_ARCHITECTURES)}"]
    rank, wants_float, takes = _INPUTS[architecture]
    if len(inputs) != 1:
        return [f"zoo students take one input, but the model takes {len(inputs)}; upload a student "
                "(kind 'upload') or derive one from the model (kind 'low_rank')"]
    problems = []
    shape, is_float = inputs[0]
    fits = (rank is None or len(shape) == rank) and is_float == wants_float and None not in shape[1:]
    if architecture == "small_cnn" and fits:
        fits = shape[-1] == shape[-2]
    if not fits:
        fitting = [name for name, (r, f, _) in _INPUTS.items()
                   if (r is None or r == len(shape)) and f == is_float and name != architecture]
        problems.append(f"zoo architecture '{architecture}' takes {takes}, but the model's input is "
                        f"[{', '.join('N' if d is None else str(d) for d in shape)}] "
                        f"{'float' if is_float else 'integer'}"
                        + (f"; architectures that fit: {fitting}" if fitting and None not in shape[1:] else
                           "; upload a student (kind 'upload') or use kind 'low_rank'"))
    if len(outputs) != 1 or len(outputs[0]) != 2 or outputs[0][1] is None:
        problems.append("zoo students give one output [N, outputs], but the model gives "
                        f"{[list(o) for o in outputs]}; upload a student (kind 'upload') or use kind 'low_rank'")
    return problems
