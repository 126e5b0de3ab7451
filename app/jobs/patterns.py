"""Layer-selecting patterns of a stage must match something in the model: a typo would otherwise select nothing
(or nothing more) and the job would run for an hour without doing what was asked."""

from __future__ import annotations

import fnmatch
import re

from compression.specs import StageSpec

SHOWN_LAYERS = 40

# method -> (its pattern fields, what they match): PTQ matches layers, i.e. module paths ('layer1.0.conv2'); the
# others match weight names ('layer1.0.conv2.weight').
PATTERN_FIELDS = {
    "ptq": (("include", "exclude", "layer_bits"), "layer"),
    "quant_noise": (("include", "exclude"), "weight"),
    "ipq": (("include", "exclude", "groups"), "weight"),
    "prune": (("exclude",), "weight"),
    "quantized_distillation": (("skip",), "weight"),
    "differentiable_quantization": (("skip",), "weight"),
}


def checked_layers(stages: list[StageSpec], signature: dict) -> list[str] | None:
    """The layer names a job's patterns select from: a causal-lm folder's checkpoint names for `llm_ptq`, the
    exported program's (`model.` before them) for the other methods; any other model's recorded layers."""
    if "program_layers" in signature and any(stage.method != "llm_ptq" for stage in stages):
        return signature["program_layers"]
    return signature.get("layers")


def pattern_problems(stages: list[StageSpec], layers: list[str] | None) -> list[str]:
    """One problem per pattern field with patterns that match no layer (or weight) of the model. `layers` are the
    module paths that own parameters, from the model's stored signature; signatures stored before it was recorded
    have none, and then nothing is checked here (the worker still refuses unknown names when it runs)."""
    if not layers:
        return []
    problems = []
    for index, stage in enumerate(stages):
        if index and _replaces_model(stages[index - 1]):
            break  # later stages work on a student whose layer names are not known before it is built
        fields, what = PATTERN_FIELDS.get(stage.method, ((), ""))
        names = layers if what == "layer" else [f"{layer}.weight" for layer in layers]
        for field in fields:
            unmatched = [p for p in _patterns(getattr(stage, field))
                         if not any(fnmatch.fnmatchcase(name, p) for name in names)]
            if unmatched:
                problems.append(f"stages.{index}.{field}: {unmatched} match no {what} of the model; its "
                                f"{what}s are {_shown(names)}{_tied_output_hint(unmatched, names)}")
    return problems


def _tied_output_hint(unmatched: list[str], names: list[str]) -> str:
    """Why `lm_head` may be missing: a causal LM whose output layer shares the input embedding's table (GPT-2,
    Llama 3.2, Qwen2.5, Gemma) stores one tensor for both, and the program names that layer after the table."""
    if not any("lm_head" in pattern for pattern in unmatched) or any("lm_head" in name for name in names):
        return ""
    tables = [name for name in names if re.search(r"(embed_tokens|wte|word_embeddings)(\.weight)?$", name)]
    where = f" ({tables[0]})" if len(tables) == 1 else ""
    return ("; this model has no separate lm_head: its output layer shares the input embedding's table (tied "
            f"weights), and the program names that layer after the embedding{where}")


def _replaces_model(stage: StageSpec) -> bool:
    """A distillation stage hands on its student, which is another architecture unless it is the stage's input."""
    student = getattr(stage, "student", None)
    return student is not None and student.kind != "input"


def _patterns(value: list | dict | None) -> list[str]:
    """The patterns of a field: a list, the keys of {pattern: bits}, or lists of lists (iPQ groups)."""
    if not value:
        return []
    return [p for item in value for p in (item if isinstance(item, list) else [item])]


def _shown(names: list[str]) -> str:
    if len(names) <= SHOWN_LAYERS:
        return str(names)
    return f"{names[:SHOWN_LAYERS]} and {len(names) - SHOWN_LAYERS} more"
