"""Per-call overhead of trivial torch ops from Python, the reference for scripts/bench/overhead.mjs.

Prints one JSON object: microseconds per call for each op, measured over `n` calls.
"""
import json
import sys
import time

import torch

n = int(sys.argv[1])
threads = int(sys.argv[2])
torch.set_num_threads(threads)
a = torch.ones(1)
b = torch.ones(1)
m = torch.ones(8, 8)


def per_call(fn):
    for _ in range(1000):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


out = {
    "add": per_call(lambda: torch.add(a, b)),
    "matmul8": per_call(lambda: torch.matmul(m, m)),
    "sum": per_call(lambda: a.sum()),
}
print(json.dumps(out))
