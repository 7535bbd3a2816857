#!/usr/bin/python3
"""An independent PyTorch implementation of the conditional 3-D diffusion UNet, written from
../shared/specs/unet3d-diffusion.md ("Network") the way a PyTorch user would write it:
channels-first [N, C, D, H, W], stock nn.Conv3d / nn.Linear / nn.GroupNorm modules.

Module names map one-to-one onto ctsr's parameter names (model/unet.h):
    time_embed.0, time_embed.2, conv_in,
    down.<l>.block.<b>.{norm1,conv1,time_proj,norm2,conv2,skip}, down.<l>.attn.<b>.{norm,qkv,proj_out},
    down.<l>.downsample.conv, mid.{block1,attn,block2}, up.<l>.block.<b>, up.<l>.attn.<b>,
    up.<l>.upsample.conv, out_norm, conv_out
so export_state_dict() only has to move the input channels of every conv weight last:
PyTorch's [out, in, kD, kH, kW] becomes ctsr's [out, kD, kH, kW, in]; Linear weights ([out, in]),
biases and GroupNorm affines are the same in both.

Used by make_unet_golden.py (golden data for tests/test_unet_golden.cpp) and bench_unet_step.py
(the PyTorch eager baseline of one training step). Needs torch (Debian's python3-torch is enough).
"""

import dataclasses
import math
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclasses.dataclass
class UNetConfig:
    """The spec's `model:` keys; the defaults are the production configuration."""

    in_channels: int = 16
    out_channels: int = 8
    model_channels: int = 128
    channel_mult: List[int] = dataclasses.field(default_factory=lambda: [1, 2, 4, 8])
    num_blocks: int = 3
    attention_levels: List[bool] = dataclasses.field(default_factory=lambda: [False, False, True, True])
    head_channels: int = 64
    time_embed_dim: int = 512
    dropout: float = 0.1
    norm_groups: int = 32
    norm_eps: float = 1e-5

    def width(self, level):
        return self.model_channels * self.channel_mult[level]


def timestep_sinusoid(t, dim):
    """t [N] -> [N, dim]: [cos(t f), sin(t f)], f_i = exp(-ln(10000) i / half), half = dim / 2."""
    half = dim // 2
    i = torch.arange(half, dtype=torch.float64, device=t.device)
    f = torch.exp(-math.log(10000.0) * i / half)
    arg = t.to(torch.float64)[:, None] * f[None, :]
    return torch.cat([torch.cos(arg), torch.sin(arg)], dim=1)


class ResBlock(nn.Module):
    """skip(x) + conv2(dropout(silu(norm2(conv1(silu(norm1(x))) + time_proj(silu(temb))))))."""

    def __init__(self, ci, co, cfg):
        super().__init__()
        self.norm1 = nn.GroupNorm(cfg.norm_groups, ci, eps=cfg.norm_eps)
        self.conv1 = nn.Conv3d(ci, co, 3, padding=1)
        self.time_proj = nn.Linear(cfg.time_embed_dim, co)
        self.norm2 = nn.GroupNorm(cfg.norm_groups, co, eps=cfg.norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)
        self.conv2 = nn.Conv3d(co, co, 3, padding=1)
        self.skip = nn.Conv3d(ci, co, 1) if ci != co else None

    def forward(self, x, temb_act):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_proj(temb_act)[:, :, None, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) if self.skip is not None else x) + h


class Attention(nn.Module):
    """x + proj_out(softmax(q k^T / sqrt(d)) v) over the D*H*W voxels (D-major tokens), heads of d."""

    def __init__(self, c, cfg):
        super().__init__()
        self.heads = c // cfg.head_channels
        self.head_dim = cfg.head_channels
        self.norm = nn.GroupNorm(cfg.norm_groups, c, eps=cfg.norm_eps)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj_out = nn.Linear(c, c)

    def forward(self, x):
        n, c, d, h, w = x.shape
        tokens = self.norm(x).reshape(n, c, d * h * w).transpose(1, 2)  # [n, voxels, c]
        q, k, v = self.qkv(tokens).split(c, dim=2)
        heads = lambda u: u.reshape(n, d * h * w, self.heads, self.head_dim).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)  # [n, heads, voxels, head_dim]
        p = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(self.head_dim), dim=-1)
        o = (p @ v).transpose(1, 2).reshape(n, d * h * w, c)
        o = self.proj_out(o).transpose(1, 2).reshape(n, c, d, h, w)
        return x + o


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv3d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


def nearest_resize(x, size):
    """The spec's nearest rule, source index floor(i * n_in / n_out) per axis, in integers."""
    for axis, n_out in zip((2, 3, 4), size):
        n_in = x.shape[axis]
        src = (torch.arange(n_out, device=x.device) * n_in) // n_out
        x = x.index_select(axis, src)
    return x


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv3d(c, c, 3, padding=1)

    def forward(self, x, size):
        return self.conv(nearest_resize(x, size))


class Level(nn.Module):
    def __init__(self):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        self.downsample = None
        self.upsample = None


class Middle(nn.Module):
    def __init__(self, c, cfg):
        super().__init__()
        self.block1 = ResBlock(c, c, cfg)
        self.attn = Attention(c, cfg)
        self.block2 = ResBlock(c, c, cfg)


