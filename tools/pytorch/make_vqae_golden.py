#!/usr/bin/python3
"""Golden data for the VQ-AE importer (tests/test_vqae.cpp), from an independent PyTorch model.

The model below is written from ../shared/specs/patchvolume-vqae.md (module names and tensor
layouts as in the released checkpoint), at a small width so the files stay small:
n_hiddens 4 (level widths 4, 8, 16, 16), GroupNorm with 2 groups, eps 1e-6, attention 4 heads x 32,
embedding_dim 8, 64 codes. Weights are random (PyTorch's default init, GroupNorm affine and
biases perturbed so every parameter matters; codes drawn so their spread resembles a trained
codebook's).

With --levels 2 it makes the same model at 4x (PatchVolume_4x's layout: two halvings, level widths
4, 8, 8) into tests/data/vqae4x/, whose latents are [8, 8, 4, 12].

Writes tests/data/vqae/ (8x; tests/data/vqae4x/ with --levels 2):
  tiny.ckpt        a Lightning-style checkpoint (torch.save zip): the state dict plus what a loader
                   must skip: optimizer_states, lr_schedulers, callbacks, hyper_parameters holding
                   an object of a class the loader cannot know, a volume discriminator's and a
                   perceptual loss's weights, and the codebook's training buffers N and z_avg
  input.npy        a [32, 16, 48] volume on the [-1, 1] scale (smooth structures plus texture)
  encode.npy       encode(input):            [8, 4, 2, 6]
  patch16.npy      patch_encode(input, 16):  [8, 4, 2, 6]
  decode.npy       decode(encode(input)):    [32, 16, 48] (quantised on the way)
  indices.npy      the code index of every latent voxel of encode.npy, int64 [4, 2, 6]
  README.txt       these facts
Run by hand when the model changes (CI never runs it):
    apt-get install -y python3-torch python3-numpy
    /usr/bin/python3 tools/pytorch/make_vqae_golden.py
    /usr/bin/python3 tools/pytorch/make_vqae_golden.py --levels 2
"""

import argparse
import collections
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
# Halvings per axis: 3 is PatchVolume_8x, 2 PatchVolume_4x (set by --levels in main).
LEVELS = 3
OUT = None

N_HIDDENS, GROUPS, EPS, EMBED, CODES = 4, 2, 1e-6, 8, 64
HEADS, HEAD_DIM = 4, 32


def norm(c):
    return nn.GroupNorm(GROUPS, c, eps=EPS, affine=True)


class Res(nn.Module):
    """x + conv2(silu(norm2(conv1(silu(norm1(x)))))), with a 1x1x1 resConv when widths differ."""

    def __init__(self, ci, co):
        super().__init__()
        self.norm1 = norm(ci)
        self.conv1 = nn.Conv3d(ci, co, 3, padding=1)
        self.norm2 = norm(co)
        self.conv2 = nn.Conv3d(co, co, 3, padding=1)
        if ci != co:
            self.resConv = nn.Conv3d(ci, co, 1)

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        skip = self.resConv(x) if hasattr(self, "resConv") else x
        return skip + h


class Attn(nn.Module):
    def __init__(self, c):
        super().__init__()
        inner = HEADS * HEAD_DIM
        self.norm = norm(c)
        self.to_qkv = nn.Linear(c, 3 * inner, bias=False)
        self.to_out = nn.Conv3d(inner, c, 1)

    def forward(self, x):
        b, c, d, h, w = x.shape
        t = self.norm(x).flatten(2).transpose(1, 2)  # [b, d*h*w, c], D-major token order
        q, k, v = self.to_qkv(t).chunk(3, dim=2)
        split = lambda u: u.reshape(b, -1, HEADS, HEAD_DIM).transpose(1, 2)  # [b, heads, n, 32]
        q, k, v = split(q), split(k), split(v)
        a = torch.softmax(q @ k.transpose(-1, -2) / HEAD_DIM ** 0.5, dim=-1) @ v
        o = a.transpose(1, 2).reshape(b, d, h, w, HEADS * HEAD_DIM).permute(0, 4, 1, 2, 3)
        return self.to_out(o) + x


class Block(nn.Module):
    pass


