"""Programs exported with keyword or constant arguments, called with their tensors in order like every other program.

Hugging Face's own export recipe is `torch.export.export(model, args=(), kwargs=dict(inputs))`, so many uploaded
programs take `input_ids=..., attention_mask=...` by name; others were exported with a flag among their inputs
(`normalize=True`, `return_dict=False`), which export bakes into the graph but still makes the caller pass, with the
same value. Their modules refuse a call with the tensors alone, in order ("kwarg keyword mismatch", or a missing
argument), and that is how every stage, evaluation and re-export here calls a model (the dataset holds the
tensors; the upload's signature lists only them).

The flat inputs of such a program are already in one order (positional arguments, then keyword arguments in the
order they were exported), the order of its placeholders and of the upload's signature, so only its calling
convention changes: the module takes its tensors positionally, in that order, and the constants, which no node
reads, are no longer inputs. The artifacts of its jobs are exported from such calls, so they too take their
tensors positionally (torch's modules of positional programs refuse keyword calls).
"""

from __future__ import annotations

import torch.utils._pytree as pytree
from torch.export import ExportedProgram
from torch.export.graph_signature import ConstantArgument, InputKind, TensorArgument


def make_inputs_positional(program: ExportedProgram) -> ExportedProgram:
    """`program`, changed in place to take only its tensor inputs, positionally, when it was exported with some
    as keyword arguments or with constant arguments. Programs with nested inputs (a dict or list argument),
    symbolic-number inputs or a constant a node reads stay as they are."""
    spec = program.call_spec.in_spec
    if spec is None or spec.num_children != 2:
        return program
    args_spec, kwargs_spec = spec.children()
    leaves = [*args_spec.children(), *kwargs_spec.children()]
    user_inputs = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    if not all(leaf.is_leaf() for leaf in leaves) or len(leaves) != len(user_inputs):
        return program
    if not all(isinstance(s.arg, (TensorArgument, ConstantArgument)) for s in user_inputs):
        return program
    constants = {s.arg.name for s in user_inputs if isinstance(s.arg, ConstantArgument)}
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    if any(name not in placeholders or placeholders[name].users for name in constants):
        return program
    if kwargs_spec.num_children == 0 and not constants:
        return program  # already positional, tensors only

    kept = [index for index, s in enumerate(user_inputs) if isinstance(s.arg, TensorArgument)]
    examples = program.example_inputs
    program.example_inputs = None  # checked against the calling convention when set
    signature = program.module_call_graph[0].signature
    signature.in_spec = pytree.tree_flatten((tuple(range(len(kept))), {}))[1]
    signature.inputs = [argument for argument in signature.inputs if getattr(argument, "name", None) not in constants]
    if signature.forward_arg_names is not None:
        signature.forward_arg_names = [user_inputs[index].arg.name for index in kept]
    if constants:
        program.graph_signature.input_specs[:] = [s for s in program.graph_signature.input_specs
                                                  if not (s.kind == InputKind.USER_INPUT and s.arg.name in constants)]
        for name in constants:
            program.graph.erase_node(placeholders[name])
        program.graph_module.recompile()
    if examples is not None:
        args, kwargs = examples
        flat = [*args, *(kwargs[name] for name in kwargs_spec.context)]
        program.example_inputs = (tuple(flat[index] for index in kept), {})
    return program
