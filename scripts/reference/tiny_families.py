"""Tiny random models of the Llama-like families (Qwen2, Qwen3, Mistral, Phi-3, Gemma 2, Gemma 3) made by transformers,
with the references the family parity test (test/41.families.test.ts) compares against. One process
for every family: importing torch, transformers and PEFT is most of the cost.

python tiny_families.py OUT_DIR SPEC_JSON
python tiny_families.py models OUT_DIR '{"families": {name: {"model_type", "config", "seed"}}}'
python tiny_families.py templates '{"dirs": [...], "conversations": [{"messages", "add_generation_prompt"}]}'
python tiny_families.py logits '{"runs": {key: {"model", "adapter"?, "ids", "mask"}}, "out": file}'
SPEC_JSON: {"families": {name: {"model_type", "config", "seed", "targets", "ablation"}}, "ids_right",
"mask_right", "ids_left", "mask_left", "new_tokens", "r", "alpha", "lr", "weight_decay", "eps"}
For each family, OUT_DIR/name holds the model (config.json, model.safetensors), adapter/ (a PEFT LoRA
with nonzero factors on `targets`) and reference.safetensors with:
  logits_right, logits_left   the base model on the right- and left-padded batches
  logits_right_bf16           the base model in bfloat16 on the right-padded batch
  tokens, tokens_adapter      greedy generate of new_tokens on the left-padded prompts, base and with the adapter
  tokens_penalty              the same with the family's `penalty` as repetition_penalty, where it has one
  logits_adapter              the adapted model on the left-padded batch
  loss, grad.<key>, step.<key>  one training step of the adapter on the right-padded batch (mean next-token
                              cross-entropy over real targets; AdamW): the loss, every LoRA gradient and
                              every LoRA factor after the step, under PEFT's key names
  logits_ablation             the same weights without the family's detail (`ablation`), on the right-padded
                              batch's first `ablation_len` positions: what a model that skipped it would compute
`models` writes the models alone (OUT_DIR/name: config.json, model.safetensors), the same way, without
references or adapters: test/42.families-cli.test.ts trains, scores and generates with them.
"""
import copy
import json
import sys

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM


def ablated_logits(model, family, ids, mask):
    kind = family["ablation"]
    if kind == "no_bias":  # Qwen2 without its q/k/v biases
        with torch.no_grad():
            saved = {n: p.clone() for n, p in model.named_parameters() if n.endswith(".bias")}
            for n, p in model.named_parameters():
                if n.endswith(".bias"):
                    p.zero_()
            out = model(input_ids=ids, attention_mask=mask).logits
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
        return out
    if kind == "no_qk_norm":  # Qwen3's weights in a Llama, which has no q/k norm
        c = model.config
        llama = LlamaForCausalLM(LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
                                             num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
                                             num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim, rms_norm_eps=c.rms_norm_eps,
                                             tie_word_embeddings=c.tie_word_embeddings, rope_theta=c.rope_parameters["rope_theta"])).eval()
        state = {k: v for k, v in model.state_dict().items() if "q_norm" not in k and "k_norm" not in k}
        llama.load_state_dict(state, strict=False)
        with torch.no_grad():
            return llama(input_ids=ids, attention_mask=mask).logits
    if kind == "no_norm_offset":  # Gemma's norms scaling by w, as Llama's, instead of 1 + w
        with torch.no_grad():
            saved = {n: p.clone() for n, p in model.named_parameters() if "norm" in n}
            for n, p in model.named_parameters():
                if n in saved:
                    p.sub_(1.0)  # (1 + (w - 1)) = w
            out = model(input_ids=ids, attention_mask=mask).logits
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
        return out
    if kind == "no_softcap":  # Gemma 2 without its attention and final logit soft-caps
        layers = model.model.layers
        caps = (model.config.final_logit_softcapping, [l.self_attn.attn_logit_softcapping for l in layers])
        model.config.final_logit_softcapping = None
        for l in layers:
            l.self_attn.attn_logit_softcapping = None
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask).logits
        model.config.final_logit_softcapping = caps[0]
        for l, cap in zip(layers, caps[1]):
            l.self_attn.attn_logit_softcapping = cap
        return out
    if kind == "no_window":  # Mistral / Phi-3 attending to every earlier key
        model.config.sliding_window = None
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask).logits
        model.config.sliding_window = family["config"]["sliding_window"]
        return out
    raise SystemExit(f"unknown ablation {kind}")


def attention(config):
    """transformers' eager attention where scores are soft-capped: its SDPA path (the default) skips
    attn_logit_softcapping without a word, and Gemma 2's reference is the capped model."""
    return {"attn_implementation": "eager"} if getattr(config, "attn_logit_softcapping", None) else {}


def make_model(family):
    """A random model of the family, with random norms and biases (transformers starts them at one and
    zero), so that a mistake in either shows."""
    torch.manual_seed(family["seed"])
    config = AutoConfig.for_model(family["model_type"], **family["config"])
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, **attention(config)).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5)
            elif n.endswith(".bias"):
                p.normal_(0.0, 0.5)
    return model


