import numpy as np
import torch

from compression.data import Dataset
from compression.evaluate import evaluate
from compression.examples import digits_dataset, train_digits_cnn
from compression.io import input_names, load_model, load_program


def test_digits_split_is_stratified_standardised_and_shaped_like_an_upload():
    arrays = digits_dataset()
    assert arrays["train.x"].shape == (1437, 1, 8, 8) and arrays["val.x"].shape == (360, 1, 8, 8)
    assert arrays["train.x"].dtype == np.float32 and arrays["val.y"].dtype == np.int64
    assert abs(arrays["train.x"].mean()) < 1e-5 and abs(arrays["train.x"].std() - 1) < 1e-4
    assert np.bincount(arrays["val.y"]).min() >= 35  # every class present in validation


def test_training_is_deterministic_for_a_seed():
    arrays = digits_dataset()
    first, second = (train_digits_cnn(steps=3, seed=1, width=4, arrays=arrays) for _ in range(2))
    other = train_digits_cnn(steps=3, seed=2, width=4, arrays=arrays)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    assert not torch.equal(first[0].weight, other[0].weight)


def test_bundled_example_files_are_a_good_model_and_its_dataset(example_files):
    model_path, dataset_path = example_files  # written by compression.examples.write_digits_example
    dataset = Dataset.load(dataset_path, input_names(load_program(model_path)))
    assert evaluate(load_model(model_path), dataset.split("val"))["accuracy"] >= 0.95
