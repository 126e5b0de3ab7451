import io

import numpy as np
import pytest

from compression.archive import ArchiveLimits, InvalidUpload
from compression.archive.npz import read_npz
from tests.hostile.corpus import npy_header, read_zip, write_zip


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def test_arrays_round_trip_in_any_layout_and_byte_order():
    arrays = {"train.x": np.asfortranarray(np.arange(24, dtype=">f4").reshape(4, 6)),
              "train.y": np.array([3, 1, 2, 0], dtype=np.uint8), "val.x": np.ones((2, 6), bool)}
    contents = read_npz(io.BytesIO(_npz(**arrays)), keep_arrays=True)
    for key, array in arrays.items():
        np.testing.assert_array_equal(contents.arrays[key], array)
        assert contents.arrays[key].dtype == array.dtype
    assert contents.label_range == {"train": [0, 3]}
    assert contents.splits["train"]["x"] == {"shape": [4, 6], "dtype": ">f4"}


def test_labels_are_scanned_in_chunks_across_chunk_boundaries():
    labels = np.zeros(300_000, np.int64)
    labels[131_071], labels[-1] = 7, -2  # one value straddles a 1 MiB chunk boundary of the member
    contents = read_npz(io.BytesIO(_npz(**{"t.x": np.zeros((300_000, 1), np.uint8), "t.y": labels})))
    assert contents.label_range == {"t": [-2, 7]}


def test_whole_number_float_labels_and_label_columns_are_class_indices():
    arrays = {"t.x": np.zeros((3, 2), np.float32), "t.y": np.array([[2.0], [0.0], [5.0]], np.float32)}
    assert read_npz(io.BytesIO(_npz(**arrays))).label_range == {"t": [0, 5]}
    assert read_npz(io.BytesIO(_npz(**arrays)), keep_arrays=True).label_range == {"t": [0, 5]}
    arrays["t.y"] = np.array([True, False, False])
    assert read_npz(io.BytesIO(_npz(**arrays))).label_range == {"t": [0, 1]}


def test_nan_is_found_across_chunk_boundaries_with_its_row_in_any_layout():
    x = np.zeros((300_000, 3), np.float32)
    x[87_381, 1] = np.nan  # element 262_144: 1 MiB into the data, past the member's chunk boundary
    with pytest.raises(InvalidUpload, match="first at row 87381"):
        read_npz(io.BytesIO(_npz(**{"t.x": x})))
    with pytest.raises(InvalidUpload, match="first at row 87381"):
        read_npz(io.BytesIO(_npz(**{"t.x": np.asfortranarray(x).astype(">f4")})))
    labels = np.zeros(300_000)
    labels[-1] = np.nan
    with pytest.raises(InvalidUpload, match="NaN or Inf at row 299999"):
        read_npz(io.BytesIO(_npz(**{"t.x": np.zeros((300_000, 1), np.uint8), "t.y": labels})))


@pytest.mark.parametrize("rows, data_rows, reason", [(1000, 10, "holds 40 bytes of data but its header claims"),
                                                     (10, 12, "more data than its shape")])
def test_the_member_size_must_match_its_header(rows, data_rows, reason):
    members = read_zip(_npz(**{"t.x": np.zeros((2, 1), np.float32)}))
    members["t.x.npy"] = npy_header((rows, 1)) + np.zeros((data_rows, 1), np.float32).tobytes()
    with pytest.raises(InvalidUpload, match=reason):
        read_npz(io.BytesIO(write_zip(members)))


def test_a_claim_beyond_the_member_cap_is_refused_before_reading():
    members = read_zip(_npz(**{"t.x": np.zeros((2, 1), np.float32)}))
    members["t.x.npy"] = npy_header((10**6, 1)) + bytes(16)
    with pytest.raises(InvalidUpload, match="claims shape"):
        read_npz(io.BytesIO(write_zip(members)), ArchiveLimits(max_member_bytes=1000))


