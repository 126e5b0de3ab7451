"""The 'layers' student of a model whose layers share their weights (ALBERT: `num_hidden_groups` layer groups, one in
every released ALBERT, applied in turn `num_hidden_layers` times).

There is no list of layers to keep some of: the student is the same weights applied fewer times, `keep` passes
instead of `num_hidden_layers` (its config's count set, every tensor copied), which saves compute in proportion and
no bytes. Distillation then teaches the shared layer to do in fewer passes what it did in more. A `layers` list
names passes of one layer, which mean nothing apart: refused with what to give instead.
"""

from __future__ import annotations

import copy

from torch import nn

from compression.specs.distill import LayersStudent


def shared_layer_student(teacher: nn.Module, spec: LayersStudent) -> tuple[nn.Module, dict] | None:
    """The student and its description, or None when the teacher's layers do not share weights."""
    config = teacher.config
    groups = getattr(config, "num_hidden_groups", None)
    if not isinstance(groups, int):
        return None
    count = config.num_hidden_layers
    if spec.layers is not None:
        raise ValueError(f"this {config.model_type} model applies its {groups} shared layer group(s) {count} times, "
                         "so its layers are passes of the same weights, not layers to choose among: give 'keep', "
                         "how many passes the student makes")
    if not spec.keep < count or spec.keep % groups:
        raise ValueError(f"a 'layers' student of this {config.model_type} model makes fewer passes of its {groups} "
                         f"shared layer group(s) than its {count}, a multiple of {groups} (each group as often); got "
                         f"keep {spec.keep}")
    fewer = copy.deepcopy(config)
    fewer.num_hidden_layers = spec.keep
    student = type(teacher)(fewer).eval()
    student.load_state_dict(teacher.state_dict(), strict=True)
    layer_groups = next((name for name, module in teacher.named_modules()
                         if isinstance(module, nn.ModuleList) and len(module) == groups), "")
    return student, {"layers": list(range(spec.keep)), "teacher_layers": count, "layer_list": layer_groups,
                     "shared_passes": spec.keep}
