"""PyTorch reference implementations of the jfa-torch kernels, written as a PyTorch user would.

Used by the parity tests: `python kernel_reference.py cases.json inputs.safetensors outputs.safetensors`.
Each case names an op, its inputs (keys in inputs.safetensors) and parameters; the outputs and the
gradients of sum(output * upstream) with respect to every differentiable input are written back
under "<case>.<name>".
"""
import json
import sys

import torch
import torch.nn.functional as F

from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}


class OneLinear(torch.nn.Module):
    def __init__(self, in_f, out_f, bias, dtype):
        super().__init__()
        self.proj = torch.nn.Linear(in_f, out_f, bias=bias, dtype=dtype)

    def forward(self, x):
        return self.proj(x)


def lora(t, p):
    """PEFT's LoRA (get_peft_model on one nn.Linear), with the given weights and factors."""
    x, W, A, B = t["x"], t["W"], t["A"], t["B"]
    out_f, in_f = W.shape
    r = A.shape[0]
    model = OneLinear(in_f, out_f, "bias" in t, W.dtype)
    with torch.no_grad():
        model.proj.weight.copy_(W)
        if "bias" in t:
            model.proj.bias.copy_(t["bias"])
    config = LoraConfig(r=r, lora_alpha=p["scale"] * r, lora_dropout=0.0, target_modules=["proj"])
    peft_model = get_peft_model(model, config)
    layer = peft_model.base_model.model.proj
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(A)
        layer.lora_B["default"].weight.copy_(B)
    x = x.clone().requires_grad_(True)
    y = peft_model(x)
    (y * t["upstream"]).sum().backward()
    return {
        "y": y.detach(),
        "grad.x": x.grad,
        "grad.A": layer.lora_A["default"].weight.grad,
        "grad.B": layer.lora_B["default"].weight.grad,
    }


def divergence(t, p):
    cur = t["cur"].clone().requires_grad_(True)
    temp = p.get("temperature", 1.0)
    lp = F.log_softmax(cur.float() / temp, dim=-1)
    lq = F.log_softmax(t["ref"].float() / temp, dim=-1)
    fwd = F.kl_div(lp, lq, log_target=True, reduction="none").sum(-1)  # KL(ref || cur)
    rev = F.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)  # KL(cur || ref)
    per_token = {"forward": fwd, "reverse": rev, "symmetric": fwd + rev}[p["kind"]]
    mask = t["mask"].float()
    loss = (per_token * mask).sum()
    if p["reduction"] == "mean":
        loss = loss / mask.sum().clamp(min=1)
    loss.backward()
    return {"loss": loss.detach().reshape(1), "grad.cur": cur.grad}


def cross_entropy(t, p):
    logits = t["logits"].clone().requires_grad_(True)
    targets = t["targets"].long().clone()
    if "mask" in t:
        targets[t["mask"] == 0] = -100
    ignore = p.get("ignore_index", -100)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore, reduction=p["reduction"])
    loss.backward()
    return {"loss": loss.detach().reshape(1), "grad.logits": logits.grad}


def pcgrad(t, p):
    """Yu et al.'s loop on flattened gradients, visiting the others in the given orders."""
    n, params = p["n"], p["params"]
    shapes = [t[f"g0.{k}"].shape for k in range(params)]
    flat = [torch.cat([t[f"g{i}.{k}"].reshape(-1) for k in range(params)]) for i in range(n)]
    projected, conflicts = [], 0
    for i in range(n):
        g = flat[i].clone()
        for j in p["orders"][i]:
            dot = torch.dot(g, flat[j])
            if dot < 0:
                g -= dot / flat[j].norm() ** 2 * flat[j]
                conflicts += 1
        projected.append(g)
    merged = torch.stack(projected).mean(0)
    out, start = {}, 0
    for k, shape in enumerate(shapes):
        size = int(torch.tensor(shape).prod()) if len(shape) else 1
        out[f"out.{k}"] = merged[start : start + size].reshape(shape)
        start += size
    out["conflicts"] = torch.tensor([float(conflicts)])
    return out


def gpm(t, p):
    """GPM's basis update (Saha et al.): SVD of what the basis does not explain, energy threshold."""
    R = t["activations"].double().T
    total = (R**2).sum()
    M = t["basis"].double() if "basis" in t else None
    residual = R - M @ (M.T @ R) if M is not None else R
    U, S, _ = torch.linalg.svd(residual, full_matrices=False)
    captured = total - (S**2).sum()
    k = 0
    while k < len(S) and captured / total < p["threshold"] - 1e-12:
        captured += S[k] ** 2
        k += 1
    basis = torch.cat([M, U[:, :k]], 1) if M is not None else U[:, :k]
    g = t["grad"].double()
    return {
        "projector": (basis @ basis.T).float(),
        "k": torch.tensor([float(basis.shape[1])]),
        "projected": (g - (g @ basis) @ basis.T).float(),
    }


def mixture(t, p):
    x = t["x"].clone().requires_grad_(True)
    A = t["A"].clone().requires_grad_(True)
    B = t["B"].clone().requires_grad_(True)
    idx, w = t["indices"].long(), t["weights"]
    x3 = x if x.dim() == 3 else x.unsqueeze(1)
    h = torch.einsum("bti,bkri->btkr", x3, A[idx])  # (b, t, k, r)
    y = torch.einsum("btkr,bkor,bk->bto", h, B[idx], w)
    y = y if x.dim() == 3 else y.squeeze(1)
    (y * t["upstream"]).sum().backward()
    return {"y": y.detach(), "grad.x": x.grad, "grad.A": A.grad, "grad.B": B.grad}


OPS = {"lora": lora, "divergence": divergence, "cross_entropy": cross_entropy, "pcgrad": pcgrad, "gpm": gpm, "mixture": mixture}


def main():
    cases = json.load(open(sys.argv[1]))
    tensors = load_file(sys.argv[2])
    out = {}
    for case in cases:
        dtype = DTYPES[case.get("dtype", "float32")]
        inputs = {}
        for name, key in case["inputs"].items():
            x = tensors[key]
            inputs[name] = x.to(dtype) if x.is_floating_point() and name not in ("mask",) else x
        for name, value in OPS[case["op"]](inputs, case.get("params", {})).items():
            out[f"{case['name']}.{name}"] = value.detach().float().contiguous()
    save_file(out, sys.argv[3])


if __name__ == "__main__":
    main()
