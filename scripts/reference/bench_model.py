"""The transformers side of `npm run bench:model`. Answers one JSON line per command on stdin:
  {"cmd": "create", "dir": D, "config": {...}}        a random model of the config's model_type (llama, qwen2,
                                                      qwen3, mistral, phi3) saved to D
  {"cmd": "load", "dir": D}                           {"ms", "peakMiB"}
  {"cmd": "forward", "batch": B, "seq": T}            one no-grad forward of the loaded model, {"ms"}
  {"cmd": "generate", "batch": B, "prompt": T, "new": N, "cache": "dynamic"|"static"}
                                                      greedy generate with that KV cache, {"ms", "tokens"}
"""
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from procfs import reset_peak, rss
from serve import serve



def main():
    model = None

    def create(c):
        torch.manual_seed(0)
        config = dict(c["config"])
        AutoModelForCausalLM.from_config(AutoConfig.for_model(config.pop("model_type", "llama"), **config)).save_pretrained(c["dir"], safe_serialization=True)
        return {"ok": True}

    def load(c):
        nonlocal model
        reset_peak()
        base = rss("VmRSS")
        t = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(c["dir"], dtype=torch.float32).eval()
        return {"ms": (time.perf_counter() - t) * 1e3, "peakMiB": rss("VmHWM") - base, "baseMiB": base}

    def forward(c):
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, model.config.vocab_size, (c["batch"], c["seq"]), generator=g)
        t = time.perf_counter()
        with torch.no_grad():
            model(input_ids=ids)
        return {"ms": (time.perf_counter() - t) * 1e3, "rssMiB": rss("VmRSS"), "hwmMiB": rss("VmHWM")}

    def generate(c):
        g = torch.Generator().manual_seed(2)
        ids = torch.randint(3, model.config.vocab_size, (c["batch"], c["prompt"]), generator=g)
        t = time.perf_counter()
        with torch.no_grad():
            extra = {"cache_implementation": "static"} if c.get("cache") == "static" else {}
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=c["new"], min_new_tokens=c["new"],
                                 do_sample=False, pad_token_id=0, **extra)
        return {"ms": (time.perf_counter() - t) * 1e3, "tokens": int((out.shape[1] - c["prompt"]) * c["batch"])}

    serve({"create": create, "load": load, "forward": forward, "generate": generate})


if __name__ == "__main__":
    main()
