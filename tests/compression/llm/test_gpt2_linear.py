"""GPT-2's Conv1D decoder rewritten as an OPT model of nn.Linear layers: the same logits, whatever the options."""

import pytest
import torch

from compression.llm.gpt2_linear import gpt2_as_opt, logit_gap


def _gpt2(**options):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=96, n_positions=40, n_embd=32, n_layer=3, n_head=4, **options)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random biases and norms, so a dropped or misplaced one shows in the logits
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                parameter.normal_(0.0 if name.endswith("bias") else 1.0, 0.2)
    return model


@pytest.mark.parametrize("options", [
    {},
    {"scale_attn_by_inverse_layer_idx": True},
    {"scale_attn_weights": False},
    {"tie_word_embeddings": False, "activation_function": "relu", "n_inner": 48},
])
def test_the_opt_rewrite_computes_the_same_logits(options):
    gpt2 = _gpt2(**options)
    opt = gpt2_as_opt(gpt2)
    assert type(opt).__name__ == "OPTForCausalLM"
    assert all("Conv1D" != type(module).__name__ for module in opt.modules())
    tokens = torch.randint(0, 96, (40,))  # every position of the table
    assert logit_gap(gpt2, opt, tokens) < 1e-5


def test_a_position_off_by_one_would_be_caught():
    # The check the job runs before using the rewrite: a table shifted by one row is a different function.
    gpt2 = _gpt2()
    opt = gpt2_as_opt(gpt2)
    with torch.no_grad():
        opt.model.decoder.embed_positions.weight[3:].copy_(gpt2.transformer.wpe.weight[:-1])
    assert logit_gap(gpt2, opt, torch.randint(0, 96, (40,))) > 1e-3


@pytest.mark.parametrize("options, reason", [
    ({"add_cross_attention": True}, "cross-attention"),
    ({"layer_norm_epsilon": 1e-6}, "layer_norm_epsilon is 1e-06"),
])
def test_what_opt_cannot_express_is_refused(options, reason):
    with pytest.raises(ValueError, match=reason):
        gpt2_as_opt(_gpt2(**options))
