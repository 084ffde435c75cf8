#!/usr/bin/env python3
"""PyTorch reference of LongNet dilated attention (Ding et al. 2023), and dense SDPA timing.

The baseline that `longnet bench attention --time` compares against. Dilated attention, for each
pair (w, r) of the schedule: the sequence is cut into segments of w rows (w > N is clamped to N; a
shorter last segment is its own call, which equals padding it with masked rows); in each segment
the rows offset, offset + r, ... with offset = head mod r attend densely to each other (causally
within the segment when causal); each branch yields (out, lse) from PyTorch's fused flash kernel;
the branches merge by log-sum-exp: L = logsumexp_b lse_b, O = sum_b exp(lse_b - L) o_b.

One fused call covers all heads of a branch: an index gather puts each head's own rows side by side
as (B * segments, H, m, D), m = ceil(w / r). A head whose offset leaves it one row short of m gets a
padding row at the END of each segment: with causal attention no real query sees it, and its output
and lse go to a discarded slot at scatter time; in the backward its lse is +inf, so its
probabilities P = exp(S - lse) are 0 and it adds nothing to any gradient. Without causality a
padding key would be seen, so non-causal branches group the heads by their row count instead (at
most two calls per branch, none padded). The shorter last segment (N % w != 0) is a call of its own.
The gather and scatter indices are built once per (N, H, schedule, causal, device) and cached.

Gradients are exact through the merge weights. The backward of a part of an attention depends on
the FINAL output and lse only: with P = exp(S - L) (the merged probabilities) and
Delta = rowsum(dO * O), dS = P (dO V^T - Delta). So each call's fused backward is given the
gathered rows of the merged O and L, and the sum over calls is the gradient of the merged result,
including the part that flows through exp(lse_b - L). `--check` verifies this against a
materialised softmax over the union of the branches' keys (duplicates counted).

Prints one JSON line per run.
"""
import argparse
import json
import math
import sys
from typing import NamedTuple

import torch
import torch.nn.functional as F

PAPER_SEGMENTS = [2048, 4096, 8192, 16384, 32768]
PAPER_DILATIONS = [1, 2, 4, 6, 12]


# --- per-call kernels: q, k, v (batch, heads, m, D) views -> out (batch, heads, m, D), lse (batch, heads, m)

def acc_dtype(t):
    """Accumulation dtype: f64 for f64 inputs, else f32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class MathKernel:
    """Materialised softmax of one call; any device and dtype (--check, and where no flash kernel exists)."""
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
    """PyTorch's fused flash attention, which returns the lse the merge needs: the CUDA kernel
    (16-bit), or on the CPU its CPU counterpart (any float dtype; lets --check run the fused-call
    path through a flash kernel's own backward on a machine without a GPU)."""
    name = "flash"

    def forward(self, q, k, v, causal, scale):
        if not q.is_cuda:
            out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, scale=scale)
            return out, lse, None
        r = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal, False, scale=scale)
        out, lse, cum_q, cum_k, max_q, max_k, seed, offset = r[:8]
        return out, lse, (cum_q, cum_k, max_q, max_k, seed, offset)

    def backward(self, dout, q, k, v, out, lse, causal, scale, ctx):
        if not q.is_cuda:
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                dout, q, k, v, out, lse, 0.0, causal, scale=scale)
        cum_q, cum_k, max_q, max_k, seed, offset = ctx
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_backward(
            dout, q, k, v, out, lse, cum_q, cum_k, max_q, max_k, 0.0, causal, seed, offset, scale=scale)
        return dq, dk, dv


def has_cpu_flash():
    return hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")


def pick_kernel(q, name):
    """auto: the fused flash kernel where PyTorch has one (CUDA 16-bit with head dim <= 256; the CPU),
    else the materialised softmax."""
    if name == "auto":
        cuda_flash = q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and q.shape[-1] <= 256
        name = "flash" if cuda_flash or (not q.is_cuda and has_cpu_flash()) else "math"
    return FlashKernel() if name == "flash" else MathKernel()


# --- the fused calls of a schedule

class Call(NamedTuple):
    """One fused kernel call: `heads` heads of `segments` segments, m rows each. gather (segments * m *
    heads,) indexes the rows of a (B, N * H, D) view, ordered (segment, row, head); scatter equals it
    except that padding rows point at slot N * H, one past the real rows (a discarded slot)."""
    branch: int
    segments: int
    m: int
    heads: int
    gather: torch.Tensor
    scatter: torch.Tensor


