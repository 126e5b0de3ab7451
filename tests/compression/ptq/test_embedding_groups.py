"""4-bit embedding tables in the int8 program: a table whose width the group size does not divide takes the
largest smaller even group that does (at least 8); before, it stayed float and only `kept_float` said so."""

import torch

from compression.ptq.embeddings import EmbeddingFormat
from compression.ptq.quantize import quantize_int8


class ThreeTables(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = (torch.nn.Embedding(20, width) for width in (32, 36, 27))
        self.head = torch.nn.Linear(32 + 36 + 27, 4)

    def forward(self, ids):
        return self.head(torch.cat([self.a(ids), self.b(ids), self.c(ids)], -1).mean(1))


def test_a_group_size_that_does_not_divide_a_table_takes_the_largest_that_does():
    model, ids = ThreeTables().eval(), torch.randint(0, 20, (4, 6))
    report = {}
    program = quantize_int8(model, (ids,), [(ids,)], embeddings=EmbeddingFormat(4, 24), report=report)
    tables = report["embeddings"]
    assert tables["group_sizes"] == {"a.weight": 16, "b.weight": 18}  # 32 -> 16, 36 -> 18
    assert set(tables["tables"]) == {"a.weight", "b.weight"}
    assert "27 is not a multiple of group_size 24 nor of any smaller group of 8" in tables["kept_float"]["c.weight"]
    # a 32-wide row in two groups of 16, one scale each
    scales = program.get_buffer("a.weight_scale")
    assert scales.shape == (20, 2)
    with torch.no_grad():
        torch.testing.assert_close(program(ids), model(ids), atol=0.05, rtol=0.05)
