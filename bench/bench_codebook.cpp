// The codebook family (kernels/codebook.h: the VQ-AE's vector quantisation and its EMA codebook
// update) on every device this build has. The latents are channels-last [N, D, H, W, C] rows of
// C channels against K codes. GPU size: the latents of a batch of 32 volumes of 200 x 128 x 128
// through the 8x VQ-AE, [32, 25, 16, 16, 8], against its 8192 codes of 8 (configs/vqae_8x.yaml);
// the cpu and cuda_on_cpu cases run [1, 5, 4, 4, 8] against 64 codes so that a
// `--benchmark_min_time=0.001` pass over the host paths stays quick on a 2-core machine.
// Args: N, D, H, W, C, K.
//
// Reported, per call (rows = N D H W):
//   codebook_nearest         TFLOP/s of the distances: 3 FLOPs (difference, square, sum) per
//                            row, code and channel; the comparisons are not counted
//   codebook_lookup          GB/s: an index read (8 bytes), a code read and a row written
//                            (4 C each) per row
//   codebook_statistics      GB/s: a row (4 C) and its index (8) read per row; the counts and
//                            sums written ([K], [K, C]) are not counted
//   codebook_ema_embeddings  GB/s: counts (4) and sums, candidates and embeddings (4 C each) per
//                            code, read or written once
//
// GPU cases enqueue bench::kGpuRepeats calls per benchmark iteration and synchronise once, so the figure
// is throughput, not launch latency. codebook_statistics reads one flag back per call (its index
// check), so each of its calls synchronises by itself.
#include <benchmark/benchmark.h>

#include "bench/bench_util.h"
#include "kernels/codebook.h"

namespace {

using namespace ctsr::bench;

enum class Op { nearest, lookup, statistics, ema_embeddings };

void run_codebook(benchmark::State& state, Device device, Op op) {
  const ctsr::Shape shape = shape_from_args(state);
  const int64_t channels = shape[4], codes = state.range(5), rows = shape.numel() / channels;
  Tensor latent = filled(shape, -1.0f, 1.0f, 1, device);
  Tensor embeddings = filled({codes, channels}, -1.0f, 1.0f, 2, device);
  Tensor indices = ctsr::codebook_nearest(latent, embeddings);
  Tensor ema_counts = filled({codes}, 0.0f, 4.0f, 3, device);  // some below the threshold: restarts
  Tensor candidates = filled({codes, channels}, -1.0f, 1.0f, 4, device);
  const int repeats = time_calls(state, device, [&] {
    switch (op) {
      case Op::nearest: benchmark::DoNotOptimize(ctsr::codebook_nearest(latent, embeddings).raw_data()); break;
      case Op::lookup: benchmark::DoNotOptimize(ctsr::codebook_lookup(indices, embeddings).raw_data()); break;
      case Op::statistics:
        benchmark::DoNotOptimize(ctsr::codebook_statistics(latent, indices, codes).sums.raw_data());
        break;
      case Op::ema_embeddings:
        benchmark::DoNotOptimize(
            ctsr::codebook_ema_embeddings(ema_counts, embeddings, 1e-5, 1.0, candidates).raw_data());
        break;
    }
  });
  const double r = double(rows), k = double(codes), c = double(channels);
  switch (op) {
    case Op::nearest: set_flop_rate(state, 3.0 * r * k * c, repeats); break;
    case Op::lookup: set_bandwidth(state, r * (8.0 + 8.0 * c), repeats); break;
    case Op::statistics: set_bandwidth(state, r * (8.0 + 4.0 * c), repeats); break;
    case Op::ema_embeddings: set_bandwidth(state, k * (4.0 + 12.0 * c), repeats); break;
  }
}

CTSR_BENCH_CASES {
  const std::pair<Op, const char*> ops[] = {{Op::nearest, "codebook_nearest"},
                                           {Op::lookup, "codebook_lookup"},
                                           {Op::statistics, "codebook_statistics"},
                                           {Op::ema_embeddings, "codebook_ema_embeddings"}};
  for (const auto& [op, name] : ops) {
    on_devices(name, {{1, 5, 4, 4, 8, 64}}, {{1, 5, 4, 4, 8, 64}}, {{32, 25, 16, 16, 8, 8192}},
               [op = op](benchmark::State& s, Device d) { run_codebook(s, d, op); });
  }
}

}  // namespace
