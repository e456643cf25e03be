"""The data-parallel side of `npm run bench:dist`: the PyTorch reference step of bench:step
(jfa_step.py's JfaStep: transformers + PEFT LoRA, flashback symmetric KL, per-micro-batch gradients,
PCGrad, clipping, AdamW) under torch DistributedDataParallel on Gloo, one process per rank as
`torchrun --nproc-per-node N` starts them. Each rank takes rows rank::N of every micro-batch; DDP
averages each micro-batch's gradients over the ranks during its backward (bucketed, overlapped).
Rank 0 prints one JSON line: {"ms": [per-step ms], "worldSize"}.

Usage: torchrun --nproc-per-node 2 dist_step.py --model DIR --adapter DIR --batches FILE --kinds new,new,flashback --steps N
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

sys.path.insert(0, os.path.dirname(__file__))
from jfa_step import JfaStep, load_batches  # noqa: E402


class DdpStep(JfaStep):
    """JfaStep whose trained forwards go through DDP (the reference forward, under no_grad, does not)."""

    def __init__(self, c):
        super().__init__(c)
        self.ddp = DDP(self.model, broadcast_buffers=False)

    def logits(self, mb):
        module = self.ddp if torch.is_grad_enabled() else self.model
        return module(input_ids=mb["ids"], attention_mask=mb["mask"], use_cache=False).logits


def main():
    p = argparse.ArgumentParser()
    for a in ("--model", "--adapter", "--batches", "--kinds"):
        p.add_argument(a, required=True)
    p.add_argument("--steps", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    trainer = DdpStep({"model": a.model, "adapter": a.adapter, "lr": 1e-4, "pcgrad": True, "max_grad_norm": 1.0})
    micro = load_batches(a.batches, a.kinds.split(","))
    for mb in micro:
        for k in ("ids", "mask", "targets"):
            if k in mb:
                mb[k] = mb[k][rank::world].contiguous()
        mb.pop("latent", None)
    n = len(micro)
    orders = [[j for j in range(n) if j != i] for i in range(n)]
    times = []
    for _ in range(a.steps + 1):  # the first is a warm-up
        dist.barrier()
        t = time.perf_counter()
        trainer.step(micro, orders, None)
        times.append((time.perf_counter() - t) * 1e3)
    if rank == 0:
        print(json.dumps({"ms": times[1:], "worldSize": world}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
