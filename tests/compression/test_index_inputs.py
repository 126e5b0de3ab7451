import numpy as np
import pytest
import torch
from torch import nn

from compression.archive import InvalidUpload
from compression.context import RunContext
from compression.data import Dataset
from compression.index_inputs import check_index_ranges, embedding_rows
from compression.io import export_model, save_program
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, PTQSpec


class Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.words, self.positions = nn.Embedding(50, 8), nn.Embedding(20, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids, position_ids, attention_mask):
        # ids reach the embedding through a cast and a reshape, as an int32 upload's often do
        words = self.words(input_ids.long().reshape(input_ids.shape))
        hidden = (words + self.positions(position_ids)) * attention_mask.unsqueeze(-1)
        return self.head(hidden.mean(1))


def _program():
    example = (torch.randint(0, 50, (2, 6)), torch.arange(6).repeat(2, 1), torch.ones(2, 6, dtype=torch.int64))
    return export_model(Tokens().eval(), example)


def _arrays(ids_high=49, positions_low=0, rows=4):
    return {"val.input_ids": np.full((rows, 6), ids_high), "val.position_ids": np.full((rows, 6), positions_low),
            "val.attention_mask": np.ones((rows, 6), np.int64), "train.input_ids": np.zeros((rows, 6), np.int32),
            "train.position_ids": np.zeros((rows, 6)).astype(int), "train.attention_mask": np.ones((rows, 6), int)}


def test_each_index_input_is_bounded_by_the_table_it_reads():
    names = ["input_ids", "position_ids", "attention_mask"]
    rows = embedding_rows(_program(), names)
    assert rows == {"input_ids": 50, "position_ids": 20}
    check_index_ranges(Dataset.from_arrays(_arrays(), names).splits.values(), rows)
    with pytest.raises(InvalidUpload, match=r"split 'val': input 'input_ids' holds ids in \[50, 50\] but it indexes "
                                            r"an embedding table of 50 rows"):
        check_index_ranges(Dataset.from_arrays(_arrays(ids_high=50), names).splits.values(), rows)
    with pytest.raises(InvalidUpload, match=r"'position_ids' holds ids in \[-1, -1\]"):
        check_index_ranges(Dataset.from_arrays(_arrays(positions_low=-1), names).splits.values(), rows)


def test_a_job_with_ids_past_the_vocabulary_fails_when_it_loads(tmp_path):
    model = save_program(_program(), tmp_path / "m.pt2")
    np.savez(tmp_path / "d.npz", **_arrays(ids_high=400))
    events = []
    with pytest.raises(InvalidUpload, match="holds ids in \\[400, 400\\]"):  # a ValueError: the job's invalid_input
        run_pipeline(model, tmp_path / "d.npz", [PTQSpec(calibration_samples=4)],
                     EvaluationSpec(split="val", latency=False, compile=False), RunContext(report=events.append),
                     tmp_path / "work")
    assert {event.phase for event in events} == {"load"}  # before the dry run, evaluation or calibration
