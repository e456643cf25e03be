"""transformers + PEFT references for the model tests. One JSON spec in, JSON (and files) out.

python model_reference.py SPEC_JSON, where spec["op"] is one of:
  generate:      greedy transformers generate on spec["model"] (+ optional spec["adapter"]) for
                 left-padded spec["ids"]/spec["mask"]; prints {"tokens": [[...]]}
  make_adapter:  a PEFT LoRA adapter on spec["model"] with random (nonzero) factors, saved to spec["out"]
  adapter_logits: logits of spec["model"] with the PEFT adapter spec["adapter"] for spec["ids"],
                 saved as "logits" in spec["out"]
  loss_grads:    token cross-entropy (next-token, mean) of spec["ids"] under spec["model"] with the PEFT
                 adapter spec["adapter"], and optionally the latent pool in spec["pool"] (safetensors
                 with A, B, indices, weights) on layer spec["layer"]'s o_proj through a forward hook;
                 saves "loss", the logits and every LoRA (and pool) gradient to spec["out"]
  hf_load:       AutoTokenizer + AutoModelForCausalLM on spec["model"]; prints the token ids of
                 spec["text"] and saves their logits to spec["out"]
"""
import json
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer


def model_with_adapter(spec, trainable=False):
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32).eval()
    if spec.get("adapter"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, spec["adapter"], is_trainable=trainable).eval()
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
    elif op == "loss_grads":
        from safetensors.torch import load_file

        model = model_with_adapter(spec, trainable=True)
        out = {}
        if spec.get("pool"):
            pool = load_file(spec["pool"])
            A = pool["A"].clone().requires_grad_(True)
            B = pool["B"].clone().requires_grad_(True)
            idx, w = pool["indices"].long(), pool["weights"]

            def add_latent(module, inputs, output):
                h = torch.einsum("bti,bkri->btkr", inputs[0], A[idx])
                return output + torch.einsum("btkr,bkor,bk->bto", h, B[idx], w)

            layer = model.get_base_model().model.layers[spec["layer"]]
            layer.self_attn.o_proj.register_forward_hook(add_latent)
        ids = torch.tensor(spec["ids"])
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        loss.backward()
        out["loss"] = loss.detach().reshape(1)
        out["logits"] = logits.detach().contiguous()
        for name, p in model.named_parameters():
            if p.grad is not None:
                out[name.replace(".default", "")] = p.grad.contiguous()
        if spec.get("pool"):
            out["pool.A"] = A.grad
            out["pool.B"] = B.grad
        save_file(out, spec["out"])
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
