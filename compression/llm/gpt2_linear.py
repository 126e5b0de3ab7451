"""GPT-2 models rewritten as the same function in `nn.Linear` layers, so that compressed-tensors can hold them.

GPT-2 (and DistilGPT2, DialoGPT, ...) keeps its decoder weights in transformers' `Conv1D` (weight stored
[in, out]), which compressed-tensors cannot hold: it quantizes `nn.Linear` modules only, and transformers would
load a GPT-2 folder back with float `Conv1D`s. transformers' OPT is the same decoder written with `nn.Linear`:
learned absolute positions, pre-norm LayerNorms, biased attention and MLP projections, a final LayerNorm and a
tied lm_head. The rewrite transposes each weight, splits the fused qkv into q/k/v, folds GPT-2's attention scaling
into the query rows (OPT scales queries by head_dim^-0.5; GPT-2 by that only when `scale_attn_weights`, and by
1/(layer+1) more when `scale_attn_by_inverse_layer_idx`) and shifts the position table by OPT's offset of 2 rows.
(GPTBigCode would be the closer twin, but transformers' weight initialisation reads `.weight` of its projections,
which a compressed-tensors layer does not have, so its folders do not load back.) The job checks the two models'
outputs on its own text before using the rewrite.

GPT-1 (`openai-gpt`) is the post-norm form of the same decoder: each block normalises after its residual adds
(`ln_1(x + attn)`, `ln_2(n + mlp)`) and no norm follows the last one, which is OPT with
`do_layer_norm_before=False` (as OPT-350m is); it scales attention by head_dim^-0.5 like OPT, and its "gelu" is
GPT-2's tanh approximation (`gelu_new`).

Encoder-style jobs (feature-extraction, sequence-classification) use it too, so that their stages' Hugging Face
folders can be written (`OPTModel`, `OPTForSequenceClassification`: the same last-real-token pooling). OPT counts
positions over the attention mask where GPT-2 counts every slot, so the two agree on real tokens when padding is
on the right (GPT-2 tokenizers' default); the job compares them on its own padded rows and keeps GPT-2 otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from compression.archive.gpt2_names import CONV1D_DECODERS, OPT_LAYER_NORM_EPS
from compression.archive.hf_folder import copy_side_files
from compression.fidelity import relative_max_gap

OPT_POSITION_OFFSET = 2  # OPTLearnedPositionalEmbedding looks up position + 2
MAX_OUTPUT_GAP = 1e-3  # of the logits' scale: float32 reassociation, not a different function
LABEL_KEYS = ("num_labels", "id2label", "label2id", "problem_type")
# GPT-2 class -> the OPT class computing the same (transformers names)
COUNTERPARTS = {"GPT2LMHeadModel": "OPTForCausalLM", "GPT2Model": "OPTModel",
                "GPT2ForSequenceClassification": "OPTForSequenceClassification",
                "GPT2ForQuestionAnswering": "OPTForQuestionAnswering",
                "OpenAIGPTLMHeadModel": "OPTForCausalLM", "OpenAIGPTModel": "OPTModel",
                "OpenAIGPTForSequenceClassification": "OPTForSequenceClassification"}
BASE_MODELS = ("GPT2Model", "OpenAIGPTModel")
GPT1_ACTIVATIONS = {"gelu": "gelu_new", "relu": "relu", "silu": "silu", "swish": "silu"}  # modeling_openai.ACT_FNS
NAMES = {"gpt2": "GPT-2", "openai-gpt": "GPT-1"}


def runs_as_opt(folder: Path) -> bool:
    """Whether the folder's model is a Conv1D decoder the job runs as its OPT rewrite (GPT-2 or GPT-1)."""
    return json.loads((folder / "config.json").read_text()).get("model_type") in CONV1D_DECODERS


