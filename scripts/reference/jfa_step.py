"""The JFA training step written as a PyTorch user would: transformers' model (AutoModelForCausalLM: Llama,
or Qwen2, Qwen3, Mistral, Phi-3 by the config's model_type) + a PEFT LoRA
adapter, the reference forward under `model.disable_adapter()` and no_grad (flashback micro-batches
only), symmetric KL on flashbacks, the latent-task mixture on one layer's o_proj through a forward
hook, per-micro-batch gradients combined by PCGrad, clip_grad_norm_, torch.optim.AdamW.
The other side of `npm run bench:step` and of test/20.step-reference.test.ts; the start state comes
from jfa-torch's side as files, so that both start identical.

On a GPU (setup's "device"), the model, adapter, pool and batches live there, the step is timed between
two synchronisations, its peak is the caching allocator's (max_memory_allocated), and the phase split
synchronises at each boundary. In bfloat16 (setup's "dtype") the base weights are bf16, PEFT keeps its
default fp32 adapter weights (autocast_adapter_dtype), the pool stays in the dtype it was saved in, and
the losses are computed on logits upcast to float32, as transformers' own loss does.

JSON lines on stdin, one JSON line answered per command:
  {"cmd": "threads", "n": N}
  {"cmd": "create", "dir": DIR, "config": {...}, "seed": S, "device": D, "dtype": "bfloat16"|"float32"}
        writes a checkpoint of the config's model_type (llama, qwen2, qwen3, mistral, phi3) with random weights
        (normal, std 0.02; norms 1; Qwen2's q/k/v biases 0) drawn on D, under that family's tensor names
        (Phi-3's fused qkv_proj and gate_up_proj): DIR/config.json and DIR/model.safetensors; answers {"parameters", "ms"}
  {"cmd": "setup", "model": DIR, "adapter": DIR, "pool": FILE|null, "layer": L, "lr", "betas", "eps",
   "weight_decay", "alpha", "max_grad_norm", "kl", "reduction", "pcgrad", "device": "cpu"|"cuda[:N]",
   "dtype": "float32"|"bfloat16"}
        pool FILE holds A (P, r, in) and B (P, out, r); answers {"rssMiB", "trainable", "trainableDtypes", "gpu": name|null,
        "gpuAllocatedMiB": the allocator's bytes after the setup, or null}
  {"cmd": "batches", "name": N, "file": FILE, "kinds": ["new" | "flashback", ...]}
        FILE holds mb<i>.ids (b, t) int64, mb<i>.mask (b, t), mb<i>.targets (new: next token or -100),
        and with a pool mb<i>.indices (b, k) int64, mb<i>.weights (b, k)
  {"cmd": "step", "batches": N, "orders": [[...]] | null, "lr": x|null}
        one optimizer step; answers {"ms", "sft", "divergence", "gradNorm", "conflicts", "split", "rssMiB", "hwmMiB",
        "gpuPeakMiB", "gpuBaseMiB"} (hwmMiB: the peak RSS of this step; gpu*: the allocator's peak during the step
        and what was allocated before it, null on the CPU; split: ms in forward, refForward, loss, backward,
        gradCopy, projection, clip, optimizer)
  {"cmd": "save", "file": FILE}     LoRA factors under PEFT's saved names, and pool.A / pool.B
  {"cmd": "matmul", "n": N, "repeats": R, "dtype": ..., "device": ...}   {"ms"}: the median of R (N x N) @ (N x N)
        (fp32 on the CPU by default; on CUDA each between two synchronisations)
"""
import gc
import json
import os
import time

