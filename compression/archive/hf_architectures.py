"""Which `model_type`s the installed `transformers` can build for each task, known without importing it.

Importing `transformers.models.auto` imports torch, which the API never does. The mappings the Auto classes use
are plain literals in `modeling_auto.py` (`MODEL_MAPPING_NAMES` and the per-task ones), so they are read from the
installed package's source with `ast.literal_eval`: the answer follows the installed version, and nothing runs.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import lru_cache
from pathlib import Path

# task -> the mapping of modeling_auto.py whose model types can run it
TASK_MAPPINGS = {"feature-extraction": "MODEL_MAPPING_NAMES",
                 "sequence-classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                 "causal-lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES"}
TASKS = tuple(TASK_MAPPINGS)


@lru_cache
def model_types_by_task() -> dict[str, dict[str, str]]:
    """task -> {model_type: class name}."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        raise RuntimeError("transformers is not installed; Hugging Face folders cannot be checked")
    source = (Path(spec.origin).parent / "models" / "auto" / "modeling_auto.py").read_text()
    wanted = {name: task for task, name in TASK_MAPPINGS.items()}
    found: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and getattr(node.targets[0], "id", None) in wanted and isinstance(node.value, ast.Call):
            pairs = ast.literal_eval(node.value.args[0])
            found[wanted[node.targets[0].id]] = {key: value if isinstance(value, str) else value[0]
                                                 for key, value in pairs}
    missing = set(TASK_MAPPINGS) - set(found)
    if missing:
        raise RuntimeError(f"transformers' modeling_auto.py no longer defines the mappings for {sorted(missing)}")
    return found


def task_of_architecture(architecture: str) -> str | None:
    """The task a checkpoint's `architectures` entry was saved for, by the class-name conventions of
    transformers (`LlamaForCausalLM`, `GPT2LMHeadModel`, `BertForSequenceClassification`, `BertModel`)."""
    tables = model_types_by_task()
    for task in ("causal-lm", "sequence-classification", "feature-extraction"):
        if architecture in tables[task].values():
            return task
    return None
