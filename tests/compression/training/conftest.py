import torch

# Tiny models on 2 shared cores: a second intra-op thread only adds spin-waiting (10x slower under load).
torch.set_num_threads(1)
