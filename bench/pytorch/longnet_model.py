#!/usr/bin/env python3
"""PyTorch reference of the project's decoder-only LongNet LM, to measure a training step against.

The same model as models/longnet_lm.cpp, built the same way:
- token embedding times sqrt(dim), cast to the compute dtype;
- N MAGNETO (sub-LN) layers: x + out_proj(inner_attn_ln(attn(xpos(q), xpos(k), v))) over
  self_attn_layer_norm(x), then h + fc2(ffn_layernorm(gelu(fc1(final_layer_norm(h)))));
- XPOS on q and k as layers/positions.cpp: pairs (x_2i, x_2i+1) rotated by n theta_i and scaled by
  zeta_i^((n - c(n)) / scale_base) (keys by the inverse), where the centre c(n) is max_positions / 2,
  or, when every dilated segment length divides the largest one P, the middle of n's block of P;
- dilated attention (causal, scale 1/sqrt(D)) from longnet_reference.py: one call of PyTorch's fused
  flash attention per branch (all heads and segments gathered together), branches merged by
  log-sum-exp, exact backward;
- final layer norm, logits through the tied embedding, mean cross-entropy in f32.
Parameters are f32 master weights; each op casts its weights to the compute dtype (bf16 on the GPU),
as the framework does; AdamW (fused on CUDA, weight decay 0.1 on matrices) updates the f32 weights.
Parameter names are the framework's (decoder.layers.0.self_attn.q_proj.weight, ...).

Modes (one JSON line each):
- timing (default): --seq-len N[,N...] --batch --steps --warmup [--compile] [--checkpoint]
  [--memory-limit-gb G]: a training step loop (forward, backward, optimizer step), median
  wall-clock ms of the timed steps each ended by a device synchronisation, tokens/s, peak memory
  (torch.cuda.max_memory_allocated over the timed steps), status "ok" or "oom";
- --check-against FILE: FILE (safetensors) holds the model's parameters by name plus "tokens" and
  "targets" (B, N) int64; prints the loss and each parameter's gradient norm, computed in --dtype
  (f64 by default for this mode) on --device (cpu by default);
- --print-presets: the preset table (the test keeps it equal to models/config.cpp); needs no torch.
"""
import argparse
import json
import math
import os
import struct
import sys

PAPER_SEGMENTS = [2048, 4096, 8192, 16384, 32768]
PAPER_DILATIONS = [1, 2, 4, 6, 12]


def paper(layers, dim, heads):
    return {"vocab_size": 50257, "dim": dim, "layers": layers, "heads": heads, "ffn_dim": 4 * dim,
            "max_positions": 32768, "segment_lengths": PAPER_SEGMENTS, "dilation_rates": PAPER_DILATIONS}


# Kept equal to the presets of models/config.cpp by tests/tools/bench_train_test.cpp. Every preset
# uses LayerNorm (eps 1e-5), biases, GELU, XPOS with scale_base 512, tied and scaled embeddings.
PRESETS = {
    "tiny": {"vocab_size": 96, "dim": 32, "layers": 2, "heads": 4, "ffn_dim": 64, "max_positions": 64,
             "segment_lengths": [8, 16], "dilation_rates": [1, 2]},
    "small": {"vocab_size": 8192, "dim": 256, "layers": 4, "heads": 4, "ffn_dim": 1024, "max_positions": 2048,
              "segment_lengths": [512, 1024, 2048], "dilation_rates": [1, 2, 4]},
    "125m": paper(12, 768, 12),
    "350m": paper(24, 1024, 16),
    "760m": paper(24, 1536, 24),
    "1.3b": paper(24, 2048, 16),
    "2.7b": paper(32, 2560, 20),
}
NORM_EPS = 1e-5
XPOS_SCALE_BASE = 512.0
ROPE_BASE = 10000.0
WEIGHT_DECAY = 0.1
LR = 1e-4


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="125m", choices=sorted(PRESETS))
    p.add_argument("--seq-len", type=lambda s: [int(x) for x in s.split(",")], default=[8192])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before them (compilation happens here)")
    p.add_argument("--device", default=None, help="cuda (timing default) or cpu (--check-against default)")
    p.add_argument("--dtype", default=None, choices=["bf16", "f16", "f32", "f64"],
                   help="compute dtype: bf16 for timing, f64 for --check-against by default")
    p.add_argument("--compile", action="store_true", help="torch.compile each layer and the loss head")
    p.add_argument("--checkpoint", action="store_true", help="activation checkpointing per layer")
    p.add_argument("--memory-limit-gb", type=float, default=0.0,
                   help="CUDA: cap this process's allocations (torch.cuda.set_per_process_memory_fraction)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-against", metavar="SAFETENSORS", help="loss and gradients on these weights and tokens")
    p.add_argument("--print-presets", action="store_true")
    args = p.parse_args(argv)
    checking = args.check_against is not None
    args.device = args.device or ("cpu" if checking else "cuda")
    args.dtype = args.dtype or ("f64" if checking else "bf16")
    return args


