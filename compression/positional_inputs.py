"""Programs exported with keyword arguments, called positionally like every other program.

Hugging Face's own export recipe is `torch.export.export(model, args=(), kwargs=dict(inputs))`, so many uploaded
programs take `input_ids=..., attention_mask=...` by name. Their module refuses a positional call ("kwarg
keyword mismatch"), while every stage, evaluation and re-export here calls a model with its inputs in order. The
flat inputs of such a program are already in one order (positional arguments, then keyword arguments in the
order they were exported), the order of its placeholders and of the upload's signature, so only its calling
convention changes: the module takes the same tensors positionally, in that order. The artifacts of its jobs are
exported from such calls, so they too take their inputs positionally (torch's modules of positional programs
refuse keyword calls).
"""

from __future__ import annotations

import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, TensorArgument


def make_inputs_positional(program: ExportedProgram) -> ExportedProgram:
    """`program`, changed in place to take its tensor inputs positionally when it was exported with some as
    keyword arguments. Programs with nested inputs (a dict or list argument) or non-tensor inputs stay as they
    are."""
    spec = program.call_spec.in_spec
    if spec is None or spec.num_children != 2:
        return program
    args_spec, kwargs_spec = spec.children()
    if kwargs_spec.num_children == 0:
        return program
    if not all(child.is_leaf() for child in (*args_spec.children(), *kwargs_spec.children())):
        return program
    user_inputs = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    if not all(isinstance(s.arg, TensorArgument) for s in user_inputs):
        return program
    count = args_spec.num_children + kwargs_spec.num_children
    _, positional = pytree.tree_flatten((tuple(range(count)), {}))
    examples = program.example_inputs
    program.example_inputs = None  # checked against the calling convention when set
    program.module_call_graph[0].signature.in_spec = positional
    if examples is not None:
        args, kwargs = examples
        program.example_inputs = (tuple(args) + tuple(kwargs[name] for name in kwargs_spec.context), {})
    return program
