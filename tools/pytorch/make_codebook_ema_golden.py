#!/usr/bin/python3
"""Golden EMA codebook steps for tests/test_codebook_ema.cpp, computed with torch the way the
original 3D-MedDiffusion Codebook (AutoEncoder/model/codebook.py) computes them.

Writes tests/data/codebook_ema_golden.txt. Run by hand when the cases change (CI never runs it):
    apt-get install -y python3-torch         # Debian's PyTorch (CPU)
    /usr/bin/python3 tools/pytorch/make_codebook_ema_golden.py

One tiny problem (7 codes, 4 channels, 53 latent rows per step, 3 steps, decay 0.99, smoothing
1e-7, restart threshold 1.0), in float64, starting from the state right after the original's
initialisation (N = 1). Per step, as the original's training forward does:
  distances = |z|^2 - 2 z e^T + |e|^2, indices = argmin (the original's expansion)
  commitment = 0.25 * mse(z, e[indices])
  n_total = one_hot(indices).sum(0), encode_sum = z^T one_hot
  N = N * 0.99 + 0.01 n_total, z_avg = z_avg * 0.99 + 0.01 encode_sum^T
  n = N.sum(), weights = (N + 1e-7) / (n + K 1e-7) * n, embeddings = z_avg / weights
  usage = N >= 1.0, embeddings = embeddings * usage + candidates * (1 - usage)
  perplexity = exp(-sum p log(p + 1e-7)), p = mean of one_hot over the rows
The candidates (the original's _k_rand, a random permutation of the batch) are inputs here, so
the test can pass the same ones; code 6 starts far from every latent, so it is never chosen and
restarts after the first step.

Inputs come from an integer recipe (exact in float32 and float64):
  lcg(state) = (state * 1664525 + 1013904223) mod 2^32; draw = state >> 8  (24 bits)
  value(draw) = (draw - 2^23) / 2^23, in [-1, 1)
Arrays are printed with every value exactly (repr of the float64).
"""

import os

import torch

ONE = 1 << 23
CODES, CHANNELS, ROWS, STEPS = 7, 4, 53, 3
DECAY, SMOOTHING, THRESHOLD, BETA = 0.99, 1e-7, 1.0, 0.25


class Lcg:
    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFF

    def values(self, count):
        out = []
        for _ in range(count):
            self.state = (self.state * 1664525 + 1013904223) & 0xFFFFFFFF
            out.append(((self.state >> 8) - ONE) / ONE)
        return out


def tensor(lcg, *shape, scale=1.0, shift=0.0):
    n = 1
    for s in shape:
        n *= s
    return torch.tensor([v * scale + shift for v in lcg.values(n)], dtype=torch.float64).reshape(shape)


def line(name, t):
    t = t.detach().reshape(-1) if isinstance(t, torch.Tensor) else torch.tensor([t], dtype=torch.float64)
    values = " ".join(repr(float(v)) for v in t.tolist())
    return f"{name} {t.numel()} {values}"


def main():
    torch.set_num_threads(1)
    lcg = Lcg(2024)
    embeddings = tensor(lcg, CODES, CHANNELS)
    embeddings[CODES - 1] += 10.0  # far from every latent: never chosen, restarts
    z_avg = embeddings.clone()
    n_ema = torch.ones(CODES, dtype=torch.float64)

    lines = [
        "# EMA codebook golden data for tests/test_codebook_ema.cpp: written by",
        "# tools/pytorch/make_codebook_ema_golden.py (the recipe and the steps are in that script)",
        f"# torch {torch.__version__}, float64, CPU",
        f"problem {CODES} {CHANNELS} {ROWS} {STEPS} {DECAY!r} {SMOOTHING!r} {THRESHOLD!r} {BETA!r}",
        line("embeddings", embeddings),
        line("N", n_ema),
        line("z_avg", z_avg),
    ]
    for step in range(STEPS):
        z = tensor(lcg, ROWS, CHANNELS, scale=1.5)
        candidates = tensor(lcg, CODES, CHANNELS, scale=0.5, shift=0.25)
        distances = (z ** 2).sum(dim=1, keepdim=True) - 2 * z @ embeddings.t() \
            + (embeddings.t() ** 2).sum(dim=0, keepdim=True)
        indices = torch.argmin(distances, dim=1)
        onehot = torch.nn.functional.one_hot(indices, CODES).type_as(z)
        quantized = torch.nn.functional.embedding(indices, embeddings)
        commitment = BETA * torch.nn.functional.mse_loss(z, quantized)

        n_total = onehot.sum(dim=0)
        encode_sum = z.t() @ onehot
        n_ema = n_ema * DECAY + n_total * (1 - DECAY)
        z_avg = z_avg * DECAY + encode_sum.t() * (1 - DECAY)
        n = n_ema.sum()
        weights = (n_ema + SMOOTHING) / (n + CODES * SMOOTHING) * n
        embeddings = z_avg / weights.unsqueeze(1)
        usage = (n_ema.view(CODES, 1) >= THRESHOLD).type_as(z)
        embeddings = embeddings * usage + candidates * (1 - usage)

        avg_probs = onehot.mean(dim=0)
        perplexity = torch.exp(-torch.sum(avg_probs * torch.log(avg_probs + 1e-7)))

        lines += [
            f"step {step}",
            line("latents", z),
            line("candidates", candidates),
            line("indices", indices.to(torch.float64)),
            line("commitment_loss", commitment),
            line("perplexity", perplexity),
            line("restarted", 1 - usage.view(-1)),
            line("embeddings", embeddings),
            line("N", n_ema),
            line("z_avg", z_avg),
        ]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data",
                       "codebook_ema_golden.txt")
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, out)
    print("wrote", os.path.normpath(out))


if __name__ == "__main__":
    main()
