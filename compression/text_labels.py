"""Labels of a `.jsonl` text dataset (`compression.archive.jsonl`) as the arrays a classifier is trained and scored
with: class indices int64 [N], or for lists of the classes that apply (multi-label) a 0/1 matrix float32 [N, C]
(`compression.labels` reads a float matrix as independent binary targets), or for a regression head (config.json
`problem_type: "regression"`, or a one-label head given values such as 3.8) its values, float32 [N], or [N, K] for
a head with K outputs given lists of K numbers (lists of whole numbers too: a regression head has no classes).

Class names are mapped with the model's own names (config.json `id2label`, index -> name), so a dataset written as
`"label": "positive"` fits the model whose config says `{"1": "POSITIVE"}`: a name matches exactly, or else ignoring
case when that picks one class, or else, written in digits ("1"), it is that class index. The API checks the names
at submission with the names it recorded from the folder; the worker maps them here, with the config it loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compression.archive.errors import InvalidUpload
from compression.archive.hf_folder import MULTI_LABEL_PROBLEM, REGRESSION_PROBLEM, ordered_label_names
from compression.archive.jsonl import MIXED_LISTS, MIXED_LISTS_FIX, TextSplit

_SHOWN = 12  # names quoted in a message
# A multi-label split becomes a dense 0/1 matrix [rows, classes]: lists a few bytes long each could otherwise ask
# for more memory than the worker has (a million rows of a 100,000-class model: 400 GB). 1 GiB of float32.
MAX_LABEL_MATRIX_ENTRIES = 2**28


def name_indices(names: set[str] | list[str], label_names: list[str]) -> tuple[dict[str, int], list[str]]:
    """Each dataset class name's index among the model's `label_names`, and the names that match none. A name
    that is no class's but is a number of a class ("1", as a CSV turned into JSON writes an index) is that
    index."""
    exact = {name: index for index, name in enumerate(label_names)}
    folded: dict[str, list[int]] = {}
    for index, name in enumerate(label_names):
        folded.setdefault(name.casefold(), []).append(index)
    found, unknown = {}, []
    for name in sorted(names):
        if name in exact:
            found[name] = exact[name]
        elif len(folded.get(name.casefold(), [])) == 1:
            found[name] = folded[name.casefold()][0]
        elif name.isascii() and name.isdigit() and int(name) < len(label_names):
            found[name] = int(name)
        else:
            unknown.append(name)
    return found, unknown


def unknown_names_problem(where: str, unknown: list[str], label_names: list[str]) -> str:
    shown = ", ".join(repr(name) for name in unknown[:_SHOWN]) + (" ..." if len(unknown) > _SHOWN else "")
    known = ", ".join(repr(name) for name in label_names[:_SHOWN]) + (" ..." if len(label_names) > _SHOWN else "")
    return (f"{where} names classes the model does not have: {shown}; the model's classes (config.json id2label, "
            f"in index order) are {known}: use these names, or class indices 0..{len(label_names) - 1}")


@dataclass(frozen=True)
class ModelClasses:
    """What a model's labels may be: `count` classes (None: its output is not classes, e.g. embeddings), named
    `names` in index order where its config names them, independent (multi-label) or one per example; or, for a
    `regression` head, the values of its `count` outputs."""

    count: int | None
    names: list[str] | None
    multi_label: bool
    regression: bool = False
    per_token: bool = False  # a token classifier's: a class per token, labelled by word tags

    @classmethod
    def of_config(cls, config, task: str, multi_label: bool = False) -> "ModelClasses":
        """A loaded transformers config's classes; `multi_label`: the job declares the outputs independent."""
        if task == "token-classification":
            return cls(config.num_labels, ordered_label_names(config.id2label, config.num_labels), False,
                       per_token=True)
        if task != "sequence-classification":
            return cls(None, None, multi_label)
        count = config.num_labels
        problem = getattr(config, "problem_type", None)
        return cls(count, ordered_label_names(config.id2label, count), multi_label or problem == MULTI_LABEL_PROBLEM,
                   problem == REGRESSION_PROBLEM)

    @property
    def takes_values(self) -> bool:
        """Whether labels may be values: a regression head's, or a one-label head's (transformers trains a head with
        one label as a regression head)."""
        return self.regression or self.count == 1