def opt_config(gpt2: dict):
    """The OPT configuration of a GPT-2 or GPT-1 one (a `config.json` dict); what OPT cannot express is
    refused."""
    from transformers import OPTConfig

    gpt1 = gpt2.get("model_type") == "openai-gpt"
    name = NAMES["openai-gpt" if gpt1 else "gpt2"]  # a config without model_type is read as GPT-2
    if gpt2.get("add_cross_attention"):
        raise ValueError(f"this {name} model has cross-attention layers (add_cross_attention), which OPT (what "
                         f"{name} is rewritten as, so that its Conv1D layers can be quantized) does not have")
    if abs(gpt2.get("layer_norm_epsilon", OPT_LAYER_NORM_EPS) - OPT_LAYER_NORM_EPS) > 1e-12:
        raise ValueError(f"this {name} model's layer_norm_epsilon is {gpt2['layer_norm_epsilon']}; {name} is "
                         f"rewritten as OPT so that its Conv1D layers can be quantized, and OPT's layer norms use "
                         f"{OPT_LAYER_NORM_EPS}")
    if gpt1 and gpt2.get("afn", "gelu") not in GPT1_ACTIVATIONS:
        raise ValueError(f"this GPT-1 model's activation {gpt2['afn']!r} is none of {sorted(GPT1_ACTIVATIONS)}")
    width = gpt2.get("n_embd", 768)
    # GPT-1's MLP is 4 x n_embd wide, always; GPT-2's n_inner may set it
    activation = GPT1_ACTIVATIONS[gpt2.get("afn", "gelu")] if gpt1 else gpt2.get("activation_function", "gelu_new")
    return OPTConfig(vocab_size=gpt2.get("vocab_size", 40478 if gpt1 else 50257), hidden_size=width,
                     num_hidden_layers=gpt2.get("n_layer", 12), num_attention_heads=gpt2.get("n_head", 12),
                     ffn_dim=4 * width if gpt1 else gpt2.get("n_inner") or 4 * width,
                     max_position_embeddings=gpt2.get("n_positions", 512 if gpt1 else 1024),
                     activation_function=activation, word_embed_proj_dim=width,
                     do_layer_norm_before=not gpt1, enable_bias=True, dropout=gpt2.get("resid_pdrop", 0.1),
                     attention_dropout=gpt2.get("attn_pdrop", 0.1), init_std=gpt2.get("initializer_range", 0.02),
                     pad_token_id=gpt2.get("pad_token_id"), bos_token_id=gpt2.get("bos_token_id"),
                     eos_token_id=gpt2.get("eos_token_id"),
                     tie_word_embeddings=gpt2.get("tie_word_embeddings", True), dtype=gpt2.get("dtype"),
                     architectures=["OPTForCausalLM"],
                     **{key: gpt2[key] for key in LABEL_KEYS if gpt2.get(key) is not None})


