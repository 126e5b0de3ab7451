import io

import pytest

from compression.archive import ArchiveLimits, InvalidUpload
from compression.archive.jsonl import manifest_splits, read_jsonl
from compression.inspect import inspect_dataset


def _read(text: str, **kwargs):
    return read_jsonl(io.BytesIO(text.encode()), **kwargs)


def test_rows_are_grouped_by_split_with_label_ranges():
    splits = _read('{"split": "train", "text": "a b", "label": 2}\n\n{"split": "train", "text": "c", "label": 0}\n'
                   '{"split": "val", "text": "d e f"}\n', keep_text=True)
    assert splits["train"].texts == ["a b", "c"] and splits["val"].texts == ["d e f"]
    described, label_range = manifest_splits(splits)
    assert described["train"]["text"]["shape"] == [2] and "y" in described["train"] and "y" not in described["val"]
    assert label_range == {"train": [0, 2]}
    manifest = inspect_dataset(io.BytesIO(b'{"split": "val", "text": "x"}'))
    assert manifest.format == "jsonl" and manifest.splits["val"]["text"]["shape"] == [1]


@pytest.mark.parametrize("text, expected", [
    ('{"split": "train", "text": "a", "lable": 1}', "unknown field"),
    ('{"split": "../x", "text": "a"}', "'split' must be a name"),
    ('{"text": "a", "label": 1}', "line 1 has no 'split': every row names the split it belongs to"),
    ('{"split": "train", "text": ""}', "non-empty string"),
    ('{"split": "train", "text": "a", "label": NaN}', "class index .* or the number a regression head predicts"),
    ('{"split": "train", "text": "a", "label": [1, null]}', "an entry of 'label' must be a class index"),
    ('{"split": "train", "text": "a", "label": [1, Infinity]}', "or the number a regression head predicts"),
    ('{"split": "train", "text": "a", "label": "' + "c" * 201 + '"}', "at most 200 characters"),
    ('{"split": "train", "text": "a", "label": 1}\n{"split": "train", "text": "b"}', "mixes rows"),
    ('{"split": "train", "text": "a"', "not valid JSON"),
    ('["train", "a"]', "JSON object"),
    ('\n\n', "holds no rows"),
    # label forms (compression.text_labels): one per file, entries an index or a name
    ('{"split": "train", "text": "a", "label": 1}\n{"split": "train", "text": "b", "label": "cat"}', "one form"),
    ('{"split": "train", "text": "a", "label": [1]}\n{"split": "val", "text": "b", "label": 1}', "single"),
    ('{"split": "train", "text": "a", "label": ["x", 1]}', "one form"),
    ('{"split": "train", "text": "a", "label": [[1]]}', "an entry of 'label'"),
    ('{"split": "train", "text": "a", "label": ""}', "class name"),
    ('{"split": "train", "text": "a", "label": {"c": 1}}', "class index"),
    ('{"split": "train", "text": "a", "label": [[1]]}', "an entry of 'label'"),
])
def test_bad_rows_are_refused_with_the_line(text, expected):
    with pytest.raises(InvalidUpload, match=expected):
        _read(text)


def test_whole_number_float_labels_bom_and_windows_line_endings_are_read():
    splits = read_jsonl(io.BytesIO(b'\xef\xbb\xbf{"split": "train", "text": "a", "label": 2.0}\r\n'
                                   b'{"split": "train", "text": "b", "label": 0}\r\n\r\n'), keep_text=True)
    assert splits["train"].labels == [2, 0] and all(type(label) is int for label in splits["train"].labels)
    assert splits["train"].texts == ["a", "b"]


def test_lines_are_capped_before_parsing():
    with pytest.raises(InvalidUpload, match="longer than 64 bytes"):
        _read('{"split": "train", "text": "' + "a" * 100 + '"}', limits=ArchiveLimits(max_metadata_bytes=64))
