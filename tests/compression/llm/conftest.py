import pytest
import torch


def tiny_llama(seed: int = 0, layers: int = 2, tie: bool = False, hidden: int = 128, kv_heads: int = 2):
    """A Llama-architecture causal LM of a few hundred thousand parameters, with a few input channels made
    large (as trained LLMs have) so activation-aware methods have something to find."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=256, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=128,
                         tie_word_embeddings=tie)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for block in model.model.layers:
            block.input_layernorm.weight[:4] *= 12
            block.post_attention_layernorm.weight[-3:] *= 8
    return model


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    tiny_llama().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def calibration_tokens():
    return torch.randint(0, 256, (16, 32), generator=torch.Generator().manual_seed(1))
