"""The sentence embedding a sentence-transformers folder declares, read from its JSON files only (issue 10).

Such a folder (all-MiniLM-L6-v2: Transformer -> mean Pooling -> Normalize) is a Hugging Face folder plus
`modules.json`, which lists the modules applied in order, and weight-free module folders: `N_Pooling/config.json`
says how token vectors become one sentence vector, `N_Normalize/` divides it by its L2 norm. What the user
actually uses is that pooled vector, so a `feature-extraction` job on such a folder outputs it
(`compression.sentence_pooling`). Nothing of sentence-transformers is imported or run: the configs are parsed as
JSON under the archive caps, and any module or pooling mode not described here is refused at upload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from compression.archive.errors import InvalidUpload

MODULES_FILE = "modules.json"
SETTINGS_FILE = "sentence_bert_config.json"
# Modes the program can compute; sentence-transformers' others (several modes concatenated, weighted mean,
# mean / sqrt(length)) are refused rather than silently computed another way.
POOLING_MODES = ("mean", "cls", "max", "lasttoken")
# Pooling/config.json's booleans (sentence-transformers' own names) -> the mode they select.
_MODE_FLAGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
               "pooling_mode_lasttoken": "lasttoken", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
               "pooling_mode_weightedmean_tokens": "weightedmean"}
MODULE_PATH = re.compile(r"^\d+_(Pooling|Normalize)$")


@dataclass(frozen=True)
class SentenceEmbedding:
    """How the folder's token vectors become its sentence embedding."""

    pooling: str  # one of POOLING_MODES
    normalize: bool  # L2-normalized after pooling
    max_seq_length: int | None = None  # sentence_bert_config.json: sentence-transformers truncates text there
    source: str = MODULES_FILE

    def to_metrics(self) -> dict:
        return {"pooling": self.pooling, "normalize": self.normalize, "from": self.source,
                "max_seq_length": self.max_seq_length}


def sentence_embedding(modules: list | None, documents: dict[str, dict]) -> SentenceEmbedding | None:
    """The embedding `modules` (parsed modules.json) declares, with `documents` holding the parsed module configs
    by archive name (and sentence_bert_config.json when shipped); None for a folder without a Pooling module
    (then the job outputs the transformer's token vectors, as for any folder)."""
    if not modules:
        return None
    classes = []
    for index, entry in enumerate(modules):
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise InvalidUpload(f"{MODULES_FILE} entry {index} needs a 'type' string (as sentence-transformers "
                                "writes it)")
        classes.append(_class_name(entry))
    if classes[0] != "Transformer" or any(name not in ("Pooling", "Normalize") for name in classes[1:]):
        raise InvalidUpload(f"{MODULES_FILE} lists the modules {classes}; modelpress runs a Transformer followed by "
                            "Pooling and optionally Normalize (modules with weights, such as Dense, change what "
                            "the embedding means and are not run): upload the folder without them")
    if classes.count("Pooling") != 1 or classes.count("Normalize") > 1 or \
            ("Normalize" in classes and classes.index("Normalize") < classes.index("Pooling")):
        raise InvalidUpload(f"{MODULES_FILE} lists the modules {classes}; expected one Pooling, then at most one "
                            "Normalize")
    for entry, name in zip(modules, classes):
        # Paths become folders of the compressed upload: only the names the archive accepts, never '..'.
        path = entry.get("path", "")
        expected = "''" if name == "Transformer" else f"a folder named like '1_{name}'"
        allowed = path == "" if name == "Transformer" else \
            isinstance(path, str) and bool(MODULE_PATH.match(path)) and path.endswith(f"_{name}")
        if not allowed:
            raise InvalidUpload(f"{MODULES_FILE} gives the {name} module the path {path!r}; expected {expected}")
    path = modules[classes.index("Pooling")]["path"]
    config = documents.get(f"{path}/config.json")
    if config is None:
        raise InvalidUpload(f"{MODULES_FILE} lists a Pooling module in '{path}', but '{path}/config.json' is not "
                            "in the folder")
    settings = documents.get(SETTINGS_FILE) or {}
    length = settings.get("max_seq_length")
    return SentenceEmbedding(_pooling_mode(config, path), "Normalize" in classes,
                             length if isinstance(length, int) and not isinstance(length, bool) and length > 0
                             else None)


def _class_name(entry: dict) -> str:
    """sentence_transformers.models.Pooling -> Pooling."""
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def _pooling_mode(config: dict, path: str) -> str:
    where = f"'{path}/config.json'"
    if isinstance(config.get("pooling_mode"), str):  # the constructor's argument, when a config carries it
        modes = [config["pooling_mode"].replace("mean_tokens", "mean").replace("cls_token", "cls")
                 .replace("max_tokens", "max")]
    else:
        modes = [mode for flag, mode in _MODE_FLAGS.items() if config.get(flag) is True]
    if len(modes) != 1:
        raise InvalidUpload(f"{where} selects the pooling modes {modes}; exactly one of {list(POOLING_MODES)} is "
                            "supported (several modes concatenated are not)")
    if modes[0] not in POOLING_MODES:
        raise InvalidUpload(f"{where} selects pooling mode '{modes[0]}', which modelpress does not compute; "
                            f"supported: {list(POOLING_MODES)}")
    return modes[0]
