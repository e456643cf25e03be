"""The PyTorch side of `npm run bench:ops`: the same ops, written as a PyTorch user would.

Runs as a server: reads one JSON command per line on stdin, answers one JSON line on stdout, so the
benchmark can interleave our runs with these. Commands:
  {"cmd": "setup", "op": NAME, "threads": N, "size": {...}|absent, "device": "cpu"|"cuda[:N]", "dtype": "float32"|"bfloat16"}
        build the op's inputs (size: the op's dimensions, default SIZES[op]; device cpu and dtype
        float32 by default); answers {"threads", "gpu": name or null}
  {"cmd": "time", "op": NAME}      one forward + backward; answers {"ms": ...} (on CUDA between two synchronisations)
  {"cmd": "memory", "op": NAME}    peak memory growth of one forward + backward, MiB: RSS on the CPU, the CUDA
                                   caching allocator's allocated bytes (max_memory_allocated) on a GPU
Inputs are drawn on the CPU, then moved and converted; the ops run in the inputs' dtype (losses too: no
upcast, torch's softmax kernels accumulate in float32 internally).
"""
import ctypes
import gc
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


def make(op, s, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)

    def randn(*shape, grad=False):
        """Drawn on the CPU (the same values on every device), then moved and converted."""
        t = torch.randn(*shape, generator=g).to(device, dtype)
        return t.requires_grad_() if grad else t

    if op == "lora":
        model = get_peft_model(Proj(s["d"]), LoraConfig(r=s["r"], lora_alpha=16, target_modules=["proj"], lora_dropout=0.0))
        layer = model.base_model.model.proj
        torch.nn.init.normal_(layer.lora_B["default"].weight, generator=g)
        model.to(device, dtype)  # the adapter too: the op in one dtype, as ours
        x = randn(s["tokens"], s["d"], grad=True)
        up = randn(s["tokens"], s["d"])

        def run():
            y = model(x)
            y.backward(up)
            x.grad = None
            model.zero_grad(set_to_none=True)

        return run
    if op == "divergence":
        cur = randn(s["tokens"], s["vocab"], grad=True)
        ref = randn(s["tokens"], s["vocab"])
        mask = torch.ones(s["tokens"], device=device, dtype=dtype)

        def run():
            lp = F.log_softmax(cur, -1)
            lq = F.log_softmax(ref, -1)
            per = F.kl_div(lp, lq, log_target=True, reduction="none").sum(-1) + F.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)
            loss = (per * mask).sum() / mask.sum()
            loss.backward()
            cur.grad = None

        return run
    if op == "cross_entropy":
        logits = randn(s["tokens"], s["vocab"], grad=True)
        targets = torch.randint(0, s["vocab"], (s["tokens"],), generator=g).to(device)

        def run():
            F.cross_entropy(logits, targets).backward()
            logits.grad = None

        return run
    if op == "pcgrad":
        grads = [[randn(s["numel"]) for _ in range(s["params"])] for _ in range(s["n"])]

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
        x = randn(s["b"], s["t"], s["d"], grad=True)
        A = randn(s["pool"], s["r"], s["d"], grad=True)
        B = randn(s["pool"], s["d"], s["r"], grad=True)
        idx = torch.randint(0, s["pool"], (s["b"], s["k"]), generator=g).to(device)
        w = torch.rand(s["b"], s["k"], generator=g).to(device, dtype)
        up = randn(s["b"], s["t"], s["d"])

        def run():
            h = torch.einsum("bti,bkri->btkr", x, A[idx])
            y = torch.einsum("btkr,bkor,bk->bto", h, B[idx], w)
            y.backward(up)
            x.grad = A.grad = B.grad = None

        return run
    raise ValueError(op)



DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def main():
    runs = {}
    device = torch.device("cpu")

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def setup(c):
        nonlocal device
        torch.set_num_threads(c["threads"])
        device = torch.device(c.get("device", "cpu"))
        dtype = DTYPES[c.get("dtype", "float32")]
        runs.clear()  # the previous op's inputs go before this op's are made
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        runs[c["op"]] = make(c["op"], c.get("size") or SIZES[c["op"]], device, dtype)
        for _ in range(3):  # warm up: the allocator reaches its steady state after a few runs
            runs[c["op"]]()
        sync()
        gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
        return {"ok": True, "threads": torch.get_num_threads(), "gpu": gpu}

    def timed(c):
        sync()
        t = time.perf_counter()
        runs[c["op"]]()
        sync()
        return {"ms": (time.perf_counter() - t) * 1e3}

    def memory(c):
        if device.type == "cuda":
            sync()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            runs[c["op"]]()
            sync()
            return {"peakMiB": (torch.cuda.max_memory_allocated(device) - base) / 2**20}
        libc.malloc_trim(0)  # return what earlier runs freed, so the peak below is this run's
        reset_peak()
        base = rss("VmRSS")
        runs[c["op"]]()
        return {"peakMiB": rss("VmHWM") - base}

    serve({"setup": setup, "time": timed, "memory": memory})


if __name__ == "__main__":
    main()
