#!/usr/bin/env python3
"""PyTorch reference of LongNet dilated attention (Ding et al. 2023), and dense SDPA timing.

The baseline that `longnet bench attention --time` compares against. Dilated attention, for each
pair (w, r) of the schedule: the sequence is cut into segments of w rows (w > N is clamped to N; a
shorter last segment is its own call, which equals padding it with masked rows); in each segment
the rows offset, offset + r, ... with offset = head mod r attend densely to each other (causally
within the segment when causal); each branch yields (out, lse) from PyTorch's fused flash kernel;
the branches merge by log-sum-exp: L = logsumexp_b lse_b, O = sum_b exp(lse_b - L) o_b.

Gradients are exact through the merge weights. The backward of a part of an attention depends on
the FINAL output and lse only: with P = exp(S - L) (the merged probabilities) and
Delta = rowsum(dO * O), dS = P (dO V^T - Delta). So each piece's fused backward is called with the
slices of the merged O and L, and the sum over pieces is the gradient of the merged result,
including the part that flows through exp(lse_b - L). `--check` verifies this against a
materialised softmax over the union of the branches' keys (duplicates counted).

Prints one JSON line per run.
"""
import argparse
import json
import math
import sys

import torch
import torch.nn.functional as F

PAPER_SEGMENTS = [2048, 4096, 8192, 16384, 32768]
PAPER_DILATIONS = [1, 2, 4, 6, 12]


# --- per-piece kernels: q, k, v (batch, heads, m, D) views -> out (batch, heads, m, D), lse (batch, heads, m)

def acc_dtype(t):
    """Accumulation dtype: f64 for f64 inputs, else f32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class MathKernel:
    """Materialised softmax of one piece; any device and dtype (used by --check and tiny sizes)."""
    name = "math"

    @staticmethod
    def _scores(q, k, causal, scale):
        a = acc_dtype(q)
        s = torch.matmul(q.to(a), k.to(a).transpose(-1, -2)) * scale
        if causal:
            m = s.shape[-1]
            future = torch.ones(m, m, dtype=torch.bool, device=s.device).triu(1)
            s = s.masked_fill(future, float("-inf"))
        return s

    def forward(self, q, k, v, causal, scale):
        s = self._scores(q, k, causal, scale)
        lse = torch.logsumexp(s, dim=-1)
        out = torch.matmul(torch.exp(s - lse.unsqueeze(-1)), v.to(s.dtype)).to(q.dtype)
        return out, lse, None

    def backward(self, dout, q, k, v, out, lse, causal, scale, ctx):
        p = torch.exp(self._scores(q, k, causal, scale) - lse.unsqueeze(-1))
        a = p.dtype
        dout = dout.to(a)
        dp = torch.matmul(dout, v.to(a).transpose(-1, -2))
        delta = (dout * out.to(a)).sum(-1, keepdim=True)
        ds = p * (dp - delta)
        dq = torch.matmul(ds, k.to(a)) * scale
        dk = torch.matmul(ds.transpose(-1, -2), q.to(a)) * scale
        dv = torch.matmul(p.transpose(-1, -2), dout)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


class FlashKernel:
    """PyTorch's fused flash attention (CUDA, 16-bit), which returns the lse the merge needs."""
    name = "flash"

    def forward(self, q, k, v, causal, scale):
        r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
        out, lse, cum_q, cum_k, max_q, max_k, seed, offset = r[:8]
        return out, lse, (cum_q, cum_k, max_q, max_k, seed, offset)

    def backward(self, dout, q, k, v, out, lse, causal, scale, ctx):
        cum_q, cum_k, max_q, max_k, seed, offset = ctx
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_backward(
            dout, q, k, v, out, lse, cum_q, cum_k, max_q, max_k, 0.0, causal, seed, offset, scale=scale)
        return dq, dk, dv


def pick_kernel(q, name):
    if name == "auto":
        name = "flash" if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256 else "math"
    return FlashKernel() if name == "flash" else MathKernel()