def widths():
    """Level widths n, 2n, ... (one per halving), then the last again: [4, 8, 16, 16] at 8x."""
    ch = [N_HIDDENS * 2 ** i for i in range(LEVELS)]
    return ch + [ch[-1]]


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        ch = widths()
        self.conv_first = nn.Conv3d(1, ch[0], 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        for i in range(LEVELS + 1):
            ci = ch[0] if i == 0 else ch[i - 1]
            b = Block()
            b.res1 = Res(ci, ch[i])
            b.res2 = Res(ch[i], ch[i])
            b.down = nn.Conv3d(ch[i], ch[i], 4, stride=2, padding=1) if i < LEVELS else nn.Identity()
            self.conv_blocks.append(b)
        last = ch[LEVELS]
        self.mid_block = Block()
        self.mid_block.res1, self.mid_block.attn, self.mid_block.res2 = Res(last, last), Attn(last), Res(last, last)
        self.final_block = nn.Sequential(norm(last), nn.SiLU(), nn.Conv3d(last, EMBED, 3, padding=1))

    def forward(self, x):
        h = self.conv_first(x)
        for b in self.conv_blocks:
            h = b.down(b.res2(b.res1(h)))
        m = self.mid_block
        return self.final_block(m.res2(m.attn(m.res1(h))))


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_trans = nn.ConvTranspose3d(c, c, 4, stride=2, padding=1)

    def forward(self, x):
        return self.conv_trans(x)


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        ch = widths()[::-1]
        self.conv_first = nn.Conv3d(EMBED, ch[0], 3, padding=1)
        self.mid_block = Block()
        self.mid_block.res1, self.mid_block.attn, self.mid_block.res2 = Res(ch[0], ch[0]), Attn(ch[0]), Res(ch[0], ch[0])
        self.conv_blocks = nn.ModuleList()
        for i in range(LEVELS + 1):
            ci = ch[0] if i == 0 else ch[i - 1]
            b = Block()
            b.res1 = Res(ci, ch[i])
            b.res2 = Res(ch[i], ch[i])
            b.up = Up(ch[i]) if i < LEVELS else nn.Identity()
            self.conv_blocks.append(b)
        self.final_block = nn.Sequential(norm(ch[-1]), nn.SiLU(), nn.Conv3d(ch[-1], 1, 3, padding=1))

    def forward(self, z):
        m = self.mid_block
        h = m.res2(m.attn(m.res1(self.conv_first(z))))
        for b in self.conv_blocks:
            h = b.up(b.res2(b.res1(h)))
        return self.final_block(h)


class Codebook(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("embeddings", torch.randn(CODES, EMBED))
        self.register_buffer("N", torch.ones(CODES))
        self.register_buffer("z_avg", torch.randn(CODES, EMBED))

    def indices(self, z):
        flat = z.permute(0, 2, 3, 4, 1).reshape(-1, EMBED).double()
        d = ((flat[:, None, :] - self.embeddings.double()[None]) ** 2).sum(-1)
        top2 = d.topk(2, largest=False).values
        margin = (top2[:, 1] - top2[:, 0]).min().item()
        return d.argmin(1), margin


class VQAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()
        self.pre_vq_conv = nn.Conv3d(EMBED, EMBED, 1)
        self.post_vq_conv = nn.Conv3d(EMBED, EMBED, 1)
        self.codebook = Codebook()

    def encode(self, x):
        return self.pre_vq_conv(self.encoder(x))

    def patch_encode(self, x, p):
        b, c, D, H, W = x.shape
        pd, ph, pw = D // p, H // p, W // p
        patches = x.reshape(b, c, pd, p, ph, p, pw, p).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(-1, c, p, p, p)
        z = self.encode(patches)
        s = z.shape[-1]
        z = z.reshape(b, pd, ph, pw, EMBED, s, s, s).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return z.reshape(b, EMBED, pd * s, ph * s, pw * s)

    def decode(self, z):
        idx, margin = self.codebook.indices(z)
        b, _, d, h, w = z.shape
        q = self.codebook.embeddings[idx].reshape(b, d, h, w, EMBED).permute(0, 4, 1, 2, 3)
        return self.decoder(self.post_vq_conv(q)), idx.reshape(d, h, w), margin


class RunConfig:
    """Stands in for the OmegaConf DictConfig of a real checkpoint: a class the loader cannot know."""

    def __init__(self):
        self.model = {"n_hiddens": N_HIDDENS, "num_groups": GROUPS, "embedding_dim": EMBED, "n_codes": CODES,
                      "downsample": [2 ** LEVELS] * 3}
        self.lr = 3e-4


def make_input(gen):
    D, H, W = 32, 16, 48
    z, y, x = torch.meshgrid(torch.linspace(-1, 1, D), torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    body = ((x / 0.9) ** 2 + (y / 0.8) ** 2 < 1).float()
    vol = -1 + 1.2 * body + 0.3 * torch.sin(3 * x + 2 * z) * body + 0.15 * torch.randn(D, H, W, generator=gen)
    return vol.clamp(-1, 1)


def main():
    global LEVELS, OUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, choices=(2, 3), default=3, help="halvings per axis: 3 (8x) or 2 (4x)")
    LEVELS = parser.parse_args().levels
    OUT = os.path.join(HERE, "..", "..", "tests", "data", "vqae" if LEVELS == 3 else "vqae4x")
    torch.manual_seed(20261125)
    gen = torch.Generator().manual_seed(7)
    model = VQAE()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or ".norm.weight" in name or name.endswith("final_block.0.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    model.eval()
    x = make_input(gen)
    with torch.no_grad():
        z = model.encode(x[None, None].double().float())
        zp = model.patch_encode(x[None, None], 16)
        # Codes spread like the encoder's output, so decode's quantisation picks varied codes.
        model.codebook.embeddings.copy_(z.permute(0, 2, 3, 4, 1).reshape(-1, EMBED).std(0) * torch.randn(CODES, EMBED, generator=gen) + z.mean())
        y, idx, margin = model.decode(z)
    print("parameters", sum(p.numel() for p in model.parameters()))
    print("encode", tuple(z.shape), "decode", tuple(y.shape), "distinct codes", idx.unique().numel(), "min margin", margin)
    if margin < 1e-4:
        sys.exit("two codes are nearly equally near a latent voxel: pick another seed")

    state = collections.OrderedDict(model.state_dict())
    disc = nn.Sequential(nn.Conv3d(1, 4, 4, stride=2, padding=1), nn.BatchNorm3d(4))
    for k, v in disc.state_dict().items():
        state["volume_discriminator." + k] = v
    state["perceptual_loss.perceptual_model.conv1.weight"] = torch.randn(4, 1, 3, 3, 3)
    # Optimiser state for the first few parameters only: enough to carry tensors the loader must
    # skip, small enough to keep the file small.
    opt = torch.optim.Adam(list(model.parameters())[:4], lr=3e-4)
    model.train()
    loss = model.decode(model.encode(x[None, None]))[0].abs().mean()
    loss.backward()
    opt.step()
    ckpt = {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "1.9.5",
        "state_dict": state,
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val/recon_loss'}": {"best_model_score": torch.tensor(0.0123)}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [],
        "hyper_parameters": {"cfg": RunConfig()},
    }
    os.makedirs(OUT, exist_ok=True)
    torch.save(ckpt, os.path.join(OUT, "tiny.ckpt"))
    squeeze = lambda t: t[0].numpy().astype(np.float32)
    np.save(os.path.join(OUT, "input.npy"), x.numpy().astype(np.float32))
    np.save(os.path.join(OUT, "encode.npy"), squeeze(z))
    np.save(os.path.join(OUT, "patch16.npy"), squeeze(zp))
    np.save(os.path.join(OUT, "decode.npy"), y[0, 0].numpy().astype(np.float32))
    np.save(os.path.join(OUT, "indices.npy"), idx.numpy().astype(np.int64))
    latent = "[8,%d,%d,%d]" % tuple(z.shape[2:])
    with open(os.path.join(OUT, "README.txt"), "w") as f:
        f.write("Made by tools/pytorch/make_vqae_golden.py%s (torch %s). %dx (levels %d, widths %s), n_hiddens %d,\n"
                "num_groups %d, eps %g, attention %d x %d, embedding_dim %d, n_codes %d. input [32,16,48]; encode and\n"
                "patch16 (patch 16) %s; decode(encode(input)) [32,16,48]; indices %s. Smallest gap between\n"
                "the nearest and second-nearest code over all latent voxels: %.3g.\n"
                % ("" if LEVELS == 3 else " --levels %d" % LEVELS, torch.__version__, 2 ** LEVELS, LEVELS, widths(),
                   N_HIDDENS, GROUPS, EPS, HEADS, HEAD_DIM, EMBED, CODES, latent, "[%d,%d,%d]" % tuple(z.shape[2:]), margin))


if __name__ == "__main__":
    main()
