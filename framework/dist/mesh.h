#pragma once
// The 2-D mesh of a run: data-parallel degree x sequence-parallel degree = world size. World rank
// w sits at (dp index w / sp, sp index w % sp), so the ranks that share a sequence are neighbours
// (the same node when ranks are numbered node by node) and talk the most over the fastest links.
#include <memory>

#include "framework/dist/communicator.h"

namespace longnet::dist {

/// This rank's groups in the mesh.
struct Mesh {
  int dp_size = 1, sp_size = 1;
  int dp_rank = 0, sp_rank = 0;
  /// The ranks holding the other parts of this rank's sequences.
  std::shared_ptr<Communicator> sp;
  /// The ranks holding the same part of other examples (one per data-parallel replica).
  std::shared_ptr<Communicator> dp;
};

/// Splits `world` into the groups of a dp x sp mesh (collective over world); dp * sp must equal
/// world.size().
Mesh make_mesh(Communicator& world, int dp, int sp);

}  // namespace longnet::dist
