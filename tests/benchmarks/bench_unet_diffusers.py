#!/usr/bin/env python3
"""Seconds per UNet step of Stable Diffusion 1.5's UNet in diffusers/PyTorch: the reference figure that
splatdiff-diffusion's own UNet (rust/splatdiff-diffusion, examples/bench_unet.rs) is measured against.

The UNet is built from SD 1.5's published unet/config.json written out by hand below, with random weights
(weight values do not change the cost) and no download. Input: latents [2,4,64,64] (a 512x512 image, batch 2
for classifier-free guidance), timestep 500, encoder_hidden_states [2,77,768]. One warm-up step, then the mean
of --steps timed steps. Prints versions, the attention processor, seconds per step (wall, and CPU time per
thread, which stays meaningful when other jobs share the cores) and peak RSS.

    /work/venv-diffusers/bin/python tests/benchmarks/bench_unet_diffusers.py            # CPU, 2 threads, f32
    /work/venv-diffusers/bin/python tests/benchmarks/bench_unet_diffusers.py --device cuda --dtype f16
"""

import argparse
import os
import resource
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

# SD 1.5 (stable-diffusion-v1-5) unet/config.json, the fields that shape the network.
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
    act_fn="silu",
    center_input_sample=False,
    downsample_padding=1,
    flip_sin_to_cos=True,
    freq_shift=0,
    mid_block_scale_factor=1,
)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32")
    ap.add_argument("--height", type=int, default=512)
    ap.add_argument("--width", type=int, default=512)
    args = ap.parse_args()

    import diffusers
    from diffusers import UNet2DConditionModel

    torch.set_num_threads(args.threads)
    dtype = torch.float16 if args.dtype == "f16" else torch.float32
    device = torch.device(args.device)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    unet = UNet2DConditionModel(**SD15_UNET).eval().to(device)
    if dtype != torch.float32:
        unet = unet.half()
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in unet.parameters())
    rss_model = peak_rss_mib()
    procs = sorted({type(p).__name__ for p in unet.attn_processors.values()})

    sample = torch.randn(2, 4, args.height // 8, args.width // 8, device=device, dtype=dtype)
    ehs = torch.randn(2, 77, 768, device=device, dtype=dtype)
    t = torch.tensor(500, device=device)

    def step():
        with torch.inference_mode():
            out = unet(sample, t, ehs).sample
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    t0 = time.perf_counter()
    step()
    warm_s = time.perf_counter() - t0
    times, cpu_times = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    mean = sum(times) / len(times)
    cpu_mean = sum(cpu_times) / len(cpu_times)
    load = os.getloadavg()[0]

    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, device {device}, dtype {args.dtype}, "
          f"threads {torch.get_num_threads()}")
    print(f"SD1.5 UNet: {n_params / 1e6:.1f} M params, attention processor {procs}, built in {build_s:.1f} s")
    print(f"input latents [2,4,{args.height // 8},{args.width // 8}], encoder_hidden_states [2,77,768]")
    print(f"warm-up step: {warm_s:.2f} s")
    print(f"timed steps: {', '.join(f'{x:.2f}' for x in times)} s")
    print(f"mean seconds per UNet step: {mean:.2f}")
    # On a shared machine wall time includes waiting for a core; CPU time / threads estimates an idle run.
    print(f"mean CPU seconds per step (all threads): {cpu_mean:.2f} -> {cpu_mean / args.threads:.2f} s per step "
          f"if the {args.threads} threads had their cores to themselves (1-min load average now {load:.1f})")
    print(f"peak RSS: {peak_rss_mib():.0f} MiB (after building the model: {rss_model:.0f} MiB)")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
