// Broadcasting of a small shape against a full one, shared by the binary ops (b against a) and
// the reductions (sum_to_shape's target against x), on every path.
//
// Rule: small has at most as many dims as full and is left-padded with 1s; every dim equals
// full's or is 1. A dim where small has full's extent is "kept", one where small has 1 (and
// full does not) is "broadcast" (the binary ops repeat b along it; the reductions sum over it).
//
// The layout drops dims of extent 1 and merges neighbours of the same kind, so the index math
// in kernels runs over at most kMaxDims alternating groups (in practice one to three):
//   [N, D, H, W, C] vs [C]             -> {N*D*H*W broadcast, C kept}
//   [N, D, H, W, C] vs [N, 1, 1, 1, 1] -> {N kept, D*H*W*C broadcast}
//   [N, D, H, W, C] vs [N, 1, 1, 1, C] -> {N kept, D*H*W broadcast, C kept}
// Groups alternate in kind, so there are at most kMaxDims / 2 groups of each kind.
#pragma once

#include <cstdint>

#include "runtime/host_device.h"
#include "runtime/tensor.h"

namespace ctsr {

struct BroadcastLayout {
  int groups = 0;                     // after dropping extent-1 dims and merging
  int64_t extent[kMaxDims] = {};      // outermost group first
  bool kept[kMaxDims] = {};
  int first_kept = 0;                 // outermost kept group (== groups when none is kept)
  int64_t full_numel = 1;             // elements of the full shape
  int64_t kept_numel = 1;             // elements of the small shape (product of kept groups)
  int64_t broadcast_numel = 1;        // product of the broadcast groups (elements summed per output)

  bool same_shape() const { return broadcast_numel == 1; }   // nothing is broadcast
  bool scalar() const { return kept_numel == 1; }            // small has one element
};

// Checks the rule and builds the layout. On failure the message names the op, both tensors
// and their shapes: "add: b [3, 4] does not broadcast to a [2, 3, 5] (dim 2: 4 vs 5)".
inline BroadcastLayout broadcast_layout(const char* op, const char* full_name, const Shape& full,
                                        const char* small_name, const Shape& small) {
  CTSR_CHECK(small.ndim() <= full.ndim(), op, ": ", small_name, " ", small.str(), " does not broadcast to ", full_name,
             " ", full.str(), " (", small.ndim(), " dims, at most ", full.ndim(), ")");
  BroadcastLayout layout;
  const int pad = full.ndim() - small.ndim();
  for (int d = 0; d < full.ndim(); ++d) {
    const int64_t f = full[d];
    const int64_t s = d < pad ? 1 : small[d - pad];
    CTSR_CHECK(s == f || s == 1, op, ": ", small_name, " ", small.str(), " does not broadcast to ", full_name, " ",
               full.str(), " (dim ", d, ": ", s, " vs ", f, "; expected ", f, " or 1)");
    layout.full_numel *= f;
    if (f == 1) continue;  // kept and broadcast alike: no index math
    const bool kept = s == f;
    if (kept) layout.kept_numel *= f;
    else layout.broadcast_numel *= f;
    if (layout.groups > 0 && layout.kept[layout.groups - 1] == kept) {
      layout.extent[layout.groups - 1] *= f;
    } else {
      layout.extent[layout.groups] = f;
      layout.kept[layout.groups] = kept;
      ++layout.groups;
    }
  }
  layout.first_kept = layout.groups;
  for (int g = layout.groups - 1; g >= 0; --g)
    if (layout.kept[g]) layout.first_kept = g;
  return layout;
}

// Flat index into the small tensor of the full tensor's flat index i. Groups are walked from the
// innermost out and the walk stops at the outermost kept group, so the usual patterns cost one
// division ([C]: i % C) or two ([N, 1, 1, 1, C]).
CTSR_HD inline int64_t broadcast_small_index(const BroadcastLayout& layout, int64_t i) {
  int64_t index = 0, stride = 1;
  for (int g = layout.groups - 1; g >= layout.first_kept; --g) {
    const int64_t extent = layout.extent[g];
    const int64_t coordinate = g == 0 ? i : i % extent;
    if (layout.kept[g]) {
      index += coordinate * stride;
      stride *= extent;
    }
    i /= extent;
  }
  return index;
}

}  // namespace ctsr