# --- everything below needs torch (imported in main, so that --print-presets works without it)

def build_classes(torch, dilated_attention):
    """The model's classes, over the imported torch and reference attention."""
    import torch.utils.checkpoint
    nn, F = torch.nn, torch.nn.functional

    class Linear(nn.Module):
        def __init__(self, fan_in, fan_out, gain=1.0):
            super().__init__()
            bound = gain * math.sqrt(6.0 / (fan_in + fan_out))  # Xavier uniform, as layers/init.cpp
            self.weight = nn.Parameter(torch.empty(fan_out, fan_in).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.zeros(fan_out))

        def forward(self, x):
            return F.linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))

    class LayerNorm(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(dim))
            self.bias = nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            return F.layer_norm(x, x.shape[-1:], self.weight.to(x.dtype), self.bias.to(x.dtype), NORM_EPS)

    class Xpos:
        """Tables (N, 1, D/2) of cos and sin times the XPOS scale, for queries and for keys."""

        def __init__(self, head_dim, center, center_period):
            self.head_dim, self.center, self.period = head_dim, center, center_period
            self.cache = {}

        def tables(self, n, device, dtype):
            """(cos_q, cos_k, sin_q, sin_k) for n rows, built once per length outside compiled code."""
            key = (n, str(device), dtype)
            if key not in self.cache:
                d = self.head_dim
                pos = torch.arange(n, dtype=torch.float64)
                i = torch.arange(d // 2, dtype=torch.float64)
                angle = pos[:, None] * ROPE_BASE ** (-2.0 * i / d)[None, :]
                zeta = (2.0 * i + 0.4 * d) / (1.4 * d)
                if self.period > 0:
                    centre = torch.div(pos, self.period, rounding_mode="floor") * self.period + self.period // 2
                else:
                    centre = torch.full_like(pos, float(self.center))
                power = ((pos - centre) / XPOS_SCALE_BASE)[:, None]
                q_scale, k_scale = zeta[None, :] ** power, zeta[None, :] ** (-power)
                self.cache[key] = tuple((f(angle) * s).unsqueeze(1).to(device=device, dtype=dtype)
                                        for f in (torch.cos, torch.sin) for s in (q_scale, k_scale))
            return self.cache[key]

        @staticmethod
        def apply(x, tables, is_key):
            """x (B, N, H, D) -> rotated and scaled in the tables' dtype (f32, or f64), cast back."""
            b, n, h, d = x.shape
            cq, ck, sq, sk = tables
            cos, sin = (ck, sk) if is_key else (cq, sq)
            pairs = x.to(cos.dtype).reshape(b, n, h, d // 2, 2)
            even, odd = pairs[..., 0], pairs[..., 1]
            out = torch.stack((even * cos - odd * sin, odd * cos + even * sin), dim=-1)
            return out.reshape(b, n, h, d).to(x.dtype)

    class SelfAttention(nn.Module):
        def __init__(self, cfg, gain):
            super().__init__()
            dim = cfg["dim"]
            self.heads, self.cfg = cfg["heads"], cfg
            qk_gain = 1.0 / math.sqrt(2.0)
            self.q_proj = Linear(dim, dim, qk_gain)
            self.k_proj = Linear(dim, dim, qk_gain)
            self.v_proj = Linear(dim, dim, qk_gain * gain)
            self.inner_attn_ln = LayerNorm(dim)
            self.out_proj = Linear(dim, dim, gain)

        def project(self, x, tables):
            """x (B, N, dim) -> q, k, v (B, N, H, D), positions applied."""
            b, n, dim = x.shape
            split = lambda t: t.view(b, n, self.heads, dim // self.heads)  # noqa: E731
            return (Xpos.apply(split(self.q_proj(x)), tables, False), Xpos.apply(split(self.k_proj(x)), tables, True),
                    split(self.v_proj(x)))

        def output(self, o):
            """The core's output (B, N, H, D) -> (B, N, dim)."""
            return self.out_proj(self.inner_attn_ln(o.flatten(2)))

    class FeedForward(nn.Module):
        def __init__(self, cfg, gain):
            super().__init__()
            self.fc1 = Linear(cfg["dim"], cfg["ffn_dim"], gain)
            self.ffn_layernorm = LayerNorm(cfg["ffn_dim"])
            self.fc2 = Linear(cfg["ffn_dim"], cfg["dim"], gain)

        def forward(self, x):
            return self.fc2(self.ffn_layernorm(F.gelu(self.fc1(x))))

    class Layer(nn.Module):
        def __init__(self, cfg, gain):
            super().__init__()
            self.self_attn = SelfAttention(cfg, gain)
            self.self_attn_layer_norm = LayerNorm(cfg["dim"])
            self.ffn = FeedForward(cfg, gain)
            self.final_layer_norm = LayerNorm(cfg["dim"])

            self.run_pre, self.run_post = self.pre, self.post

        def pre(self, x, tables):
            return self.self_attn.project(self.self_attn_layer_norm(x), tables)

        def post(self, x, o):
            h = x + self.self_attn.output(o)
            return h + self.ffn(self.final_layer_norm(h))

        def compile(self, on):
            """Compiles the parts before and after the attention core (the core stays eager)."""
            self.run_pre, self.run_post = (torch.compile(self.pre), torch.compile(self.post)) if on else \
                (self.pre, self.post)

        def forward(self, x, tables):
            q, k, v = self.run_pre(x, tables)
            cfg = self.self_attn.cfg
            return self.run_post(x, dilated_attention(q, k, v, cfg["segment_lengths"], cfg["dilation_rates"], causal=True))

    class Decoder(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            dim = cfg["dim"]
            self.embed_tokens = nn.Module()
            self.embed_tokens.weight = nn.Parameter(torch.randn(cfg["vocab_size"], dim) / math.sqrt(dim))
            gain = math.sqrt(math.log(2.0 * cfg["layers"]))  # MAGNETO, decoder-only
            self.xpos = Xpos(dim // cfg["heads"], cfg["max_positions"] // 2, center_period(cfg["segment_lengths"]))
            self.layers = nn.ModuleList(Layer(cfg, gain) for _ in range(cfg["layers"]))
            self.layer_norm = LayerNorm(dim)

    class LongNetLM(nn.Module):
        def __init__(self, cfg, dtype, checkpoint):
            super().__init__()
            self.cfg, self.dtype, self.checkpoint = cfg, dtype, checkpoint
            self.decoder = Decoder(cfg)
            self.compiled = False
            self.head = self._head

        def compile(self, on=True):
            """torch.compile each layer's parts around the attention core, and the loss head."""
            for layer in self.decoder.layers:
                layer.compile(on)
            self.head = torch.compile(self._head) if on else self._head
            self.compiled = on

        def _head(self, h, targets):
            h = self.decoder.layer_norm(h)
            logits = F.linear(h, self.decoder.embed_tokens.weight.to(h.dtype))
            # The loss in f32 at least, as ours (f64 stays f64).
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
            return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

        def forward(self, tokens, targets):
            w = self.decoder.embed_tokens.weight
            x = (F.embedding(tokens, w) * math.sqrt(w.shape[1])).to(self.dtype)
            tables = self.decoder.xpos.tables(tokens.shape[1], tokens.device,
                                              torch.float64 if self.dtype == torch.float64 else torch.float32)
            for layer in self.decoder.layers:
                if self.checkpoint:
                    x = torch.utils.checkpoint.checkpoint(layer, x, tables, use_reentrant=False)
                else:
                    x = layer(x, tables)
            return self.head(x, targets)

    return LongNetLM


def center_period(segments):
    """The largest segment when every segment divides it, else 0 (one centre): models/stack.cpp."""
    largest = max(segments)
    return largest if all(w > 0 and largest % w == 0 for w in segments) else 0


DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "f64": "float64"}


def make_model(torch, args):
    from longnet_reference import dilated_attention
    torch.manual_seed(args.seed)
    dtype = getattr(torch, DTYPES[args.dtype])
    cls = build_classes(torch, dilated_attention)
    master = torch.float64 if dtype == torch.float64 else torch.float32
    model = cls(PRESETS[args.preset], dtype, args.checkpoint).to(device=args.device, dtype=master)
    return model


def make_optimizer(torch, model, device):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    plain = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": plain, "weight_decay": 0.0}]
    fused = device.startswith("cuda")
    return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8, fused=fused, foreach=None if fused else True)


# --- safetensors, read without the safetensors package

SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "BF16": "bfloat16", "F16": "float16", "I64": "int64",
                      "I32": "int32"}


def load_safetensors(torch, path):
    with open(path, "rb") as f:
        raw = f.read()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    data = raw[8 + header_len:]
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        begin, end = e["data_offsets"]
        dtype = getattr(torch, SAFETENSORS_DTYPES[e["dtype"]])
        t = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype) if end > begin else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(e["shape"]).clone()
    return out


def check_against(torch, args):
    tensors = load_safetensors(torch, args.check_against)
    tokens, targets = tensors.pop("tokens").to(args.device), tensors.pop("targets").to(args.device)
    model = make_model(torch, args)
    master = next(model.parameters()).dtype
    model.load_state_dict({k: v.to(master) for k, v in tensors.items()}, strict=True)
    loss = model(tokens, targets)
    loss.backward()
    norms = {name: p.grad.double().norm().item() for name, p in model.named_parameters()}
    total = math.sqrt(sum(v * v for v in norms.values()))
    print(json.dumps({"check": "loss", "preset": args.preset, "dtype": args.dtype, "loss": loss.item(),
                      "grad_norm": total, "grad_norms": norms}))
    return 0


# --- timing

def is_oom(torch, e):
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e)