def query_scale(config, layer: int) -> float:
    """What GPT-2 multiplies a layer's attention scores by, over the head_dim^-0.5 OPT applies to its queries
    (GPT-1 applies that same scale)."""
    if config.model_type == "openai-gpt":
        return 1.0
    scale = 1.0 if config.scale_attn_weights else (config.n_embd // config.n_head) ** 0.5
    return scale / (layer + 1) if config.scale_attn_by_inverse_layer_idx else scale


def copy_block(gpt2_block, opt_layer, scale: float) -> None:
    """One decoder block: layer norms as they are, each Conv1D weight transposed into its Linear."""
    opt_layer.self_attn_layer_norm.load_state_dict(gpt2_block.ln_1.state_dict())
    opt_layer.final_layer_norm.load_state_dict(gpt2_block.ln_2.state_dict())
    weights = gpt2_block.attn.c_attn.weight.t().chunk(3)  # Conv1D's [in, 3 * width] holds [q | k | v] columns
    biases = gpt2_block.attn.c_attn.bias.chunk(3)
    attention = opt_layer.self_attn
    for projection, weight, bias, factor in zip((attention.q_proj, attention.k_proj, attention.v_proj),
                                               weights, biases, (scale, 1.0, 1.0)):
        projection.weight.copy_(weight * factor)
        projection.bias.copy_(bias * factor)
    for conv1d, linear in ((gpt2_block.attn.c_proj, attention.out_proj), (gpt2_block.mlp.c_fc, opt_layer.fc1),
                           (gpt2_block.mlp.c_proj, opt_layer.fc2)):
        linear.weight.copy_(conv1d.weight.t())
        linear.bias.copy_(conv1d.bias)


@torch.no_grad()
def gpt2_as_opt(gpt2_model):
    """The OPT model computing what `gpt2_model` (`GPT2LMHeadModel`, `GPT2Model` or
    `GPT2ForSequenceClassification`, or GPT-1's `OpenAIGPT...` of the same three) computes."""
    import transformers

    kind = type(gpt2_model).__name__
    if kind not in COUNTERPARTS:
        raise ValueError(f"a {kind} has no OPT counterpart here (GPT-2 and GPT-1 language models, encoders and "
                         "classifiers do)")
    config = gpt2_model.config
    opt_class = getattr(transformers, COUNTERPARTS[kind])
    model = opt_class(opt_config(config.to_dict())).to(gpt2_model.dtype).eval()
    model.config.architectures = [COUNTERPARTS[kind]]
    source = gpt2_model if kind in BASE_MODELS else gpt2_model.transformer
    decoder = model.decoder if kind in BASE_MODELS else model.model.decoder
    tokens, positions = (source.tokens_embed, source.positions_embed) if hasattr(source, "tokens_embed") else \
        (source.wte, source.wpe)
    decoder.embed_tokens.weight.copy_(tokens.weight)
    decoder.embed_positions.weight.zero_()
    decoder.embed_positions.weight[OPT_POSITION_OFFSET:].copy_(positions.weight)
    if decoder.final_layer_norm is not None:  # GPT-1 (post-norm) has none
        decoder.final_layer_norm.load_state_dict(source.ln_f.state_dict())
    for index, (block, layer) in enumerate(zip(source.h, decoder.layers)):
        copy_block(block, layer, query_scale(config, index))
    if kind.endswith("ForSequenceClassification"):
        model.score.weight.copy_(gpt2_model.score.weight)
    elif kind.endswith("ForQuestionAnswering"):  # the start and end logits of each token: the same Linear
        model.qa_outputs.load_state_dict(gpt2_model.qa_outputs.state_dict())
    elif kind.endswith("LMHeadModel") and not model.config.tie_word_embeddings:
        model.lm_head.weight.copy_(gpt2_model.lm_head.weight)
    return model


@torch.no_grad()
def logit_gap(first, second, tokens: torch.Tensor) -> float:
    """Largest logit difference on one window of `tokens`, relative to the logits' largest magnitude."""
    window = tokens[: min(len(tokens), 128, first.config.n_positions)].unsqueeze(0)
    return relative_max_gap(second(window).logits.float(), first(window).logits.float())


def rewrite_note(model_type: str, gap: float) -> dict:
    return {"from": model_type, "to": "opt", "max_output_gap": gap,
            "why": f"{NAMES.get(model_type, model_type)}'s Conv1D layers are written as nn.Linear (the same function "
                   "as an OPT model) so that compressed-tensors can hold them; the compressed folder loads as the OPT "
                   "class"}


def write_linear_folder(source: Path, target: Path, gpt2_model, check_tokens: torch.Tensor) -> dict:
    """Save the OPT rewrite of `gpt2_model` (a GPT-2 or GPT-1 causal LM loaded from `source`) as a folder, after
    checking on `check_tokens` that it computes the same logits. Returns what the job reports about it."""
    model = gpt2_as_opt(gpt2_model)
    gap = logit_gap(gpt2_model, model, check_tokens)
    if gap > MAX_OUTPUT_GAP:
        raise ValueError(f"rewriting this {NAMES[gpt2_model.config.model_type]} model's Conv1D layers as nn.Linear "
                         f"changed its logits by {gap:.2g} of their scale (allowed {MAX_OUTPUT_GAP}); its "
                         "configuration holds something the rewrite does not express")
    write_opt_folder(source, target, model)
    return rewrite_note(gpt2_model.config.model_type, gap)


def write_opt_folder(source: Path, target: Path, opt_model) -> None:
    """`opt_model` (a `gpt2_as_opt` rewrite of the model in `source`) saved as a folder with every other file of
    `source` (tokenizer, generation and sentence-transformers settings)."""
    target.mkdir(parents=True, exist_ok=True)
    copy_side_files(source, target)  # first: save_pretrained then writes its own config and generation settings
    opt_model.save_pretrained(target, safe_serialization=True)


@torch.no_grad()
def masked_output_gap(first, second, inputs: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Largest difference of two folder programs' outputs on `inputs` (input_ids, attention_mask), over the real
    tokens only where the output is per token ([batch, tokens, features], or a reader's [batch, 2, tokens] span
    logits), relative to the first's largest magnitude there."""
    expected, actual = first(*inputs).float(), second(*inputs).float()
    if expected.dim() == 3:
        mask = inputs[1].to(expected.dtype)
        mask = mask.unsqueeze(1) if getattr(first, "output", None) == "span_logits" else mask.unsqueeze(-1)
        expected, actual = expected * mask, actual * mask
    return relative_max_gap(actual, expected)