@pytest.mark.parametrize("arrays, reason", [
    ({"t.x": np.array(["a"], object)}, "Python objects"),
    ({"t.x": np.zeros(2, complex)}, "only numeric"),
    ({"t.x": np.zeros((0, 2))}, "empty"),
    ({"t.x": np.zeros(2), "t.y": np.array([0.0, np.nan])}, "labels 't.y' hold NaN or Inf at row 1"),
    ({"t.x": np.zeros(3), "t.y": np.array([[1, 0], [0, 1], [np.inf, 0.7]])}, "NaN or Inf at row 2"),
    ({"t.x": np.zeros(2), "t.y": np.array(["cat", "dog"])}, "are strings"),
    ({"t.x": np.zeros(2), "t.y": np.zeros((2, 1, 1, 1), int)},
     "shape \\[N\\] or \\[N, 1\\], a 0/1 matrix .* the float values .* or integer masks \\[N, H, W\\]"),
    ({"t.x": np.zeros(2), "t.y": np.zeros((2, 1, 1))}, "or integer masks"),  # float masks are none of them
    ({"t.x": np.array([[0.0, np.inf]])}, r"'t.x' holds NaN or Inf \(first at row 0\)"),
    ({"t.y": np.zeros(2, int)}, "labels but no inputs"),
    ({"t.transcript": np.array(["a", "b"])}, "split 't' has transcripts but no inputs"),
    ({"t.x": np.zeros(2), "t.transcript": np.array([b"a", b"b"])}, "transcripts 't.transcript' must be one string "
                                                                     "per example, a 1-D numpy unicode array"),
    ({"t.x": np.zeros(2), "t.transcript": np.array([["a"], ["b"]])}, "not <U1 of shape \\[2, 1\\]"),
    ({"t.x": np.zeros(2), "t.transcript": np.array(["a", "b", "c"])}, "disagree"),
    ({"t.x": np.zeros(2), "t.z": np.zeros(3)}, "disagree"),
    ({"tx": np.zeros(2)}, "not named"),
    ({"train_x": np.zeros(2)}, r"to name it 'train.x' pass a dict: numpy.savez\(path, \*\*\{'train.x': ...\}\)"),
])
def test_bad_arrays_are_refused(arrays, reason):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(InvalidUpload, match=reason):
        read_npz(io.BytesIO(buffer.getvalue()))


def test_transcripts_are_strings_read_without_unpickling():
    arrays = {"val.x": np.zeros((2, 4), np.float32), "val.transcript": np.array(["HELLO WORLD", "ÇA VA"])}
    contents = read_npz(io.BytesIO(_npz(**arrays)), keep_arrays=True)
    assert contents.splits["val"]["transcript"] == {"shape": [2], "dtype": "<U11"}
    assert contents.arrays["val.transcript"].tolist() == ["HELLO WORLD", "ÇA VA"]


def test_a_zero_one_label_matrix_is_read_as_multi_label():
    labels = np.array([[1, 0, 1], [0, 0, 0]], np.int64)
    contents = read_npz(io.BytesIO(_npz_bytes({"t.x": np.zeros(2), "t.y": labels})))
    assert contents.splits["t"]["y"]["shape"] == [2, 3] and contents.label_range["t"] == [0, 1]


@pytest.mark.parametrize("labels, extremes", [(np.array([0.0, 1.5, -2.25]), [-2.25, 1.5]),
                                              (np.array([[1, 0], [0, 1], [0.3, 0.7]]), [0.0, 1.0]),
                                              (np.array([[3, 0], [0, 1], [1, 0]]), [0.0, 3.0])])
def test_floats_that_are_no_class_index_and_matrices_beyond_zero_one_are_values(labels, extremes):
    """A regression model's targets: floats that are not whole, or a matrix of other numbers than 0 and 1."""
    contents = read_npz(io.BytesIO(_npz_bytes({"t.x": np.zeros(3), "t.y": labels})))
    assert contents.splits["t"]["y"]["values"] is True and contents.label_range["t"] == extremes
    kept = read_npz(io.BytesIO(_npz_bytes({"t.x": np.zeros(3), "t.y": labels})), keep_arrays=True)
    assert kept.label_range == contents.label_range and kept.splits == contents.splits
    whole = read_npz(io.BytesIO(_npz_bytes({"t.x": np.zeros(3), "t.y": np.array([2.0, 0.0, 1.0])})))
    assert "values" not in whole.splits["t"]["y"] and whole.label_range["t"] == [0, 2]


def _npz_bytes(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_a_torch_save_file_is_named_as_not_numpy():
    import torch
    buffer = io.BytesIO()
    torch.save({"train.x": torch.zeros(2)}, buffer)
    with pytest.raises(InvalidUpload, match="holds '.*data.pkl', which is not a numpy array .* never read"):
        read_npz(io.BytesIO(buffer.getvalue()))