def time_one(torch, args, n, model, optimizer):
    """Median step ms and peak bytes of the timed steps at n tokens, or None on OOM."""
    import time
    cuda = args.device.startswith("cuda")
    g = torch.Generator(device="cpu").manual_seed(n)
    vocab = PRESETS[args.preset]["vocab_size"]
    tokens, targets = (torch.randint(0, vocab, (args.batch, n), generator=g).to(args.device) for _ in range(2))

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(tokens, targets).backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()

    note = None
    for i in range(args.warmup):
        try:
            step()
        except Exception as e:  # compilation happens in the first step; fall back to eager when it fails
            if i > 0 or not model.compiled or is_oom(torch, e):
                raise
            note = "torch.compile failed, eager instead: " + str(e).splitlines()[0][:200]
            print("note: " + note, file=sys.stderr)
            model.compile(False)
            step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    mid = len(times) // 2
    ms = times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])
    peak = torch.cuda.max_memory_allocated() if cuda else None
    return ms, peak, note


def timing(torch, args):
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device visible to torch"}))
        return 1
    if cuda and args.memory_limit_gb > 0:
        total = torch.cuda.get_device_properties(torch.device(args.device)).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_limit_gb * 2**30 / total))
    model = make_model(torch, args)
    params = sum(p.numel() for p in model.parameters())
    optimizer = make_optimizer(torch, model, args.device)
    if args.compile:
        model.compile()
    for n in args.seq_len:
        result = {"impl": "pytorch_longnet", "preset": args.preset, "parameters": params, "n": n,
                  "batch": args.batch, "dtype": args.dtype, "device": args.device, "compile": args.compile,
                  "checkpoint": args.checkpoint, "torch": torch.__version__}
        try:
            ms, peak, note = time_one(torch, args, n, model, optimizer)
            result.update({"status": "ok", "step_ms": ms, "tokens_per_s": args.batch * n / (ms * 1e-3),
                           "peak_bytes": peak})
            if note:
                result["compile_note"] = note
        except Exception as e:
            if not is_oom(torch, e):
                raise
            result.update({"status": "oom"})
            optimizer.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.empty_cache()
        print(json.dumps(result))
        sys.stdout.flush()
    return 0


def main(argv):
    args = parse_args(argv)
    if args.print_presets:
        print(json.dumps({"presets": PRESETS, "norm_eps": NORM_EPS, "xpos_scale_base": XPOS_SCALE_BASE}))
        return 0
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import torch
    if args.check_against:
        return check_against(torch, args)
    return timing(torch, args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
