import numpy as np
import pytest
import torch

from compression.data import Dataset
from compression.inspect import InvalidUpload


def _arrays(n_train=10, n_val=4):
    rng = np.random.default_rng(0)
    return {"train.x": rng.normal(size=(n_train, 3)).astype(np.float64), "train.y": np.arange(n_train) % 3,
            "val.x": rng.normal(size=(n_val, 3)), "val.y": np.array([0, 1, 2, 1], dtype=np.int32)}


def test_single_input_binds_whatever_the_array_is_called_and_converts_dtypes():
    arrays = _arrays()
    arrays["train.features"] = arrays.pop("train.x")
    data = Dataset.from_arrays(arrays, input_names=["x"])
    train = data.split("train")
    assert len(train) == 10 and train.inputs["x"].dtype == np.float32 and train.labels.dtype == np.int64
    np.testing.assert_allclose(train.inputs["x"], arrays["train.features"].astype(np.float32))
    assert data.num_classes == 3 and set(data.split_names) == {"train", "val"}


def test_batches_cover_every_example_once_and_respect_limit_and_seed():
    data = Dataset.from_arrays(_arrays(), input_names=["x"])
    train = data.split("train")
    batches = list(train.batches(4))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b.labels for b in batches]), torch.from_numpy(train.labels))
    shuffled = torch.cat([b.labels for b in train.batches(3, shuffle=True, seed=1)])
    again = torch.cat([b.labels for b in train.batches(3, shuffle=True, seed=1)])
    assert torch.equal(shuffled, again) and sorted(shuffled.tolist()) == sorted(train.labels.tolist())
    limited = list(train.batches(4, shuffle=True, limit=6))
    assert sum(len(b) for b in limited) == 6
    assert batches[0].inputs[0].dtype == torch.float32 and batches[0].labels.dtype == torch.int64


def test_multi_input_binds_by_name_in_model_order_and_unlabelled_split():
    ids = np.arange(12).reshape(4, 3)
    data = Dataset.from_arrays({"val.mask": np.ones((4, 3), dtype=bool), "val.input_ids": ids},
                               input_names=["input_ids", "mask"], input_dtypes={"mask": torch.float32})
    batch = data.split("val").head(2)
    assert batch.labels is None and batch.inputs[0].dtype == torch.int64 and batch.inputs[1].dtype == torch.float32
    assert torch.equal(batch.inputs[0], torch.from_numpy(ids[:2]))
    assert data.num_classes is None and data.ignored_arrays == []
    with_extra = Dataset.from_arrays({"val.mask": np.ones((4, 3)), "val.input_ids": ids, "val.token_type_ids": ids},
                                     input_names=["input_ids", "mask"])
    assert with_extra.ignored_arrays == ["val.token_type_ids"]


def test_load_npz_and_refuse_what_cannot_be_bound(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, **_arrays())
    assert len(Dataset.load(path, ["x"]).split("val")) == 4
    with pytest.raises(InvalidUpload, match="input_ids"):
        Dataset.from_arrays({"train.a": np.ones(2), "train.b": np.ones(2)}, ["input_ids", "mask"])
    with pytest.raises(InvalidUpload, match="length"):
        Dataset.from_arrays({"train.x": np.ones((3, 2)), "train.y": np.zeros(2, dtype=int)}, ["x"])
    with pytest.raises(KeyError, match="test"):
        Dataset.load(path, ["x"]).split("test")


def test_dtypes_named_by_the_model_signature_including_bfloat16():
    arrays = {"val.x": np.ones((3, 2), dtype=np.float64), "val.m": np.ones((3, 2), dtype=np.int32)}
    data = Dataset.from_arrays(arrays, ["x", "m"], input_dtypes={"x": "bfloat16", "m": "float16"})
    x, m = data.split("val").head(2).inputs
    assert x.dtype == torch.bfloat16 and m.dtype == torch.float16 and float(x.sum()) == 4.0