def models(out_dir, spec):
    for name, family in spec["families"].items():
        make_model(family).save_pretrained(f"{out_dir}/{name}")
    print(json.dumps({"ok": True}))


def logits_of(spec):
    """Logits of saved models (optionally with a PEFT adapter) on a batch: {key: logits} in spec["out"]."""
    from peft import PeftModel

    out = {}
    for key, run in spec["runs"].items():
        model = AutoModelForCausalLM.from_pretrained(run["model"], dtype=torch.float32, **attention(AutoConfig.from_pretrained(run["model"]))).eval()
        if run.get("adapter"):
            model = PeftModel.from_pretrained(model, run["adapter"]).eval()
        with torch.no_grad():
            out[key] = model(input_ids=torch.tensor(run["ids"]), attention_mask=torch.tensor(run["mask"])).logits.contiguous()
    save_file(out, spec["out"])
    print(json.dumps({"ok": True}))


def templates(spec):
    """transformers' apply_chat_template of each tokenizer directory on each conversation: {dir: [text or error]}."""
    from transformers import AutoTokenizer

    out = {}
    for d in spec["dirs"]:
        tok = AutoTokenizer.from_pretrained(d)
        texts = []
        for conv in spec["conversations"]:
            try:
                texts.append(tok.apply_chat_template(conv["messages"], tokenize=False, add_generation_prompt=conv["add_generation_prompt"]))
            except Exception as e:  # raise_exception in a template: compared as "error"
                texts.append({"error": str(e)})
        out[d] = texts
    print(json.dumps(out))


def main():
    if sys.argv[1] == "templates":
        return templates(json.loads(sys.argv[2]))
    if sys.argv[1] == "logits":
        return logits_of(json.loads(sys.argv[2]))
    if sys.argv[1] == "models":
        return models(sys.argv[2], json.loads(sys.argv[3]))
    out_dir, spec = sys.argv[1], json.loads(sys.argv[2])
    ids_r, mask_r = torch.tensor(spec["ids_right"]), torch.tensor(spec["mask_right"])
    ids_l, mask_l = torch.tensor(spec["ids_left"]), torch.tensor(spec["mask_left"])
    for name, family in spec["families"].items():
        path = f"{out_dir}/{name}"
        model = make_model(family)
        model.save_pretrained(path)
        ref = {}
        gen = dict(max_new_tokens=spec["new_tokens"], do_sample=False, pad_token_id=0)
        with torch.no_grad():
            ref["logits_right"] = model(input_ids=ids_r, attention_mask=mask_r).logits
            ref["logits_left"] = model(input_ids=ids_l, attention_mask=mask_l).logits
            ref["tokens"] = model.generate(input_ids=ids_l, attention_mask=mask_l, **gen)[:, ids_l.shape[1]:]
            if family.get("penalty"):  # the head's soft-cap changes which token a penalty makes win
                ref["tokens_penalty"] = model.generate(input_ids=ids_l, attention_mask=mask_l, repetition_penalty=family["penalty"], **gen)[:, ids_l.shape[1]:]
            ref["logits_right_bf16"] = copy.deepcopy(model).to(torch.bfloat16)(input_ids=ids_r, attention_mask=mask_r).logits
        # The first `ablation_len` positions only, where that detail is the only difference.
        n = family.get("ablation_len", ids_r.shape[1])
        ref["logits_ablation"] = ablated_logits(model, family, ids_r[:, :n], mask_r[:, :n])

        lora = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=family["targets"], lora_dropout=0.0,
                          init_lora_weights=False, task_type="CAUSAL_LM")
        peft_model = get_peft_model(model, lora)
        peft_model.save_pretrained(f"{path}/adapter")
        peft_model.eval()
        with torch.no_grad():
            ref["logits_adapter"] = peft_model(input_ids=ids_l, attention_mask=mask_l).logits
            ref["tokens_adapter"] = peft_model.generate(input_ids=ids_l, attention_mask=mask_l, **gen)[:, ids_l.shape[1]:]

        params = {n.replace(".default", ""): p for n, p in peft_model.named_parameters() if p.requires_grad}
        optimizer = torch.optim.AdamW(list(params.values()), lr=spec["lr"], weight_decay=spec["weight_decay"], eps=spec["eps"])
        logits = peft_model(input_ids=ids_r, attention_mask=mask_r).logits
        targets = torch.where(mask_r[:, 1:].bool(), ids_r[:, 1:], torch.full_like(ids_r[:, 1:], -100))
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        loss.backward()
        ref["loss"] = loss.detach().reshape(1)
        for n, p in params.items():
            ref[f"grad.{n}"] = p.grad.clone()
        optimizer.step()
        for n, p in params.items():
            ref[f"step.{n}"] = p.detach().clone()
        save_file({k: v.float().contiguous() if v.is_floating_point() else v.contiguous() for k, v in ref.items()}, f"{path}/reference.safetensors")
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    main()
