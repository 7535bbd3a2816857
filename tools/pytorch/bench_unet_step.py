#!/usr/bin/python3
"""PyTorch eager baseline for ctsr_bench's UNetTrainStep: one optimiser step of the diffusion UNet.

The model is unet_model.py's (the spec's network), the production configuration by default
(in 16 / out 8, model_channels 128, channel_mult [1, 2, 4, 8], 3 blocks, attention on levels 2
and 3, head_channels 64, time_embed_dim 512, dropout 0.1, norm_groups 32), in training mode, at
batch 32 on an 8 x 25 x 16 x 16 latent (input: 16 channels, the noisy latent and the condition).
One step, as ctsr_bench times it:
    zero the gradients; for each of 2 micro-batches of 16: forward, MSE to a target (divided by
    the number of micro-batches, so the gradient is the whole batch's mean), backward;
    clip the global gradient norm at 1.0; AdamW (lr 2e-4, betas 0.9 / 0.999, eps 1e-8, wd 0.01)
float32, TF32 allowed by default (--tf32 off for strict float32), inputs and targets resident
on the device, timed over --steps steps after --warmup steps with CUDA synchronisation.
Peak memory is torch.cuda.max_memory_allocated over the timed steps (parameters, gradients and
AdamW moments included). Model FLOPs are counted by forward hooks on every Conv3d and Linear
(output elements x input channels x kernel taps) and on every attention block (q k^T and P v:
2 x tokens^2 x channels per sample), 2 FLOPs per multiply-add, times 3 for forward and backward;
norms, activations and the optimiser are not counted (ctsr_bench counts the same way).
--dtype bf16 runs the step under torch.autocast(bfloat16) (float32 weights, gradients and AdamW;
convolutions, linears and matmuls in bf16, norms and softmax in float32: PyTorch's mixed precision,
what ctsr's training.precision bf16 is compared with); --compile wraps the model in torch.compile
(timed after its warm-up compiles). --dtype bf16 needs CUDA. Prints one JSON line.

    /usr/bin/python3 tools/pytorch/bench_unet_step.py [--device cuda] [--steps 5] [--tf32 on|off]
    /usr/bin/python3 tools/pytorch/bench_unet_step.py --device cpu --tiny      # a quick check
    /usr/bin/python3 tools/pytorch/bench_unet_step.py --dtype bf16 [--compile]
--tiny is ctsr_bench's cpu case: model_channels 16, channel_mult [1, 2], 1 block, attention on
level 1, head_channels 32, time_embed_dim 32, norm_groups 4, batch 2 as two micro-batches of 1
on an 8 x 5 x 4 x 4 latent.
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_model as ref  # noqa: E402

TINY = dict(model_channels=16, channel_mult=[1, 2], num_blocks=1, attention_levels=[False, True], head_channels=32,
            time_embed_dim=32, norm_groups=4)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="the small configuration of ctsr_bench's cpu case")
    p.add_argument("--batch", type=int, help="samples per step (default 32, tiny 2)")
    p.add_argument("--micro-batches", type=int, default=2, help="gradient accumulation steps")
    p.add_argument("--latent", help="D,H,W of the latent (default 25,16,16, tiny 5,4,4)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--tf32", choices=["on", "off"], default="on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: torch.autocast(bfloat16)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    a = p.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = a.tf32 == "on"
    torch.backends.cudnn.allow_tf32 = a.tf32 == "on"
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(a.seed)
    cfg = ref.UNetConfig(**TINY) if a.tiny else ref.UNetConfig()
    batch = a.batch or (2 if a.tiny else 32)
    d, h, w = (int(v) for v in (a.latent or ("5,4,4" if a.tiny else "25,16,16")).split(","))
    if batch % a.micro_batches:
        sys.exit(f"--batch {batch} is not a multiple of --micro-batches {a.micro_batches}")
    micro = batch // a.micro_batches
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if a.dtype == "bf16" and not cuda:
        # CPU autocast (Debian's torch 1.13) hands GroupNorm bf16 input with float32 weights and fails.
        sys.exit("--dtype bf16 runs on CUDA only: CPU autocast does not cast GroupNorm's input back to float32")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    model = ref.UNet3D(cfg).to(dev).train()
    params = list(model.parameters())
    if a.compile and not hasattr(torch, "compile"):
        sys.exit(f"--compile needs torch.compile (PyTorch 2), this is {torch.__version__}")
    run_model = torch.compile(model) if a.compile else model
    autocast = (lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16)) if a.dtype == "bf16" else None
    # foreach: the multi-tensor implementation (torch 2's default on CUDA; 1.13 must be asked),
    # as ctsr's adamw_step is multi-tensor.
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, foreach=cuda)
    x = torch.rand(a.micro_batches, micro, cfg.in_channels, d, h, w, device=dev) * 2 - 1
    target = torch.randn(a.micro_batches, micro, cfg.out_channels, d, h, w, device=dev)
    t = torch.randint(0, 1000, (a.micro_batches, micro), device=dev)
    forward_macs = ref.count_forward_macs(model, x[0], t[0]) * a.micro_batches
    model_flops = 3 * 2 * forward_macs

    def step():
        opt.zero_grad(set_to_none=False)
        for m in range(a.micro_batches):
            if autocast:
                with autocast():
                    pred = run_model(x[m], t[m])
                loss = F.mse_loss(pred.float(), target[m]) / a.micro_batches
            else:
                loss = F.mse_loss(run_model(x[m], t[m]), target[m]) / a.micro_batches
            loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss

    for _ in range(a.warmup):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync()
    seconds = (time.perf_counter() - start) / a.steps
    n_params = ref.count_parameters(model)
    result = {
        "framework": f"pytorch {torch.__version__} " + ("torch.compile" if a.compile else "eager"),
        "dtype": a.dtype,
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "config": "tiny" if a.tiny else "production",
        "batch": batch,
        "micro_batches": a.micro_batches,
        "latent": [cfg.out_channels, d, h, w],
        "tf32": a.tf32 == "on" if cuda else None,
        "step_ms": seconds * 1e3,
        "samples_per_s": batch / seconds,
        "peak_allocated_MiB": torch.cuda.max_memory_allocated(dev) / 2**20 if cuda else None,
        "parameters": n_params,
        "parameter_MiB": n_params * 4 / 2**20,  # float32; gradients the same, AdamW moments twice that
        "model_flops_per_step": model_flops,
        "model_TFLOP_per_s": model_flops / seconds / 1e12,
        "last_loss": float(loss),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
