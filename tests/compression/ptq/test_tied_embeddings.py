"""A table tied to an output layer (GPT-2, Llama 3.2, Qwen2.5) is stored once in an int8 program: the lookups read
the output layer's int8 codes and per-channel scales, the per-row grid of an int8 table."""

import torch

from compression.fidelity import relative_max_gap
from compression.formats import format_of
from compression.io import load_model, load_program
from compression.ptq import embeddings
from compression.ptq.embeddings import EmbeddingFormat
from compression.ptq.quantize import quantize_int8

VOCAB, WIDTH = 64, 32


class TiedLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, WIDTH)
        self.hidden = torch.nn.Linear(WIDTH, WIDTH)
        self.head = torch.nn.Linear(WIDTH, VOCAB, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(torch.relu(self.hidden(self.embed(ids))))


class TiedLMWithPositions(TiedLM):
    """Also a table no layer reads (a position embedding)."""

    def __init__(self):
        super().__init__()
        self.positions = torch.nn.Embedding(6, WIDTH)

    def forward(self, ids):
        return super().forward(ids) + self.head(self.positions(torch.arange(ids.shape[1])))


def quantized(model: TiedLM, embeddings: EmbeddingFormat):
    torch.manual_seed(1)
    ids = torch.randint(0, VOCAB, (4, 6))
    calibration = [(torch.randint(0, VOCAB, (8, 6)),) for _ in range(4)]
    report = {}
    return quantize_int8(model, (ids,), calibration, embeddings=embeddings, report=report), report, ids


def table_sized(program, dtype: torch.dtype) -> list[torch.Tensor]:
    return [tensor for tensor in [*program.state_dict.values(), *program.constants.values()]
            if tensor.dtype == dtype and tensor.shape == (VOCAB, WIDTH)]


def test_the_lookups_read_the_output_layers_int8_codes_and_the_program_stores_the_table_once(tmp_path, monkeypatch):
    monkeypatch.setattr(embeddings, "ROWS_PER_CHECK", 16)  # the grid check runs over the rows in 4 chunks
    model = TiedLM().eval()
    int8, report, ids = quantized(model, EmbeddingFormat())
    # one name for the tied parameter (export keeps the output layer's)
    assert report["embeddings"]["shared_with_output_layer"] == report["embeddings"]["tables"]
    assert len(report["embeddings"]["tables"]) == 1
    path = format_of("model.pt2").write(int8, (ids,), tmp_path / "model_int8.pt2")
    stored = load_program(path)
    assert len(table_sized(stored, torch.int8)) == 1
    assert table_sized(stored, torch.float32) == []  # no float copy left for the lookups either
    with torch.no_grad():
        assert relative_max_gap(load_model(path)(ids), model(ids)) < 0.05


def test_under_4_bit_tables_a_tied_table_still_reads_the_int8_codes_and_an_untied_one_gets_4_bit_codes(tmp_path):
    """A 4-bit copy beside the output layer's int8 codes would add half a byte per entry: the tied table is shared
    in int8; a table no layer reads is stored in 4 bits."""
    model = TiedLMWithPositions().eval()
    int8, report, ids = quantized(model, EmbeddingFormat(bits=4, group_size=8))
    assert len(report["embeddings"]["tables"]) == 2
    assert report["embeddings"]["shared_with_output_layer"] == [name for name in report["embeddings"]["tables"]
                                                               if "positions" not in name]
    stored = load_program(format_of("model.pt2").write(int8, (ids,), tmp_path / "model_int8.pt2"))
    assert len(table_sized(stored, torch.int8)) == 1
    assert [tuple(t.shape) for t in stored.state_dict.values() if t.dtype == torch.uint8] == [(6, WIDTH // 2)]
