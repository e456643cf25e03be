"""transformers + PEFT references for the model tests. One JSON spec in, JSON (and files) out.

python model_reference.py SPEC_JSON, where spec["op"] is one of:
  generate:      greedy transformers generate on spec["model"] (+ optional spec["adapter"]) for
                 left-padded spec["ids"]/spec["mask"]; prints {"tokens": [[...]]}
  make_adapter:  a PEFT LoRA adapter on spec["model"] with random (nonzero) factors, saved to spec["out"]
  adapter_logits: logits of spec["model"] with the PEFT adapter spec["adapter"] for spec["ids"],
                 saved as "logits" in spec["out"]
  hf_load:       AutoTokenizer + AutoModelForCausalLM on spec["model"]; prints the token ids of
                 spec["text"] and saves their logits to spec["out"]
"""
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def model_with_adapter(spec):
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32).eval()
    if spec.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec["adapter"]).eval()
    return model


def main():
    spec = json.loads(sys.argv[1])
    torch.manual_seed(spec.get("seed", 0))
    op = spec["op"]
    if op == "generate":
        model = model_with_adapter(spec)
        ids = torch.tensor(spec["ids"])
        mask = torch.tensor(spec["mask"])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=spec["max_new_tokens"], do_sample=False,
                                 pad_token_id=spec.get("pad", 0), eos_token_id=spec.get("eos"))
        print(json.dumps({"tokens": out[:, ids.shape[1]:].tolist()}))
    elif op == "make_adapter":
        from peft import LoraConfig, get_peft_model

        base = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
        config = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"], lora_dropout=0.0,
                            init_lora_weights=False, task_type="CAUSAL_LM")
        model = get_peft_model(base, config)
        model.save_pretrained(spec["out"])
        print(json.dumps({"ok": True}))
    elif op == "adapter_logits":
        model = model_with_adapter(spec)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor(spec["ids"])).logits
        save_file({"logits": logits.contiguous()}, spec["out"])
        print(json.dumps({"ok": True}))
    elif op == "hf_load":
        tokenizer = AutoTokenizer.from_pretrained(spec["model"])
        model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32).eval()
        ids = tokenizer(spec["text"], return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        save_file({"logits": logits.contiguous()}, spec["out"])
        print(json.dumps({"ids": ids[0].tolist(), "decoded": tokenizer.decode(ids[0], skip_special_tokens=True),
                          "chat": tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)}))
    else:
        raise SystemExit(f"unknown op {op}")


if __name__ == "__main__":
    main()