def head_groups(length, heads, r, causal):
    """The heads that have rows in a segment of `length` rows, grouped into fused calls: [(heads, m)].
    Head h keeps rows g, g + r, ... with g = h mod r: ceil((length - g) / r) of them. Causal: one call
    padded to the largest count; non-causal: one call per count (no padding)."""
    counts = [max(0, -(-(length - h % r) // r)) for h in range(heads)]
    if causal:
        present = [h for h in range(heads) if counts[h] > 0]
        return [(present, max(counts))] if present else []
    return [([h for h in range(heads) if counts[h] == m], m) for m in sorted(set(counts), reverse=True) if m > 0]


def call_indices(n, heads, start, segments, length, r, group, m):
    """(gather, scatter) of the call over `segments` segments of `length` rows from row `start`."""
    h = torch.tensor(group, dtype=torch.int64)
    local = (h % r)[None, :] + r * torch.arange(m)[:, None]             # (m, Hs) row in the segment
    real = local < length
    first = start + length * torch.arange(segments)                       # (S,)
    rows = first[:, None, None] + torch.where(real, local, 0)[None]      # (S, m, Hs); padding reads row 0
    index = rows * heads + h                                               # into the (B, N * H, D) view
    gather = index.flatten()
    if bool(real.all()):
        return gather, gather  # one tensor: a branch's indices take ~200 MB at 1M tokens
    return gather, torch.where(real[None], index, n * heads).flatten()


def branch_calls(n, heads, w, r, causal, branch):
    """The calls of branch (w, r): the full segments together, the shorter last one apart."""
    w = min(w, n)
    full, tail = n // w, n % w
    pieces = [(0, full, w)] if full > 0 else []
    if tail > 0:
        pieces.append((full * w, 1, tail))
    calls = []
    for start, segments, length in pieces:
        for group, m in head_groups(length, heads, r, causal):
            gather, scatter = call_indices(n, heads, start, segments, length, r, group, m)
            calls.append(Call(branch, segments, m, len(group), gather, scatter))
    return calls


_PLANS = {}


def schedule_calls(n, heads, segments, dilations, causal, device):
    """All calls of the schedule, their indices on `device`; cached, built once per configuration."""
    key = (n, heads, tuple(segments), tuple(dilations), causal, str(device))
    if key not in _PLANS:
        calls = [c for b, (w, r) in enumerate(zip(segments, dilations))
                 for c in branch_calls(n, heads, w, r, causal, b)]
        moved = []
        for c in calls:
            gather = c.gather.to(device)
            moved.append(c._replace(gather=gather, scatter=gather if c.scatter is c.gather else c.scatter.to(device)))
        _PLANS[key] = moved
    return _PLANS[key]


def flat_rows(t):
    """(B, N, H, D) -> (B, N * H, D), the view the indices address."""
    b, n, h, d = t.shape
    return t.reshape(b, n * h, d)


def gather_rows(flat, call):
    """A call's rows as a kernel operand (B*S, Hs, m, D): a contiguous (B*S, m, Hs, D) gather seen
    transposed, the layout the fused kernels read natively."""
    d = flat.shape[-1]
    return flat.index_select(1, call.gather).view(-1, call.m, call.heads, d).transpose(1, 2)


def gather_lse(lse, call):
    """(B, N * H + 1) -> (B*S, Hs, m) contiguous; padding rows read the last slot."""
    return lse.index_select(1, call.scatter).view(-1, call.m, call.heads).transpose(1, 2).contiguous()


def call_rows(t, batch):
    """A kernel result (B*S, Hs, m, ...) -> (B, S * m * Hs, ...), ordered as the call's indices."""
    return t.transpose(1, 2).reshape(batch, -1, *t.shape[3:])


class DilatedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, segments, dilations, causal, scale, kernel):
        b, n, h, d = q.shape
        calls = schedule_calls(n, h, segments, dilations, causal, q.device)
        slots = n * h + 1  # the last slot takes the padding rows' results
        acc = acc_dtype(q)
        # Rows a branch does not reach keep out 0 and lse -inf (weight 0 in the merge).
        outs = q.new_zeros(len(segments), b, slots, d)
        lses = torch.full((len(segments), b, slots), float("-inf"), dtype=acc, device=q.device)
        qf, kf, vf = flat_rows(q), flat_rows(k), flat_rows(v)
        kctxs = []
        for c in calls:
            o, l, kctx = kernel.forward(gather_rows(qf, c), gather_rows(kf, c), gather_rows(vf, c), causal, scale)
            outs[c.branch].index_copy_(1, c.scatter, call_rows(o, b))
            lses[c.branch].index_copy_(1, c.scatter, call_rows(l, b).to(acc))
            kctxs.append(kctx)
        # The LSE merge: softmax over the branches' lse (rows no branch reaches stay -inf and 0).
        merged_lse = torch.logsumexp(lses, dim=0)                      # (B, slots)
        weights = torch.exp(lses - merged_lse).nan_to_num(0.0).unsqueeze(-1)
        merged = torch.zeros(b, slots, d, dtype=acc, device=q.device)
        for out, weight in zip(outs, weights):
            merged.addcmul_(out, weight)
        merged = merged[:, :-1].view(b, n, h, d).to(q.dtype)
        merged_lse[:, -1] = float("inf")  # padding rows: P = 0 in the backward
        ctx.save_for_backward(q, k, v, merged, merged_lse)
        ctx.calls, ctx.kctxs, ctx.causal, ctx.scale, ctx.kernel = calls, kctxs, causal, scale, kernel
        return merged

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        b, n, h, d = q.shape
        grads = torch.zeros(3, b, n * h + 1, d, dtype=acc_dtype(q), device=q.device)  # dq, dk, dv
        flats = [flat_rows(t) for t in (dout, q, k, v, out)]
        for c, kctx in zip(ctx.calls, ctx.kctxs):
            parts = ctx.kernel.backward(*(gather_rows(t, c) for t in flats), gather_lse(lse, c), ctx.causal,
                                        ctx.scale, kctx)
            for acc, part in zip(grads, parts):
                acc.index_add_(1, c.scatter, call_rows(part, b).to(acc.dtype))
        dq, dk, dv = (g[:, :-1].view(b, n, h, d).to(q.dtype) for g in grads)
        return dq, dk, dv, None, None, None, None, None


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
    # A query no branch reaches attends to nothing (output 0); finite scores keep its gradient 0, not NaN.
    reached = (count > 0).any(-1, keepdim=True)
    p = torch.softmax(torch.where(reached, s, 0.0), dim=-1) * reached
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
            "causal": args.causal,
            "calls": len(schedule_calls(args.n, args.heads, args.segments, args.dilations, args.causal, q.device)),
            "fwd_bwd_ms": ms, "peak_bytes": torch.cuda.max_memory_allocated()}


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


# (batch, N, heads, D, segments, dilations) of --check. The first: N not a multiple of w = 100, heads
# not a multiple of r = 3, w = N. The second: shorter last segments with fewer rows than r (heads
# without rows there), r > heads, w > N (clamped), two branches with the same w. The third: rows that
# no branch reaches (no r = 1), whose output is 0.
CHECK_CASES = [(2, 256, 4, 32, [64, 128, 256, 100], [1, 2, 4, 3]),
               (2, 195, 5, 16, [16, 32, 64, 64, 1000], [1, 6, 4, 8, 3]),
               (1, 50, 3, 8, [16, 20], [2, 4])]


def check_one(device, dtype, kernel, causal, shape):
    """max |error| / max |reference| of out, dq, dk, dv against materialised_reference."""
    batch, n, heads, d, segments, dilations = shape
    g = torch.Generator(device=device).manual_seed(1)
    q, k, v = (torch.randn(batch, n, heads, d, generator=g, device=device, dtype=dtype).requires_grad_()
               for _ in range(3))
    dout = torch.randn(batch, n, heads, d, generator=g, device=device, dtype=dtype)
    out = dilated_attention(q, k, v, segments, dilations, causal, kernel)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = materialised_reference(q64, k64, v64, segments, dilations, causal)
    ref_grads = torch.autograd.grad(ref, (q64, k64, v64), dout.double())
    return {name: ((a.double() - b).abs().max() / b.abs().max()).item()
            for name, a, b in zip(("out", "dq", "dk", "dv"), (out,) + tuple(grads), (ref,) + tuple(ref_grads))}


def check(args):
    """Dilated reference vs the materialised softmax over the union of keys, outputs and grads; and
    the paper schedule's causal layer in one fused call per branch."""
    devices = [("cpu", torch.float64, "math")] + ([("cpu", torch.float64, "flash")] if has_cpu_flash() else [])
    if torch.cuda.is_available():
        devices.append(("cuda", torch.bfloat16, "flash"))
    results = []
    for device, dtype, kernel in devices:
        for shape in CHECK_CASES:
            for causal in (False, True):
                batch, n, heads, d, segments, dilations = shape
                calls = len(schedule_calls(n, heads, segments, dilations, causal, device))
                results.append({"device": device, "dtype": str(dtype).replace("torch.", ""), "kernel": kernel,
                                "batch": batch, "n": n, "heads": heads, "head_dim": d, "segments": segments,
                                "dilations": dilations, "causal": causal, "calls": calls,
                                "max_rel_err": check_one(device, dtype, kernel, causal, shape)})
    tol = {"float64": 1e-9, "bfloat16": 2e-2}
    paper_calls = len(schedule_calls(32768, 12, PAPER_SEGMENTS, PAPER_DILATIONS, True, "cpu"))
    ok = all(max(r["max_rel_err"].values()) <= tol[r["dtype"]] for r in results) and \
        paper_calls == len(PAPER_SEGMENTS)
    print(json.dumps({"check": "dilated_vs_materialised", "results": results, "tolerance": tol,
                      "paper_schedule_causal_calls": paper_calls, "ok": ok}))
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
    p.add_argument("--kernel", choices=["auto", "flash", "math"], default="auto",
                   help="dilated: the kernel of each fused call")
    p.add_argument("--dense", action="store_true", help="time dense SDPA (fwd and bwd separately) instead")
    p.add_argument("--backend", choices=["default", "flash", "efficient", "cudnn"], default="default",
                   help="--dense: SDPA backend")
    p.add_argument("--check", action="store_true", help="correctness self-check on small shapes")
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
