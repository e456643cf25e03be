"""The transformers side of `npm run bench:model`. Answers one JSON line per command on stdin:
  {"cmd": "create", "dir": D, "config": {...}}        a random LlamaForCausalLM saved to D
  {"cmd": "load", "dir": D}                           {"ms", "peakMiB"}
  {"cmd": "forward", "batch": B, "seq": T}            one no-grad forward of the loaded model, {"ms"}
  {"cmd": "generate", "batch": B, "prompt": T, "new": N}  greedy generate with the KV cache, {"ms", "tokens"}
"""
import json
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from procfs import reset_peak, rss



def main():
    model = None
    for line in sys.stdin:
        c = json.loads(line)
        if c["cmd"] == "threads":
            torch.set_num_threads(c["n"])
            reply = {"threads": torch.get_num_threads()}
        elif c["cmd"] == "create":
            torch.manual_seed(0)
            LlamaForCausalLM(LlamaConfig(**c["config"])).save_pretrained(c["dir"], safe_serialization=True)
            reply = {"ok": True}
        elif c["cmd"] == "load":
            reset_peak()
            base = rss("VmRSS")
            t = time.perf_counter()
            model = LlamaForCausalLM.from_pretrained(c["dir"], dtype=torch.float32).eval()
            reply = {"ms": (time.perf_counter() - t) * 1e3, "peakMiB": rss("VmHWM") - base, "baseMiB": base}
        elif c["cmd"] == "forward":
            g = torch.Generator().manual_seed(1)
            ids = torch.randint(0, model.config.vocab_size, (c["batch"], c["seq"]), generator=g)
            t = time.perf_counter()
            with torch.no_grad():
                model(input_ids=ids)
            reply = {"ms": (time.perf_counter() - t) * 1e3, "rssMiB": rss("VmRSS"), "hwmMiB": rss("VmHWM")}
        elif c["cmd"] == "generate":
            g = torch.Generator().manual_seed(2)
            ids = torch.randint(3, model.config.vocab_size, (c["batch"], c["prompt"]), generator=g)
            t = time.perf_counter()
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=c["new"], min_new_tokens=c["new"],
                                     do_sample=False, pad_token_id=0)
            reply = {"ms": (time.perf_counter() - t) * 1e3, "tokens": int((out.shape[1] - c["prompt"]) * c["batch"])}
        else:
            reply = {"error": c["cmd"]}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