import torch
import torch.nn.functional as F
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from procfs import reset_peak, rss
from serve import serve


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def create(c):
    """A checkpoint of c["config"]'s family and shape with random weights, drawn on c["device"] in c["dtype"]."""
    t0 = time.perf_counter()
    cfg, device, dtype = c["config"], torch.device(c.get("device", "cpu")), DTYPES[c.get("dtype", "bfloat16")]
    g = torch.Generator(device=device).manual_seed(c.get("seed", 0))
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * hd

    def normal(*shape):
        return (torch.randn(*shape, generator=g, device=device, dtype=torch.float32) * 0.02).to(dtype)

    def ones(n):
        return torch.ones(n, device=device, dtype=dtype)

    family = cfg.get("model_type", "llama")
    w = {"model.embed_tokens.weight": normal(cfg["vocab_size"], h), "model.norm.weight": ones(h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        w.update({p + "self_attn.o_proj.weight": normal(h, q), p + "mlp.down_proj.weight": normal(h, inter),
                  p + "input_layernorm.weight": ones(h), p + "post_attention_layernorm.weight": ones(h)})
        if family == "phi3":  # fused, q rows then k then v; gate rows then up
            w.update({p + "self_attn.qkv_proj.weight": normal(q + 2 * kv, h), p + "mlp.gate_up_proj.weight": normal(2 * inter, h)})
        else:
            w.update({p + "self_attn.q_proj.weight": normal(q, h), p + "self_attn.k_proj.weight": normal(kv, h),
                      p + "self_attn.v_proj.weight": normal(kv, h), p + "mlp.gate_proj.weight": normal(inter, h),
                      p + "mlp.up_proj.weight": normal(inter, h)})
        if family == "qwen2":
            w.update({p + "self_attn.q_proj.bias": torch.zeros(q, device=device, dtype=dtype),
                      p + "self_attn.k_proj.bias": torch.zeros(kv, device=device, dtype=dtype),
                      p + "self_attn.v_proj.bias": torch.zeros(kv, device=device, dtype=dtype)})
        if family == "qwen3":
            w.update({p + "self_attn.q_norm.weight": ones(hd), p + "self_attn.k_norm.weight": ones(hd)})
    if not cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = normal(cfg["vocab_size"], h)
    os.makedirs(c["dir"], exist_ok=True)
    save_file({k: v.cpu() for k, v in w.items()}, os.path.join(c["dir"], "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(c["dir"], "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    n = sum(v.numel() for v in w.values())
    del w
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"parameters": n, "ms": (time.perf_counter() - t0) * 1e3}


class JfaStep:
    def __init__(self, c):
        self.device = torch.device(c.get("device", "cpu"))
        self.dtype = DTYPES[c.get("dtype", "float32")]
        base = AutoModelForCausalLM.from_pretrained(c["model"], dtype=self.dtype).to(self.device)
        self.model = PeftModel.from_pretrained(base, c["adapter"], is_trainable=True)
        self.model.to(self.device)  # the device only: PEFT chose the adapters' dtype
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.latent = None  # (indices, weights) of the micro-batch being run; None: no latent tasks
        self.pool = None
        if c.get("pool"):
            pool = load_file(c["pool"], device=str(self.device))
            self.pool = torch.nn.ParameterDict({"A": torch.nn.Parameter(pool["A"]), "B": torch.nn.Parameter(pool["B"])})
            o_proj = self.model.get_base_model().model.layers[c["layer"]].self_attn.o_proj
            o_proj.register_forward_hook(self.add_latent)
            self.params += [self.pool["A"], self.pool["B"]]
        # fused: torch's one-kernel AdamW, ~20x faster than the default per-tensor loop on the CPU
        self.optimizer = torch.optim.AdamW(self.params, lr=c["lr"], betas=tuple(c.get("betas", (0.9, 0.999))), eps=c.get("eps", 1e-8),
                                           weight_decay=c.get("weight_decay", 0.0), fused=True)
        self.alpha = c.get("alpha", 1.0)
        self.max_grad_norm = c.get("max_grad_norm", 1.0)
        self.kl = c.get("kl", "symmetric")
        self.reduction = c.get("reduction", "mean")
        self.pcgrad = c.get("pcgrad", True)

    def add_latent(self, module, inputs, output):
        """o_proj's output + sum_j w_bj (x_b A_j^T) B_j^T for each sample b's retrieved tasks j."""
        if self.latent is None:
            return output
        idx, w = self.latent
        A, B = self.pool["A"], self.pool["B"]  # in the pool's dtype (float32 beside a bf16 model: cast in, cast out)
        h = torch.einsum("bti,bkri->btkr", inputs[0].to(A.dtype), A[idx])
        return output + torch.einsum("btkr,bkor,bk->bto", h, B[idx], w.to(A.dtype)).to(output.dtype)

    def logits(self, mb):
        return self.model(input_ids=mb["ids"], attention_mask=mb["mask"], use_cache=False).logits

    def divergence(self, cur, ref, mask):
        lp, lq = F.log_softmax(cur.float(), -1), F.log_softmax(ref.float(), -1)
        if self.kl == "symmetric":  # KL(q||p) + KL(p||q) = sum (p - q)(log p - log q)
            per_token = ((lp.exp() - lq.exp()) * (lp - lq)).sum(-1)
        elif self.kl == "forward":  # KL(ref || cur)
            per_token = F.kl_div(lp, lq, log_target=True, reduction="none").sum(-1)
        else:
            per_token = F.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)
        m = mask.to(per_token.dtype)
        total = (per_token * m).sum()
        return total / m.sum().clamp(min=1) if self.reduction == "mean" else total

    def step(self, micro, orders, lr):
        if lr is not None:
            for g in self.optimizer.param_groups:
                g["lr"] = lr
        split = dict.fromkeys(["forward", "refForward", "loss", "backward", "gradCopy", "projection", "clip", "optimizer"], 0.0)
        clock = [time.perf_counter()]

        def lap(key):
            sync(self.device)  # on a GPU the phases end when their kernels do
            now = time.perf_counter()
            split[key] += (now - clock[0]) * 1e3
            clock[0] = now

        grads, sft, div, n_sft, n_div = [], 0.0, 0.0, 0, 0
        for mb in micro:
            self.latent = mb.get("latent")
            logits = self.logits(mb)
            lap("forward")
            if mb["kind"] == "new":
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), mb["targets"].reshape(-1), ignore_index=-100)
                sft += loss.item()
                n_sft += 1
                lap("loss")
            else:
                self.latent = None  # the reference: adapters and latent tasks off
                with torch.no_grad(), self.model.disable_adapter():
                    ref = self.logits(mb)
                lap("refForward")
                d = self.divergence(logits, ref, mb["mask"])
                div += d.item()
                n_div += 1
                loss = self.alpha * d
                lap("loss")
            loss.backward()
            del logits, loss
            lap("backward")
            grads.append(torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in self.params]))
            self.optimizer.zero_grad(set_to_none=True)
            lap("gradCopy")
        self.latent = None

        conflicts = 0
        if self.pcgrad and len(grads) > 1:
            projected = []
            for i, order in enumerate(orders):
                g = grads[i].clone()
                for j in order:
                    dot = torch.dot(g, grads[j])
                    if dot < 0:
                        g -= dot / grads[j].dot(grads[j]) * grads[j]
                        conflicts += 1
                projected.append(g)
            merged = torch.stack(projected).mean(0)
        else:
            merged = torch.stack(grads).mean(0)
        start = 0
        for p in self.params:
            p.grad = merged[start : start + p.numel()].view_as(p).to(p.dtype).clone()
            start += p.numel()
        del grads, merged
        lap("projection")
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        lap("clip")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        lap("optimizer")
        return {"sft": sft / max(n_sft, 1), "divergence": div / max(n_div, 1), "gradNorm": float(norm), "conflicts": conflicts, "split": split}

    def save(self, file):
        out = {n.replace(".default", ""): p.detach().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
        if self.pool is not None:
            out["pool.A"] = self.pool["A"].detach().contiguous()
            out["pool.B"] = self.pool["B"].detach().contiguous()
        save_file(out, file)


def load_batches(file, kinds, device="cpu"):
    t = load_file(file, device=str(device))
    micro = []
    for i, kind in enumerate(kinds):
        mb = {"kind": kind, "ids": t[f"mb{i}.ids"].long(), "mask": t[f"mb{i}.mask"].long()}
        if kind == "new":
            mb["targets"] = t[f"mb{i}.targets"].long()
        if f"mb{i}.indices" in t:
            mb["latent"] = (t[f"mb{i}.indices"].long(), t[f"mb{i}.weights"].float())
        micro.append(mb)
    return micro


def main():
    trainer, batches = None, {}

    def setup(c):
        nonlocal trainer
        trainer = None
        batches.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        trainer = JfaStep(c)
        cuda = trainer.device.type == "cuda"
        return {"rssMiB": rss("VmRSS"), "trainable": sum(p.numel() for p in trainer.params),
                "trainableDtypes": sorted({str(p.dtype).replace("torch.", "") for p in trainer.params}),
                "gpu": torch.cuda.get_device_name(trainer.device) if cuda else None,
                "gpuAllocatedMiB": torch.cuda.memory_allocated(trainer.device) / 2**20 if cuda else None}

    def add_batches(c):
        batches[c["name"]] = load_batches(c["file"], c["kinds"], trainer.device if trainer else "cpu")
        return {"ok": True}

    def step(c):
        device = trainer.device
        cuda = device.type == "cuda"
        sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
        reset_peak()
        t = time.perf_counter()
        reply = trainer.step(batches[c["batches"]], c.get("orders"), c.get("lr"))
        sync(device)
        reply.update(ms=(time.perf_counter() - t) * 1e3, rssMiB=rss("VmRSS"), hwmMiB=rss("VmHWM"),
                     gpuPeakMiB=torch.cuda.max_memory_allocated(device) / 2**20 if cuda else None,
                     gpuBaseMiB=base / 2**20 if cuda else None)
        return reply

    def save(c):
        trainer.save(c["file"])
        return {"ok": True}

    def matmul(c):
        device, dtype = torch.device(c.get("device", "cpu")), DTYPES[c.get("dtype", "float32")]
        a = torch.randn(c["n"], c["n"]).to(device, dtype)
        b = torch.randn(c["n"], c["n"]).to(device, dtype)
        a @ b
        times = []
        for _ in range(c["repeats"]):
            sync(device)
            t = time.perf_counter()
            a @ b
            sync(device)
            times.append((time.perf_counter() - t) * 1e3)
        return {"ms": sorted(times)[len(times) // 2]}

    serve({"create": create, "setup": setup, "batches": add_batches, "step": step, "save": save, "matmul": matmul})


if __name__ == "__main__":
    main()
