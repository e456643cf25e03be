"""The regularising methods' steps written as a PyTorch user would, for test/47: transformers' model + a
PEFT LoRA adapter + torch.optim.AdamW (jfa_step.py's JfaStep), with
  ewc:    lambda * sum over LoRA modules of (F * (scaling * B @ A)^2).sum(), by autograd on A and B;
  o-lora: lambda * sum over LoRA modules of ((A @ A_old^T)^2).sum();
  pace:   a forward hook on each module's lora_B multiplies its output by (1 + sigma * z), z drawn by
          torch.randn(shape, generator=torch.Generator().manual_seed(seed)) with jfa-torch's seed
          arithmetic (noise_seed in native/core/llama.h), so both sides draw the same noise; the loss
          is the cross-entropy of one perturbed pass plus lambda * the mean over real tokens of
          ||h1 - h2||^2 between the final hidden states of two passes;
and EWC's Fisher of the LoRA modules' base weights (adapters off): mean over samples of the squared
gradient of the scored tokens' summed log-likelihood.

One JSON job on stdin:
  {"threads", "model", "adapter", "lr", "betas", "eps", "weight_decay", "max_grad_norm",
   "batches": FILE (mb<i>.ids/.mask/.targets, all new-task), "count": N,
   "steps": [{"lr", "seed"}], "ewc": {"lambda", "fisher": FILE} | null, "olora": {"lambda", "previous": FILE} | null,
   "pace": {"sigma", "lambda"} | null, "save": FILE,
   "fisher": {"file": FILE (ids, mask, targets), "save": FILE} | null}
Answers one JSON line per step: {"sft", "penalty", "gradNorm"}.
"""
import json
import re
import sys

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as LoraLinear
from safetensors.torch import load_file, save_file

from jfa_step import JfaStep, load_batches

M = 2**64 - 1
SLOTS = {"q_proj": 0, "k_proj": 1, "v_proj": 2, "o_proj": 3, "gate_proj": 4, "up_proj": 5, "down_proj": 6, "qkv_proj": 7, "gate_up_proj": 8}


def noise_seed(seed, value):
    return ((seed * 0x100000001B3) & M) ^ ((value + 0x9E3779B97F4A7C15) & M)


class RegStep(JfaStep):
    def __init__(self, c):
        super().__init__({**c, "pool": None, "pcgrad": False})
        self.modules = {n: m for n, m in self.model.named_modules() if isinstance(m, LoraLinear)}
        self.noise = None  # (sigma, seed) of the pass being run; None: no noise
        for name, m in self.modules.items():
            layer = int(re.search(r"layers\.(\d+)\.", name).group(1))
            index = layer * 16 + SLOTS[name.rsplit(".", 1)[1]]
            m.lora_B["default"].register_forward_hook(lambda mod, inp, out, index=index: self.perturb(out, index))

    def perturb(self, out, index):
        if self.noise is None:
            return out
        sigma, seed = self.noise
        g = torch.Generator().manual_seed(noise_seed(seed, index))
        return out * (1 + sigma * torch.randn(out.shape, generator=g))

    def hidden(self, mb):
        return self.model.get_base_model().model(input_ids=mb["ids"], attention_mask=mb["mask"], use_cache=False).last_hidden_state

    def factors(self, name):
        m = self.modules[name]
        return m.lora_A["default"].weight, m.lora_B["default"].weight, m.scaling["default"]

    def run(self, micro, lr, seed, ewc, olora, pace):
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        head = self.model.get_base_model().lm_head
        grads, sft, consistency = [], 0.0, 0.0
        for i, mb in enumerate(micro):
            if pace:
                self.noise = (pace["sigma"], noise_seed(noise_seed(seed, i), 0))
            h = self.hidden(mb)
            logits = head(h)
            ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), mb["targets"].reshape(-1), ignore_index=-100)
            loss = ce
            if pace and pace["lambda"] > 0:
                self.noise = (pace["sigma"], noise_seed(noise_seed(seed, i), 1))
                other = self.hidden(mb)
                real = mb["mask"].float()
                c = (((h - other) ** 2).sum(-1) * real).sum() / real.sum().clamp(min=1) * pace["lambda"]
                consistency += c.item()
                loss = loss + c
            self.noise = None
            sft += ce.item()
            loss.backward()
            grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self.params]))
            self.optimizer.zero_grad(set_to_none=True)
        merged = torch.stack(grads).mean(0)
        start = 0
        for p in self.params:
            p.grad = merged[start : start + p.numel()].view_as(p).clone()
            start += p.numel()
        penalty = 0.0
        if ewc or olora:
            total = 0
            for name in self.modules:
                A, B, s = self.factors(name)
                if ewc:
                    total = total + ewc["lambda"] * (ewc["fisher"][f"{name}.fisher"] * (s * B @ A) ** 2).sum()
                if olora and olora["previous"][name].shape[0] > 0:
                    total = total + olora["lambda"] * ((A @ olora["previous"][name].T) ** 2).sum()
            total.backward()  # onto the micro-batches' mean gradient, before clipping
            penalty = total.item()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"sft": sft / len(micro), "penalty": consistency / len(micro) + penalty, "gradNorm": float(norm)}

    def fisher(self, file):
        t = load_file(file)
        ids, mask, targets = t["ids"].long(), t["mask"].long(), t["targets"].long()
        weights = {name: m.base_layer.weight for name, m in self.modules.items()}
        for w in weights.values():
            w.requires_grad_(True)
        out = {name: torch.zeros_like(w) for name, w in weights.items()}
        with self.model.disable_adapter():
            for i in range(ids.shape[0]):
                keep = targets[i] != -100
                if not keep.any():
                    continue
                logits = self.model(input_ids=ids[i : i + 1], attention_mask=mask[i : i + 1], use_cache=False).logits[0]
                loglik = F.log_softmax(logits[keep].float(), -1).gather(1, targets[i][keep].unsqueeze(1)).sum()
                for (name, w), g in zip(weights.items(), torch.autograd.grad(loglik, list(weights.values()))):
                    out[name] += g.square()
        for w in weights.values():
            w.requires_grad_(False)
        return {f"{name}.fisher": f / ids.shape[0] for name, f in out.items()}


def main():
    c = json.loads(sys.stdin.read())
    torch.set_num_threads(c.get("threads", 1))
    trainer = RegStep(c)
    if c.get("fisher"):
        save_file(trainer.fisher(c["fisher"]["file"]), c["fisher"]["save"])
    micro = load_batches(c["batches"], ["new"] * c["count"])
    ewc = c.get("ewc") and {"lambda": c["ewc"]["lambda"], "fisher": load_file(c["ewc"]["fisher"])}
    olora = c.get("olora") and {"lambda": c["olora"]["lambda"], "previous": {k: v for k, v in load_file(c["olora"]["previous"]).items()}}
    for s in c["steps"]:
        print(json.dumps(trainer.run(micro, s["lr"], s["seed"], ewc, olora, c.get("pace"))), flush=True)
    trainer.save(c["save"])


if __name__ == "__main__":
    main()