def label_problems(where: str, names: list[str], multi_label: bool, index_range: list[int] | None,
                   classes: ModelClasses, flag_width: int | None = None, rows: int = 0,
                   values: bool = False, per_word: bool = False, value_width: int | None = 1,
                   mixed_lists: bool = False) -> list[str]:
    """Why labels of this form (class `names` used, lists or not, the range of the indices, the length of 0/1 flag
    vectors, regression `values`, word tags) do not fit `classes`; the check the API makes from a dataset's
    manifest and the worker from its rows. `value_width`: how many numbers each row gives, read as values (1 for
    single labels, the lists' one length, None for lists of several lengths); `mixed_lists`: lists that only a
    regression head reads (`compression.archive.jsonl.MIXED_LISTS`). `names` are not checked where the model's
    class names are not known."""
    if per_word != classes.per_token:
        return [f"{where} gives 'tags' (a class per word), which label a token classifier's words; this model is "
                "not one (task token-classification): give a 'label' per row" if per_word else
                f"{where} gives each row a 'label', but the model is a token classifier: give each row 'tags', one "
                "class per word of its text (index or name; -100 for a word no tag reads)"]
    if values or classes.regression:
        return _value_problems(where, names, classes, values, value_width)
    if classes.count is None:
        if names or multi_label:
            return [f"{where} gives class {'names' if names else 'lists'}, which need a sequence-classification "
                    "model (whose config.json names its classes); this model's output is not classes"]
        return []
    problems = [f"{where}: {MIXED_LISTS}{MIXED_LISTS_FIX}"] if mixed_lists else []
    if multi_label and rows * classes.count > MAX_LABEL_MATRIX_ENTRIES:
        problems.append(f"{where} has {rows:,} multi-label rows for {classes.count:,} classes: a 0/1 label matrix "
                        f"of {rows * classes.count:,} entries, more than the {MAX_LABEL_MATRIX_ENTRIES:,} a job "
                        "holds; use fewer rows")
    if multi_label and not classes.multi_label:
        problems.append(f"{where} gives each row a list of classes (multi-label), but the model's config.json "
                        f"problem_type is not '{MULTI_LABEL_PROBLEM}'; give one class per row, or set "
                        "evaluation.multi_label to true if the model's outputs are independent labels")
    if names and classes.names is None:
        problems.append(f"{where} labels rows by class name, but the model's config.json does not name its "
                        "classes (id2label); use class indices")
    elif names:
        unknown = name_indices(names, classes.names)[1]
        if unknown:
            problems.append(unknown_names_problem(where, unknown, classes.names))
    if flag_width is not None and flag_width != classes.count:
        problems.append(f"{where} gives each row {flag_width} 0/1 flags, one per class, but the model has "
                        f"{classes.count} classes")
    elif index_range and (index_range[0] < 0 or index_range[1] >= classes.count):
        problems.append(f"{where} has class indices over [{index_range[0]}, {index_range[1]}] but the model has "
                        f"{classes.count} classes (0..{classes.count - 1})")
    return problems


def _value_problems(where: str, names: list[str], classes: ModelClasses, values: bool,
                    value_width: int | None) -> list[str]:
    """Labels of a regression head are numbers: one per row for a head with one output, a list of K per row for a
    head with K; values (numbers that are no class index) need such a head."""
    if classes.count is None:
        return [f"{where} gives values (numbers that are no class index), which a regression head predicts; this "
                "model's output is not a sequence classifier's: use a sequence-classification folder whose "
                "config.json says problem_type 'regression'"]
    if not classes.takes_values:
        return [f"{where} gives values (numbers that are no class index, such as 3.8), but the model is a classifier "
                f"with {classes.count} classes; label each row with a class index 0..{classes.count - 1} or a "
                "class name, or upload a regression head (config.json problem_type 'regression')"]
    if names:
        return [f"{where} gives class names, but the model is a regression head (config.json problem_type "
                "'regression'): label each row with the number it should predict"]
    if value_width != classes.count:
        given = ("lists of several lengths" if value_width is None else "one value per row" if value_width == 1
                 else f"{value_width} values per row")
        wanted = ("the number it should predict" if classes.count == 1
                  else f"a list of the {classes.count} numbers it should predict")
        return [f"{where} gives {given}, but the regression head predicts {classes.count} "
                f"value{'s' if classes.count != 1 else ''}: label each row with {wanted}"]
    return []


def _checked_names(split: str, rows: TextSplit, classes: ModelClasses) -> dict[str, int]:
    """The index of each class name the split's labels use (`name_indices`), once `label_problems` finds nothing
    wrong with them for `classes`; else refused with what to change."""
    problems = label_problems(f"split '{split}'", sorted(rows.names), rows.multi_label, rows.index_range(), classes,
                              rows.flag_width, rows.labelled, rows.values, rows.per_word, rows.value_width(),
                              rows.mixed_lists)
    if problems:
        raise InvalidUpload("; ".join(problems))
    return name_indices(rows.names, classes.names)[0] if rows.names else {}


def word_tags(split: str, rows: TextSplit, classes: ModelClasses) -> list[list[int]]:
    """Each row's word tags as class indices (names mapped with the model's; -100 kept), refused with what to
    change when they do not fit the token classifier's classes."""
    mapping = _checked_names(split, rows, classes)
    return [[mapping[tag] if isinstance(tag, str) else tag for tag in tags] for tags in rows.labels]


def label_array(split: str, rows: TextSplit, classes: ModelClasses) -> np.ndarray:
    """The split's labels: int64 class indices [N], for lists (multi-label) a float32 0/1 matrix [N, classes], or
    a regression head's values float32 [N] ([N, K] for lists of K values). Names are mapped with the model's;
    labels that do not fit it are refused with what to change."""
    mapping = _checked_names(split, rows, classes)
    if rows.values or classes.regression:
        return np.asarray(rows.values_as_read(), np.float32)
    if classes.count is None:  # indices scored against a non-class output, as an .npz's would be
        return np.asarray(rows.labels, np.int64)

    def index(entry: int | str) -> int:
        return mapping[entry] if isinstance(entry, str) else entry

    if not rows.multi_label:
        return np.asarray([index(label) for label in rows.labels], np.int64)
    matrix = np.zeros((len(rows.labels), classes.count), np.float32)
    for row, label in enumerate(rows.labels):
        matrix[row, [index(entry) for entry in label]] = 1.0
    return matrix
