"""What running every expert on every token costs: transformers' own sparse forward of a Mixtral-shaped model
against the same model with its experts split into linear layers (`compression.moe_experts`, what the service's
programs run), both eager fp32, in one run. The model is `bench.causal_lm_scale --model mixtral`'s (86M
parameters, 8 experts of which each token uses 2), random weights; 56-token rows, the median of 3 timed calls.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.moe_forward_speed
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from compression.moe_experts import split_stacked_experts

TOKENS = 56
BATCHES = (1, 32)


def latency_ms(model: torch.nn.Module, batch: int) -> float:
    ids = torch.randint(0, model.config.vocab_size, (batch, TOKENS))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)  # warm-up
        times = []
        for _ in range(3):
            started = time.perf_counter()
            model(input_ids=ids, use_cache=False)
            times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 1)


def main() -> None:
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=32000, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
                           num_attention_heads=8, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2)
    model = MixtralForCausalLM(config).eval()
    sparse = {batch: latency_ms(model, batch) for batch in BATCHES}
    split_stacked_experts(model)
    every_expert = {batch: latency_ms(model, batch) for batch in BATCHES}
    print(json.dumps({"eager_fp32_ms_sparse": sparse, "eager_fp32_ms_every_expert": every_expert,
                      "every_expert_over_sparse": {b: round(every_expert[b] / sparse[b], 2) for b in BATCHES}}))


if __name__ == "__main__":
    main()