class UNet3D(nn.Module):
    def __init__(self, cfg: UNetConfig, zero_init=True):
        super().__init__()
        self.cfg = cfg
        levels = len(cfg.channel_mult)
        self.time_embed = nn.Sequential(
            nn.Linear(cfg.model_channels, cfg.time_embed_dim), nn.SiLU(), nn.Linear(cfg.time_embed_dim, cfg.time_embed_dim))
        self.conv_in = nn.Conv3d(cfg.in_channels, cfg.width(0), 3, padding=1)
        skip_channels = [cfg.width(0)]
        ch = cfg.width(0)
        self.down = nn.ModuleList()
        for l in range(levels):
            level = Level()
            for _ in range(cfg.num_blocks):
                level.block.append(ResBlock(ch, cfg.width(l), cfg))
                ch = cfg.width(l)
                if cfg.attention_levels[l]:
                    level.attn.append(Attention(ch, cfg))
                skip_channels.append(ch)
            if l < levels - 1:
                level.downsample = Downsample(ch)
                skip_channels.append(ch)
            self.down.append(level)
        self.mid = Middle(ch, cfg)
        up = [None] * levels
        for l in reversed(range(levels)):
            level = Level()
            for _ in range(cfg.num_blocks + 1):
                level.block.append(ResBlock(ch + skip_channels.pop(), cfg.width(l), cfg))
                ch = cfg.width(l)
                if cfg.attention_levels[l]:
                    level.attn.append(Attention(ch, cfg))
            if l > 0:
                level.upsample = Upsample(ch)
            up[l] = level
        self.up = nn.ModuleList(up)  # up[l] is level l
        self.out_norm = nn.GroupNorm(cfg.norm_groups, ch, eps=cfg.norm_eps)
        self.conv_out = nn.Conv3d(ch, cfg.out_channels, 3, padding=1)
        if zero_init:  # the spec's identity-like start
            with torch.no_grad():
                for name, p in self.named_parameters():
                    if ".conv2." in name or ".proj_out." in name or name.startswith("conv_out."):
                        p.zero_()

    def forward(self, x, t):
        """x [N, in_channels, D, H, W], t [N] integer steps -> [N, out_channels, D, H, W]."""
        emb = timestep_sinusoid(t, self.cfg.model_channels).to(x.dtype)
        temb_act = F.silu(self.time_embed(emb))
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for b, block in enumerate(level.block):
                h = block(h, temb_act)
                if len(level.attn):
                    h = level.attn[b](h)
                skips.append(h)
            if level.downsample is not None:
                h = level.downsample(h)
                skips.append(h)
        h = self.mid.block2(self.mid.attn(self.mid.block1(h, temb_act)), temb_act)
        for level in reversed(self.up):
            for b, block in enumerate(level.block):
                h = block(torch.cat([h, skips.pop()], dim=1), temb_act)
                if len(level.attn):
                    h = level.attn[b](h)
            if level.upsample is not None:
                h = level.upsample(h, skips[-1].shape[2:])
        assert not skips
        return self.conv_out(F.silu(self.out_norm(h)))


def to_ctsr_layout(name, tensor):
    """A parameter in ctsr's layout: conv weights [out, in, kD, kH, kW] -> [out, kD, kH, kW, in]."""
    if tensor.dim() == 5:
        return tensor.permute(0, 2, 3, 4, 1).contiguous()
    return tensor.contiguous()


def from_ctsr_layout(name, tensor):
    """The inverse of to_ctsr_layout: conv weights [out, kD, kH, kW, in] -> [out, in, kD, kH, kW]."""
    if tensor.dim() == 5:
        return tensor.permute(0, 4, 1, 2, 3).contiguous()
    return tensor.contiguous()


def import_state_dict(model, tensors):
    """Sets every parameter from {ctsr name: tensor in ctsr's layout}; names must match exactly."""
    params = dict(model.named_parameters())
    missing, unknown = sorted(set(params) - set(tensors)), sorted(set(tensors) - set(params))
    if missing or unknown:
        raise KeyError(f"parameters missing: {missing[:5]}, unknown: {unknown[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            value = from_ctsr_layout(name, tensors[name])
            if value.shape != p.shape:
                raise ValueError(f"{name}: shape {tuple(value.shape)} (PyTorch layout), model has {tuple(p.shape)}")
            p.copy_(value)


def export_state_dict(model, grads=False):
    """{ctsr name: tensor in ctsr's layout} for every parameter (or its gradient), in module order."""
    out = {}
    for name, p in model.named_parameters():
        value = p.grad if grads else p.detach()
        if value is None:
            raise ValueError(f"{name} has no gradient")
        out[name] = to_ctsr_layout(name, value.detach())
    return out


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def count_forward_macs(model, x, t):
    """Multiply-adds of one forward of x, from hooks on the layers that do the arithmetic: every Conv3d
    (output elements x input channels x taps), Linear (output elements x in_features) and the
    attention products q k^T and P v (2 x tokens^2 x channels per sample). Works on the meta device."""
    total = [0]

    def conv_or_linear(module, inputs, output):
        if isinstance(module, nn.Conv3d):
            taps = module.kernel_size[0] * module.kernel_size[1] * module.kernel_size[2]
            total[0] += output.numel() * (module.in_channels // module.groups) * taps
        else:
            total[0] += output.numel() * module.in_features

    def attention(module, inputs, output):
        n, c, d, h, w = inputs[0].shape
        total[0] += 2 * n * (d * h * w) ** 2 * c  # q k^T and P v over all heads

    hooks = []
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.Linear)):
            hooks.append(module.register_forward_hook(conv_or_linear))
        elif isinstance(module, Attention):
            hooks.append(module.register_forward_hook(attention))
    with torch.no_grad():
        model(x, t)
    for hook in hooks:
        hook.remove()
    return total[0]
