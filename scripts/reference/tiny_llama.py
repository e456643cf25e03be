"""Creates a tiny random Llama with transformers, saves it in Hugging Face layout, and writes the
reference logits for given token ids: the fixture of the model parity tests.

python tiny_llama.py OUT_DIR SPEC_JSON
SPEC_JSON: {"config": {LlamaConfig fields}, "seed": int, "ids": [[...]], "mask": [[...]], "shard": bool}
Writes OUT_DIR/{config.json, model.safetensors or shards} and OUT_DIR/reference.safetensors with
"logits" (b, t, vocab) and "hidden" (b, t, hidden), computed with the attention mask given.
"""
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    out_dir, spec = sys.argv[1], json.loads(sys.argv[2])
    torch.manual_seed(spec.get("seed", 0))
    config = LlamaConfig(**spec["config"])
    model = LlamaForCausalLM(config).eval()
    # Random norms too, so that a mistake in a norm's weight shows in the logits.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="20KB" if spec.get("shard") else "10GB")
    ids = torch.tensor(spec["ids"], dtype=torch.long)
    mask = torch.tensor(spec["mask"], dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    save_file({"logits": out.logits.float().contiguous(), "hidden": out.hidden_states[-1].float().contiguous()}, f"{out_dir}/reference.safetensors")


if __name__ == "__main__":
    main()
