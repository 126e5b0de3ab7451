"""Issue 10 benchmark: a BERT-style sentence encoder (random init, `transformers` config of BERT-mini size: 30,522
vocabulary, 4 layers, hidden 256; two integer inputs, mean pooling, an unused pooler, exported with
`Dim("batch", min=1, max=1024)`) through the default int8 PTQ of `compression.ptq`, against PyTorch's dynamic int8
(`torch.ao.quantization.quantize_dynamic`), in one run.

Rows: fp32; int8 with embeddings left in fp32 (the old behaviour); int8 + int8 embeddings (the default);
int8 + 4-bit embeddings; default + SmoothQuant (alpha 0.5); the dynamic int8 peer. Columns: file bytes and x smaller
than fp32 (the `.pt2` each writes; the peer cannot be exported, so its `torch.save` state dict against the fp32
state dict), compiled latency at batch 1 and 32 (torch.compile, inductor freezing; all models timed in alternation,
`compression.measure.compare_latency`) and the speedup over compiled fp32, and the mean cosine of the sentence
embeddings to fp32 on held-out random sentences (random weights: the cosine shows quantization error only).

    OMP_NUM_THREADS=2 nice .venv/bin/python bench/quantization/encoder.py            # ~10 min on 2 shared cores
    OMP_NUM_THREADS=2 nice .venv/bin/python bench/quantization/encoder.py --no-latency  # sizes and cosine only

Writes bench/results/quantization_encoder.json.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from torch.export import Dim

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from compression import formats  # noqa: E402
from compression.io import load_program, save_program  # noqa: E402
from compression.measure import compare_latency  # noqa: E402
from compression.ptq.embeddings import EmbeddingFormat  # noqa: E402
from compression.ptq.quantize import quantize_int8  # noqa: E402

VOCAB, SEQ = 30522, 64


class SentenceEncoder(torch.nn.Module):
    def __init__(self, layers: int, hidden: int):
        super().__init__()
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                                         num_attention_heads=hidden // 64, intermediate_size=4 * hidden,
                                         max_position_embeddings=128)
        self.bert = transformers.BertModel(config, add_pooling_layer=True)

    def forward(self, input_ids, attention_mask):
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def sentences(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, VOCAB, (rows, SEQ), generator=generator)
    lengths = torch.randint(8, SEQ + 1, (rows,), generator=generator)
    mask = (torch.arange(SEQ)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def state_dict_bytes(model: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--no-latency", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    workdir = Path(tempfile.mkdtemp(prefix="encoder_bench_"))
    model = SentenceEncoder(args.layers, args.hidden).eval()
    example = sentences(4, 0)
    batch = Dim("batch", min=1, max=1024)
    fp32_path = save_program(torch.export.export(model, example, dynamic_shapes=({0: batch}, {0: batch})),
                             workdir / "fp32.pt2")
    upload = load_program(fp32_path).module()
    calibration = [sentences(32, seed) for seed in range(1, 5)]
    held_out = sentences(256, 99)

    rows: dict[str, dict] = {"fp32": {"model": upload, "bytes": fp32_path.stat().st_size, "base": "pt2"}}
    variants = {"int8, fp32 embeddings": {"embeddings": None},
                "int8 + int8 embeddings (default)": {},
                "int8 + int4 embeddings (group 32)": {"embeddings": EmbeddingFormat(4, 32)},
                "default + SmoothQuant 0.5": {"smoothquant_alpha": 0.5}}
    for index, (name, options) in enumerate(variants.items()):
        started = time.monotonic()
        quantized = quantize_int8(upload, example, calibration, **options)
        path = formats.format_of("model.pt2").write(quantized, example, workdir / f"int8_{index}.pt2")
        rows[name] = {"model": load_program(path).module(), "bytes": path.stat().st_size, "base": "pt2",
                      "quantize_s": round(time.monotonic() - started, 1)}
    peer = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    rows["PyTorch dynamic int8 (peer)"] = {"model": peer, "bytes": state_dict_bytes(peer), "base": "state_dict"}
    fp32_state_bytes = state_dict_bytes(model)

    with torch.no_grad():
        reference = upload(*held_out)
        for row in rows.values():
            row["cosine"] = float(torch.nn.functional.cosine_similarity(row["model"](*held_out), reference).mean())
    if not args.no_latency:
        timings = compare_latency({name: row["model"] for name, row in rows.items()}, example, [1, 32],
                                  compile=True, rounds=7)  # 7 rounds: single slow rounds on a shared CPU
        for name, row in rows.items():
            row["latency_ms"] = timings[name]

    fp32 = rows["fp32"]
    print(f"\nBERT encoder, {args.layers} layers, hidden {args.hidden}, vocabulary {VOCAB}, sequence {SEQ}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| model | bytes | x smaller | b1 ms | b32 ms | b1 speedup | b32 speedup | cosine to fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for name, row in rows.items():
        base = fp32["bytes"] if row["base"] == "pt2" else fp32_state_bytes
        latency = row.get("latency_ms", {})
        speed = {b: fp32["latency_ms"][b] / ms for b, ms in latency.items()} if latency else {}
        cells = [f"{row['bytes']:,}", f"{base / row['bytes']:.2f}",
                 *(f"{latency[b]:.2f}" if latency else "n/a" for b in (1, 32)),
                 *(f"{speed[b]:.2f}x" if speed else "n/a" for b in (1, 32)), f"{row['cosine']:.5f}"]
        print(f"| {name} | " + " | ".join(cells) + " |")
        results[name] = {key: value for key, value in row.items() if key != "model"}
    out = Path(__file__).resolve().parents[1] / "results" / "quantization_encoder.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"layers": args.layers, "hidden": args.hidden, "threads": torch.get_num_threads(),
                               "fp32_state_dict_bytes": fp32_state_bytes, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