# --- pieces of a branch

def branch_pieces(n, heads, w, r):
    """(start, segments, length, offset) of branch (w, r): per head offset, the full segments in one
    call and the shorter last segment in another."""
    w = min(w, n)
    full, tail = n // w, n % w
    pieces = []
    for g in range(min(r, heads)):
        if full > 0 and g < w:
            pieces.append((0, full, w, g))
        if tail > 0 and g < tail:
            pieces.append((full * w, 1, tail, g))
    return pieces


def rows_view(t, piece, r):
    """(B, N, H, D) -> strided view (B, S, m, Hg, D) of a piece's rows and heads."""
    start, segs, length, g = piece
    b, _, h, d = t.shape
    return t.narrow(1, start, segs * length).view(b, segs, length, h, d)[:, :, g::r, g::r]


def gather_rows(t, piece, r):
    """The piece's rows as a kernel operand (B*S, Hg, m, D): a contiguous (B*S, m, Hg, D) gather
    seen transposed, the layout the fused kernels read natively."""
    x = rows_view(t, piece, r).contiguous()
    b, s, m, hg, d = x.shape
    return x.view(b * s, m, hg, d).transpose(1, 2)


def lse_view(lse, piece, r):
    """(B, H, N) -> strided view (B, Hg, S, m) of a piece's rows and heads."""
    start, segs, length, g = piece
    b, h, _ = lse.shape
    return lse.narrow(2, start, segs * length).view(b, h, segs, length)[:, g::r, :, g::r]


def gather_lse(lse, piece, r):
    x = lse_view(lse, piece, r)
    b, hg, s, m = x.shape
    return x.permute(0, 2, 1, 3).reshape(b * s, hg, m).contiguous()


def scatter_rows(dst, src, piece, r, accumulate):
    """src (B*S, Hg, m, D) into the piece's rows and heads of dst (B, N, H, D)."""
    view = rows_view(dst, piece, r)
    src = src.transpose(1, 2).reshape(view.shape)
    if accumulate:
        view.add_(src)
    else:
        view.copy_(src)


def scatter_lse(dst, src, piece, r):
    view = lse_view(dst, piece, r)
    b, hg, s, m = view.shape
    view.copy_(src.view(b, s, hg, m).permute(0, 2, 1, 3))


class DilatedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, segments, dilations, causal, scale, kernel):
        b, n, h, d = q.shape
        outs, lses, plans = [], [], []
        for w, r in zip(segments, dilations):
            out = torch.zeros_like(q)
            lse = torch.full((b, h, n), float("-inf"), dtype=acc_dtype(q), device=q.device)
            for piece in branch_pieces(n, h, w, r):
                o, l, kctx = kernel.forward(gather_rows(q, piece, r), gather_rows(k, piece, r),
                                            gather_rows(v, piece, r), causal, scale)
                scatter_rows(out, o, piece, r, False)
                scatter_lse(lse, l.to(lse.dtype), piece, r)
                plans.append((piece, r, kctx))
            outs.append(out)
            lses.append(lse)
        # The LSE merge: softmax over the branches' lse (rows no branch reaches stay -inf and 0).
        lse_all = torch.stack(lses)                                   # (branches, B, H, N)
        merged_lse = torch.logsumexp(lse_all, dim=0)
        weights = torch.exp(lse_all - merged_lse.unsqueeze(0)).nan_to_num(0.0)
        weights = weights.permute(0, 1, 3, 2).unsqueeze(-1)           # (branches, B, N, H, 1)
        merged = (torch.stack(outs).to(weights.dtype) * weights).sum(0).to(q.dtype)
        ctx.save_for_backward(q, k, v, merged, merged_lse)
        ctx.plans, ctx.causal, ctx.scale, ctx.kernel = plans, causal, scale, kernel
        return merged

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dout = dout.contiguous()
        dq, dk, dv = (torch.zeros(q.shape, dtype=acc_dtype(q), device=q.device) for _ in range(3))
        for piece, r, kctx in ctx.plans:
            g = ctx.kernel.backward(gather_rows(dout, piece, r), gather_rows(q, piece, r), gather_rows(k, piece, r),
                                    gather_rows(v, piece, r), gather_rows(out, piece, r), gather_lse(lse, piece, r),
                                    ctx.causal, ctx.scale, kctx)
            for acc, grad in zip((dq, dk, dv), g):
                scatter_rows(acc, grad.to(acc.dtype), piece, r, True)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None


