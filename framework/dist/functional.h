#pragma once
// Collectives as differentiable ops, for algorithms whose backward is itself communication:
// gathering a sequence split across ranks (backward: reduce-scatter of the gradient) and the
// all-to-all that trades a split of one dim for a split of another (backward: the reverse trade).
// Every rank of the group must make the same calls; so must their backward passes, which the
// engine runs in the same order on every rank when the graphs have the same shape. The
// communicator must outlive the recorded graph.
#include "framework/dist/communicator.h"

namespace longnet::dist {

/// x (..., m, ...) split along `dim` -> (..., size * m, ...): rank i's piece at i*m .. (i+1)*m.
/// Backward: the gradient summed over the ranks and split back along `dim`.
Tensor all_gather_dim(const Tensor& x, int64_t dim, Communicator& comm);

/// x whose `split_dim` is cut into size() pieces, piece j for rank j; -> each rank's pieces
/// received along `cat_dim` in rank order (split_dim shrinks by size(), cat_dim grows by it).
/// Backward: the same exchange with the dims swapped.
Tensor all_to_all_dim(const Tensor& x, int64_t split_dim, int64_t cat_dim, Communicator& comm);

}  // namespace longnet::dist
