"""Makes a tiny random-weight Qwen2 model around a tokenizer directory (for
scripts/trainer-recipes.sh): 16 layers (mlx-lm tunes 16 by default), hidden size 64, seeded, saved as
safetensors with the tokenizer and its chat template beside it.

    python tiny_model.py TOKENIZER_DIR OUT_DIR
"""
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

tok_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
tok = AutoTokenizer.from_pretrained(tok_dir)
torch.manual_seed(0)
config = Qwen2Config(
    vocab_size=len(tok),
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=16,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=True,
    bos_token_id=None,
    eos_token_id=tok.eos_token_id,
    pad_token_id=tok.pad_token_id,
)
model = Qwen2ForCausalLM(config)
model.save_pretrained(out, safe_serialization=True)
tok.save_pretrained(out)
for f in tok_dir.iterdir():
    if f.name == "chat_template.jinja":
        shutil.copy(f, out / f.name)
print(f"tiny model: {sum(p.numel() for p in model.parameters())} parameters, vocab {len(tok)}")