def dilated_attention(q, k, v, segments, dilations, causal, kernel="auto"):
    """q, k, v (B, N, H, D) -> out (B, N, H, D), differentiable."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    return DilatedAttention.apply(q, k, v, list(segments), list(dilations), causal, scale, pick_kernel(q, kernel))


def materialised_reference(q, k, v, segments, dilations, causal):
    """One softmax over the union of the branches' keys, each (query, key) pair weighted by the
    number of branches that contain it (LongNet's Eq. 10), built as an explicit N x N matrix."""
    b, n, h, d = q.shape
    count = torch.zeros(h, n, n, dtype=torch.float64, device=q.device)
    idx = torch.arange(n, device=q.device)
    for w, r in zip(segments, dilations):
        w = min(w, n)
        same_segment = (idx[:, None] // w) == (idx[None, :] // w)
        for head in range(h):
            kept = (idx % w) % r == head % r
            count[head] += (same_segment & kept[:, None] & kept[None, :]).double()
    if causal:
        count = count * (idx[None, :] <= idx[:, None]).double()
    s = torch.einsum("bihd,bjhd->bhij", q.double(), k.double()) / math.sqrt(d)
    s = s + torch.log(count).unsqueeze(0)  # log 0 = -inf masks the pairs no branch has
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhij,bjhd->bihd", p, v.double())


# --- timing

def events_median_ms(fn, reps, warmup):
    """Median ms of fn() between CUDA events, after warm-up; fn(start, end) may record the events
    itself around the part to time (else the whole call is timed)."""
    for _ in range(warmup):
        fn(None, None)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        fn(start, end)
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    mid = len(times) // 2
    return times[mid] if len(times) % 2 else 0.5 * (times[mid - 1] + times[mid])


def inputs(args, requires_grad=True):
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = (args.batch, args.n, args.heads, args.head_dim)
    return [torch.randn(shape, generator=g, device="cuda", dtype=torch.bfloat16).requires_grad_(requires_grad)
            for _ in range(3)]


def time_dilated(args):
    q, k, v = inputs(args)
    dout = torch.randn_like(q)

    def step(start, end):
        if start is not None:
            start.record()
        out = dilated_attention(q, k, v, args.segments, args.dilations, args.causal, args.kernel)
        torch.autograd.grad(out, (q, k, v), dout)
        if end is not None:
            end.record()

    ms = events_median_ms(step, args.reps, args.warmup)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step(None, None)
    torch.cuda.synchronize()
    return {"impl": "pytorch_dilated", "kernel": pick_kernel(q, args.kernel).name, "n": args.n, "batch": args.batch,
            "heads": args.heads, "head_dim": args.head_dim, "segments": args.segments, "dilations": args.dilations,
            "causal": args.causal, "fwd_bwd_ms": ms, "peak_bytes": torch.cuda.max_memory_allocated()}


def sdpa_backend_context(name):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                "cudnn": SDPBackend.CUDNN_ATTENTION}
    return sdpa_kernel([backends[name]])


def time_dense(args):
    q, k, v = inputs(args)
    dout = torch.randn_like(q)
    # (B, N, H, D) seen as (B, H, N, D), as the framework's layout is handed to SDPA.
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    doutt = dout.transpose(1, 2)

    def fwd(start, end):
        if start is not None:
            start.record()
        F.scaled_dot_product_attention(qt, kt, vt, is_causal=args.causal)
        if end is not None:
            end.record()

    def bwd(start, end):
        out = F.scaled_dot_product_attention(qt, kt, vt, is_causal=args.causal)
        if start is not None:
            start.record()
        torch.autograd.grad(out, (q, k, v), doutt)
        if end is not None:
            end.record()

    def run():
        return events_median_ms(fwd, args.reps, args.warmup), events_median_ms(bwd, args.reps, args.warmup)

    if args.backend == "default":
        fwd_ms, bwd_ms = run()
    else:
        with sdpa_backend_context(args.backend):
            fwd_ms, bwd_ms = run()
    return {"impl": "pytorch_sdpa", "backend": args.backend, "n": args.n, "batch": args.batch, "heads": args.heads,
            "head_dim": args.head_dim, "causal": args.causal, "fwd_ms": fwd_ms, "bwd_ms": bwd_ms}


def check(args):
    """Dilated reference vs the materialised softmax over the union of keys, outputs and grads."""
    n, heads, d = 256, 4, 32
    segments, dilations = [64, 128, 256, 100], [1, 2, 4, 3]
    cases = [("cpu", torch.float64, "math")]
    if torch.cuda.is_available():
        cases.append(("cuda", torch.bfloat16, "flash"))
    results = []
    for device, dtype, kernel in cases:
        for causal in (False, True):
            g = torch.Generator(device=device).manual_seed(1)
            q, k, v = (torch.randn(2, n, heads, d, generator=g, device=device, dtype=dtype).requires_grad_()
                       for _ in range(3))
            dout = torch.randn(2, n, heads, d, generator=g, device=device, dtype=dtype)
            out = dilated_attention(q, k, v, segments, dilations, causal, kernel)
            grads = torch.autograd.grad(out, (q, k, v), dout)
            q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
            ref = materialised_reference(q64, k64, v64, segments, dilations, causal)
            ref_grads = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
            err = {}
            for name, a, b in zip(("out", "dq", "dk", "dv"), (out,) + tuple(grads), (ref,) + tuple(ref_grads)):
                # max |error| relative to the largest |reference| value of the tensor
                err[name] = ((a.double() - b).abs().max() / b.abs().max()).item()
            results.append({"device": device, "dtype": str(dtype).replace("torch.", ""), "kernel": kernel,
                            "causal": causal, "max_rel_err": err})
    tol = {"float64": 1e-9, "bfloat16": 2e-2}
    ok = all(max(r["max_rel_err"].values()) <= tol[r["dtype"]] for r in results)
    print(json.dumps({"check": "dilated_vs_materialised", "n": n, "segments": segments, "dilations": dilations,
                      "results": results, "tolerance": tol, "ok": ok}))
    return 0 if ok else 1


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=32768)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--segments", type=lambda s: [int(x) for x in s.split(",")], default=PAPER_SEGMENTS)
    p.add_argument("--dilations", type=lambda s: [int(x) for x in s.split(",")], default=PAPER_DILATIONS)
    p.add_argument("--causal", action="store_true")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--kernel", choices=["auto", "flash", "math"], default="auto", help="dilated: per-piece kernel")
    p.add_argument("--dense", action="store_true", help="time dense SDPA (fwd and bwd separately) instead")
    p.add_argument("--backend", choices=["default", "flash", "efficient", "cudnn"], default="default",
                   help="--dense: SDPA backend")
    p.add_argument("--check", action="store_true", help="correctness self-check at N=256")
    args = p.parse_args(argv)
    if len(args.segments) != len(args.dilations):
        p.error("--segments and --dilations pair up as (w_i, r_i) and need the same length")
    return args


def main(argv):
    args = parse_args(argv)
    if args.check:
        return check(args)
    if not torch.cuda.is_available():
        print(json.dumps({"error": "no CUDA device visible to torch"}))
        return 1
    result = time_dense(args) if args.dense else time_dilated(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
