"""The references' half of scripts/bench/harness.mjs's protocol: one JSON command per line on stdin,
each answered by one JSON line on stdout, so that a benchmark can interleave its runs with ours."""
import json
import sys

import torch


def threads(c):
    torch.set_num_threads(c["n"])
    return {"threads": torch.get_num_threads()}


def serve(handlers):
    """Answers each {"cmd": NAME, ...} with handlers[NAME](command) until stdin ends.

    {"cmd": "threads", "n": N} is answered here: it sets torch's thread count, {"threads"}.
    """
    handlers = {"threads": threads, **handlers}
    for line in sys.stdin:
        c = json.loads(line)
        handler = handlers.get(c["cmd"])
        reply = handler(c) if handler else {"error": f"unknown command {c['cmd']}"}
        print(json.dumps(reply), flush=True)
