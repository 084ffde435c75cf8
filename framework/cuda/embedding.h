#pragma once
// CUDA kernels for embedding lookup and its deterministic backward; same parameter structs as
// framework/cpu/embedding.h. Operands live on `device`; ids must already be in range (see
// cuda::first_out_of_range in framework/cuda/index.h).
#include "framework/cpu/embedding.h"

namespace longnet::cuda {

/// out[i, :] = weight[ids[i], :] for any dtype. Rows move as 16-byte vectors when the table's
/// rows are contiguous and every row start is 16-byte aligned, element by element otherwise.
void embedding(int device, const cpu::EmbeddingParams& p);

/// grad_weight[v, :] = sum of grad_out[i, :] over i with ids[i] == v, added in increasing i with
/// f32 accumulation (f64 for f64); rows of unused ids are zero. grad_weight and grad_out share
/// `dtype`: f32, f64, bf16 or f16 (16-bit sums are rounded once). The (id, position) pairs are
/// radix-sorted (stable), each id's run of them is bounded once, and blocks of a few ids per
/// column chunk sum each id's rows in position order, so the result is bitwise reproducible and
/// equal to the CPU kernel's. Needs n < 2^31, V < 2^31.
void embedding_backward(int device, const cpu::EmbeddingBackwardParams& p);

}  // namespace longnet::cuda
