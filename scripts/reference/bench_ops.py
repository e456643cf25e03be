"""The PyTorch side of `npm run bench:ops`: the same ops, written as a PyTorch user would.

Runs as a server: reads one JSON command per line on stdin, answers one JSON line on stdout, so the
benchmark can interleave our runs with these. Commands:
  {"cmd": "setup", "op": NAME, "threads": N}      build the op's inputs
  {"cmd": "time", "op": NAME}                      one forward + backward; answers {"ms": ...}
  {"cmd": "memory", "op": NAME}                    peak RSS growth of one forward + backward, MiB
"""
import ctypes
import time

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from procfs import reset_peak, rss
from serve import serve

SIZES = {
    "lora": dict(tokens=2048, d=4096, r=8),
    "divergence": dict(tokens=2048, vocab=32000),
    "cross_entropy": dict(tokens=2048, vocab=32000),
    "pcgrad": dict(n=4, params=10, numel=1_000_000),
    "mixture": dict(b=8, t=256, d=4096, r=8, pool=384, k=2),
}
libc = ctypes.CDLL("libc.so.6")


class Proj(torch.nn.Module):
    def __init__(self, d):
        super().__init__()
        self.proj = torch.nn.Linear(d, d, bias=False)

    def forward(self, x):
        return self.proj(x)


def make(op):
    s = SIZES[op]
    g = torch.Generator().manual_seed(0)
    if op == "lora":
        model = get_peft_model(Proj(s["d"]), LoraConfig(r=s["r"], lora_alpha=16, target_modules=["proj"], lora_dropout=0.0))
        layer = model.base_model.model.proj
        torch.nn.init.normal_(layer.lora_B["default"].weight, generator=g)
        x = torch.randn(s["tokens"], s["d"], generator=g, requires_grad=True)
        up = torch.randn(s["tokens"], s["d"], generator=g)

        def run():
            y = model(x)
            y.backward(up)
            x.grad = None
            model.zero_grad(set_to_none=True)

        return run
    if op == "divergence":
        cur = torch.randn(s["tokens"], s["vocab"], generator=g, requires_grad=True)
        ref = torch.randn(s["tokens"], s["vocab"], generator=g)
        mask = torch.ones(s["tokens"])

        def run():
            lp = F.log_softmax(cur, -1)
            lq = F.log_softmax(ref, -1)
            per = F.kl_div(lp, lq, log_target=True, reduction="none").sum(-1) + F.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)
            loss = (per * mask).sum() / mask.sum()
            loss.backward()
            cur.grad = None

        return run
    if op == "cross_entropy":
        logits = torch.randn(s["tokens"], s["vocab"], generator=g, requires_grad=True)
        targets = torch.randint(0, s["vocab"], (s["tokens"],), generator=g)

        def run():
            F.cross_entropy(logits, targets).backward()
            logits.grad = None

        return run
    if op == "pcgrad":
        grads = [[torch.randn(s["numel"], generator=g) for _ in range(s["params"])] for _ in range(s["n"])]

        def run():
            flat = [torch.cat([t.reshape(-1) for t in gi]) for gi in grads]
            projected = []
            for i in range(s["n"]):
                gi = flat[i].clone()
                for j in torch.randperm(s["n"], generator=g).tolist():
                    if j == i:
                        continue
                    dot = torch.dot(gi, flat[j])
                    if dot < 0:
                        gi -= dot / flat[j].norm() ** 2 * flat[j]
                projected.append(gi)
            merged = torch.stack(projected).mean(0)
            return list(merged.split(s["numel"]))

        return run
    if op == "mixture":
        x = torch.randn(s["b"], s["t"], s["d"], generator=g, requires_grad=True)
        A = torch.randn(s["pool"], s["r"], s["d"], generator=g, requires_grad=True)
        B = torch.randn(s["pool"], s["d"], s["r"], generator=g, requires_grad=True)
        idx = torch.randint(0, s["pool"], (s["b"], s["k"]), generator=g)
        w = torch.rand(s["b"], s["k"], generator=g)
        up = torch.randn(s["b"], s["t"], s["d"], generator=g)

        def run():
            h = torch.einsum("bti,bkri->btkr", x, A[idx])
            y = torch.einsum("btkr,bkor,bk->bto", h, B[idx], w)
            y.backward(up)
            x.grad = A.grad = B.grad = None

        return run
    raise ValueError(op)



def main():
    runs = {}

    def setup(c):
        torch.set_num_threads(c["threads"])
        runs[c["op"]] = make(c["op"])
        for _ in range(3):  # warm up: the allocator reaches its steady state after a few runs
            runs[c["op"]]()
        return {"ok": True, "threads": torch.get_num_threads()}

    def timed(c):
        t = time.perf_counter()
        runs[c["op"]]()
        return {"ms": (time.perf_counter() - t) * 1e3}

    def memory(c):
        libc.malloc_trim(0)  # return what earlier runs freed, so the peak below is this run's
        reset_peak()
        base = rss("VmRSS")
        runs[c["op"]]()
        return {"peakMiB": rss("VmHWM") - base}

    serve({"setup": setup, "time": timed, "memory": memory})


if __name__ == "__main__":
    main()