def test_nan_or_inf_inputs_are_refused_with_the_array_and_row():
    from compression.errors import NonFiniteValues
    arrays = _arrays()
    arrays["val.x"][2, 1] = np.nan
    with pytest.raises(NonFiniteValues, match=r"'val.x' holds NaN or Inf \(first at row 2\)"):
        Dataset.from_arrays(arrays, ["x"])
    arrays = _arrays()
    arrays["train.x"][9, 0] = 1e300  # finite in float64, infinite once converted to the model's float32
    with pytest.raises(NonFiniteValues, match=r"beyond the range of the model's torch.float32 input.*row 9"):
        Dataset.from_arrays(arrays, ["x"])
    arrays = _arrays()
    arrays["train.x"][4, 2] = np.nan
    with pytest.raises(NonFiniteValues, match="row 4"):  # also when the model takes integers
        Dataset.from_arrays(arrays, ["x"], input_dtypes={"x": torch.int64})


def test_labels_as_whole_number_floats_or_a_column_become_int64_class_indices():
    arrays = _arrays(n_train=4)
    arrays["train.y"] = np.array([[2.0], [0.0], [1.0], [2.0]], np.float32)
    arrays["val.y"] = np.array([[1], [0], [2], [2]], np.uint8)
    data = Dataset.from_arrays(arrays, ["x"])
    assert data.split("train").labels.tolist() == [2, 0, 1, 2] and data.split("train").labels.dtype == np.int64
    assert data.split("val").labels.tolist() == [1, 0, 2, 2] and data.num_classes == 3
    arrays["val.y"] = np.array([True, False, True, True])
    assert Dataset.from_arrays(arrays, ["x"]).split("val").labels.tolist() == [1, 0, 1, 1]
    assert not Dataset.from_arrays(arrays, ["x"]).has_label_values


def test_floats_that_are_no_class_index_are_values_a_regression_model_predicts():
    arrays = _arrays(n_train=4)
    arrays["train.y"] = np.array([2.0, 0.5, 1.0, 2.0])
    data = Dataset.from_arrays(arrays, ["x"])
    train = data.split("train")
    assert train.label_values and train.labels.dtype == np.float32 and train.labels.tolist() == [2.0, 0.5, 1.0, 2.0]
    assert data.has_label_values and not data.split("val").label_values
    arrays["train.y"] = np.array([[0.1, 0.9], [1, 0], [0, 1], [1, 0]])  # not a 0/1 matrix: two targets per row
    assert Dataset.from_arrays(arrays, ["x"]).split("train").label_values
    arrays["train.y"] = np.array([[1, 0], [1, 0], [0, 1], [1, 0]])
    assert not Dataset.from_arrays(arrays, ["x"]).split("train").label_values  # multi-label targets
    data.label_as_values()  # a regression job: ratings 1..5 are values too
    assert data.split("val").label_values and data.split("val").labels.dtype == np.float32
    arrays["train.y"] = np.array([2.0, np.nan, 1.0, 2.0])
    with pytest.raises(InvalidUpload, match="NaN or Inf at row 1"):
        Dataset.from_arrays(arrays, ["x"])


def test_a_zero_one_label_matrix_is_kept_as_float_multi_label_targets():
    arrays = _arrays(n_train=4)
    multi_hot = np.array([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
    arrays["train.y"] = multi_hot
    labels = Dataset.from_arrays(arrays, ["x"]).split("train").labels
    assert labels.dtype == np.float32 and labels.shape == (4, 3)
    np.testing.assert_array_equal(labels, multi_hot)
    batch = next(Dataset.from_arrays(arrays, ["x"]).split("train").batches(3))
    assert batch.labels.dtype == torch.float32 and batch.labels.shape == (3, 3)
    arrays["train.y"] = multi_hot * 2  # not 0/1: three values per row, a regression model's targets
    assert Dataset.from_arrays(arrays, ["x"]).split("train").label_values


def test_a_missing_size_one_channel_dimension_is_inserted_and_nothing_else_is_reshaped():
    images = np.arange(2 * 4 * 5, dtype=np.float32).reshape(2, 4, 5)
    data = Dataset.from_arrays({"val.x": images}, ["x"], input_shapes={"x": [None, 1, 4, 5]})
    assert data.split("val").inputs["x"].shape == (2, 1, 4, 5)
    np.testing.assert_array_equal(data.split("val").inputs["x"][:, 0], images)
    for wanted in ([None, 3, 4, 5], [None, 1, 5, 4], [None, 4, 5]):  # 3 channels, other sizes, already fitting
        assert Dataset.from_arrays({"val.x": images}, ["x"], input_shapes={"x": wanted}).split(
            "val").inputs["x"].shape == (2, 4, 5)
