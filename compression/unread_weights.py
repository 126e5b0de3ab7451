"""Weights an exported program carries but never reads, taken out of it.

torch.export lifts every parameter and buffer of the module it traces, read or not. A Hugging Face folder's model
wrapped for its task holds more than the task computes: BERT's pooler under `last_hidden_state`, the next-sentence
head of a `BertForPreTraining` checkpoint run as fill-mask, LUKE's entity table (500,000 rows) and entity head when no
job input names entities. Once dead code is gone, those are placeholders nobody reads; left in, they are stored in
the float program the job starts from and counted in its bytes, so every stage, which drops them when it rewrites
the graph, looked smaller by their size (LUKE's int8 fill-mask program "2,764x smaller"). The folder written for a
stage copies what its program lacks from the upload, so nothing the model file needs is lost.
"""

from __future__ import annotations

from torch.export import ExportedProgram
from torch.export.graph_signature import ExportGraphSignature, InputKind

WEIGHT_KINDS = (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR)


def drop_unread_weights(program: ExportedProgram) -> tuple[ExportedProgram, list[str]]:
    """(the program without the parameters, buffers and constant tensors its graph never reads, their names)."""
    graph = program.graph_module.graph
    placeholders = {node.name: node for node in graph.nodes if node.op == "placeholder"}
    specs = program.graph_signature.input_specs
    unread = [spec for spec in specs if spec.kind in WEIGHT_KINDS and getattr(spec.arg, "name", None) in placeholders
              and not placeholders[spec.arg.name].users]
    # A tied name (a causal LM's word embeddings, which its output layer reads under the other name) stays: its
    # tensor is stored anyway, and the program's names are the folder's.
    read_storage = {_storage(program, spec.target) for spec in specs if spec not in unread}
    unread = [spec for spec in unread if _storage(program, spec.target) not in read_storage]
    if not unread:
        return program, []
    kept = [spec for spec in specs if spec not in unread]
    still_read = {spec.target for spec in kept}
    for spec in unread:
        graph.erase_node(placeholders[spec.arg.name])
    program.graph_module.recompile()
    gone = sorted({spec.target for spec in unread} - still_read)
    signature = ExportGraphSignature(input_specs=kept, output_specs=program.graph_signature.output_specs)
    state_dict = {name: value for name, value in program.state_dict.items() if name not in gone}
    constants = {name: value for name, value in program.constants.items() if name not in gone}
    return program._update(program.graph_module, signature, state_dict=state_dict, constants=constants), gone


def _storage(program: ExportedProgram, target: str | None) -> int | None:
    """The address of the storage behind a lifted weight (None for an input that is no stored tensor)."""
    tensor = program.state_dict.get(target, program.constants.get(target)) if target is not None else None
    return tensor.untyped_storage().data_ptr() if hasattr(tensor, "untyped_storage") else None
