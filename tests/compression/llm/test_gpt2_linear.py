"""GPT-2's Conv1D decoder (and GPT-1's, its post-norm form) rewritten as an OPT model of nn.Linear layers: the same
logits, whatever the options."""

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


def _gpt1(model_class: str = "OpenAIGPTLMHeadModel", **options):
    import transformers

    torch.manual_seed(0)
    config = transformers.OpenAIGPTConfig(vocab_size=96, n_positions=40, n_embd=32, n_layer=3, n_head=4,
                                          pad_token_id=0, num_labels=3, **options)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                parameter.normal_(0.0 if name.endswith("bias") else 1.0, 0.2)
    return model


@pytest.mark.parametrize("options", [{}, {"afn": "relu"}, {"afn": "silu"}])
def test_gpt1_post_norm_blocks_are_opt_without_layer_norm_before(options):
    # GPT-1 normalises after each residual add and has no final norm: OPT with do_layer_norm_before=False
    gpt1 = _gpt1(**options)
    opt = gpt2_as_opt(gpt1)
    assert not opt.config.do_layer_norm_before and opt.model.decoder.final_layer_norm is None
    assert all("Conv1D" != type(module).__name__ for module in opt.modules())
    assert logit_gap(gpt1, opt, torch.randint(0, 96, (40,))) < 1e-5
    # were its norms taken as pre-norm (GPT-2's), the function would differ
    opt.config.do_layer_norm_before = True
    for layer in opt.model.decoder.layers:
        layer.do_layer_norm_before = True
    assert logit_gap(gpt1, opt, torch.randint(0, 96, (40,))) > 1e-2


@pytest.mark.parametrize("model_class", ["OpenAIGPTModel", "OpenAIGPTForSequenceClassification"])
def test_gpt1_encoders_and_classifiers_have_their_opt_counterparts(model_class):
    gpt1 = _gpt1(model_class)
    opt = gpt2_as_opt(gpt1)
    tokens = torch.randint(1, 96, (2, 24))
    tokens[1, 20:] = 0  # right padding: the classifiers pool the last real token
    mask = (tokens != 0).long()
    with torch.no_grad():
        expected, actual = gpt1(input_ids=tokens, attention_mask=mask), opt(input_ids=tokens, attention_mask=mask)
    if model_class == "OpenAIGPTModel":
        expected, actual = expected.last_hidden_state * mask[..., None], actual.last_hidden_state * mask[..., None]
    else:
        expected, actual = expected.logits, actual.logits
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_a_gpt2_reader_is_opts_with_the_same_span_logits():
    from transformers import GPT2Config, GPT2ForQuestionAnswering

    torch.manual_seed(0)
    gpt2 = GPT2ForQuestionAnswering(GPT2Config(vocab_size=96, n_positions=40, n_embd=32, n_layer=2,
                                               n_head=4)).eval()
    opt = gpt2_as_opt(gpt2)
    assert type(opt).__name__ == "OPTForQuestionAnswering"
    tokens = torch.randint(0, 96, (2, 24))
    with torch.no_grad():
        expected, actual = gpt2(input_ids=tokens), opt(input_ids=tokens)
    torch.testing.assert_close(actual.start_logits, expected.start_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(actual.end_logits, expected.end_logits, atol=1e-5, rtol=1e-5)


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
