#!/usr/bin/python3
"""Golden data for RED-CNN (model/redcnn.h, tests/test_redcnn.cpp), from an independent PyTorch model.

The network below follows Chen et al., IEEE TMI 2017 (2D, five k x k convolutions and five k x k
transposed convolutions without padding, ReLU, shortcuts after the 2nd and 4th convolution and from
the input), without the final ReLU (ctsr's volumes are on the [-1, 1] scale; model/redcnn.h says why),
at a small width so the files stay small: 6 channels, 5 x 5 kernels. Weights are PyTorch's default
initialisation with the biases perturbed so every parameter matters.

Writes tests/data/redcnn/:
  <layer>.weight.npy, <layer>.bias.npy   conv1..conv5 [out, in, k, k], tconv1..tconv5 [in, out, k, k]
  input.npy     three axial slices of 23 x 27 on the [-1, 1] scale, [D, H, W]
  output.npy    the network's output, [D, H, W]
  grad.<layer>.weight.npy, grad.<layer>.bias.npy   d sum(output * dy) / d parameter, for dy = dy.npy
  grad_input.npy                                   d sum(output * dy) / d input
  dy.npy        that output gradient
Run by hand when the model changes (CI never runs it):
    apt-get install -y python3-torch python3-numpy
    /usr/bin/python3 tools/pytorch/make_redcnn_golden.py
"""

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "tests", "data", "redcnn")
CHANNELS, KERNEL = 6, 5


class RedCnn(nn.Module):
    def __init__(self):
        super().__init__()
        for i in range(1, 6):
            setattr(self, "conv%d" % i, nn.Conv2d(1 if i == 1 else CHANNELS, CHANNELS, KERNEL))
            setattr(self, "tconv%d" % i, nn.ConvTranspose2d(CHANNELS, 1 if i == 5 else CHANNELS, KERNEL))

    def forward(self, x):
        r1 = x
        h = F.relu(self.conv1(x))
        r2 = h = F.relu(self.conv2(h))
        h = F.relu(self.conv3(h))
        r3 = h = F.relu(self.conv4(h))
        h = F.relu(self.conv5(h))
        h = self.tconv1(h) + r3
        h = self.tconv2(F.relu(h))
        h = self.tconv3(F.relu(h)) + r2
        h = self.tconv4(F.relu(h))
        return self.tconv5(F.relu(h)) + r1


def main():
    torch.manual_seed(20261206)
    model = RedCnn().double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.add_(0.05 * torch.randn(p.shape, dtype=p.dtype))
    x = (torch.rand(3, 1, 23, 27, dtype=torch.float64) * 2 - 1).requires_grad_()  # the slices are the batch
    y = model(x)
    dy = torch.rand_like(y) * 2 - 1
    (y * dy).sum().backward()
    os.makedirs(OUT, exist_ok=True)
    for name, p in model.named_parameters():
        np.save(os.path.join(OUT, name + ".npy"), p.detach().numpy().astype(np.float64))
        np.save(os.path.join(OUT, "grad." + name + ".npy"), p.grad.numpy())
    np.save(os.path.join(OUT, "input.npy"), x[:, 0].detach().numpy())
    np.save(os.path.join(OUT, "grad_input.npy"), x.grad[:, 0].numpy())
    np.save(os.path.join(OUT, "output.npy"), y[:, 0].detach().numpy())
    np.save(os.path.join(OUT, "dy.npy"), dy[:, 0].numpy())
    print("parameters", sum(p.numel() for p in model.parameters()), "output", tuple(y.shape))


if __name__ == "__main__":
    main()
