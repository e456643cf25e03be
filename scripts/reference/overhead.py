"""Per-call overhead of trivial torch ops from Python, the reference for scripts/bench/overhead.mjs.

Answers one JSON line per command on stdin:
  {"cmd": "threads", "n": N}        sets torch's thread count
  {"cmd": "time", "calls": N}       microseconds per call of each op, measured over N calls
"""
import time

import torch

from serve import serve

a = torch.ones(1)
b = torch.ones(1)
m = torch.ones(8, 8)
OPS = {
    "add": lambda: torch.add(a, b),
    "matmul8": lambda: torch.matmul(m, m),
    "sum": lambda: a.sum(),
}


def per_call(fn, n):
    for _ in range(1000):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


if __name__ == "__main__":
    serve({"time": lambda c: {op: per_call(fn, c["calls"]) for op, fn in OPS.items()}})
