#include "framework/dist/mesh.h"

#include "framework/core/error.h"

namespace longnet::dist {

Mesh make_mesh(Communicator& world, int dp, int sp) {
  LN_CHECK(dp >= 1 && sp >= 1 && dp * sp == world.size(), "[make_mesh] data-parallel degree ", dp,
           " x sequence-parallel degree ", sp, " must equal the world size ", world.size());
  Mesh m;
  m.dp_size = dp;
  m.sp_size = sp;
  m.dp_rank = world.rank() / sp;
  m.sp_rank = world.rank() % sp;
  m.sp = world.split(m.dp_rank, m.sp_rank);
  m.dp = world.split(m.sp_rank, m.dp_rank);
  return m;
}

}  // namespace longnet::dist
