"""Zoom trial: one trained s = 1 U-net evaluated at k = 1, 2, 3, 4, 6, 8 times its resolution.

For every k and pooling variant (models/trunks/zoom.py), the first N test images of
sample_circles(10_000, seed=0), rasterised at size_orig * k with fixed seeded noise, go through
zoom(model, k) and give:
  jump ratio   median over edges of the output's largest step / the truth's jump (1/k law: k x it stays put)
  rise width   median 10%-90% rise over edges, in units of the image width (stays put if the output converges)
  shift        median signed position of the output's 50% crossing minus the truth's jump, in s = 1 pixels
               (+: the edge moved right; even kernels with the authors' crop move it)
  MSE int.     mean squared error over the interior (3k pixels off every side), beside the noisy input's
  MSE flat     the same over interior pixels with no jump of the truth within 3k pixels (3 s = 1 pixels):
               what is left once the edges, which no zoomed network keeps sharp, are taken out
  k=1 rep.     interior MSE of the k = 1 output repeated over k x k blocks, against the size 32k truth:
               what a network that computed the k = 1 function at every k would score
Medians come with seeded 95% bootstrap intervals (images resampled, utils.metrics.median_interval).

    python benchmarks/trials/zoom_trial.py --checkpoint CKPT.pt [--n-images 32] [--ks 1 2 3 4 6 8] \
        [--variants pixels physical pixels+centre physical+centre]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from models.trunks import UNet, fold_for_inference, zoom  # noqa: E402
from utils.circles import noisy_pairs, sample_circles, split  # noqa: E402
from utils.metrics import GAP, _crossing, edge_measures, find_edges, interior, median_interval  # noqa: E402
from utils.weights import load_checkpoint  # noqa: E402

VARIANTS = {  # name: zoom's keyword arguments; physical+centre is zoom's default
    "pixels": dict(pooling="pixels", centre=False),  # what UNet(scaling=k) computes from the zoomed state dict
    "physical": dict(pooling="physical", centre=False),
    "pixels+centre": dict(pooling="pixels", centre=True),
    "physical+centre": dict(pooling="physical", centre=True),
}


def load_s1(path):
    """A UNet(scaling=1) of the width and depth the state dict (or a trainer checkpoint's 'model') says."""
    state = load_checkpoint(path)
    state = state.get("model", state)
    kernel = state["inc.double_conv.0.weight"].shape[-1]
    if kernel != 3:
        sys.exit(f"{path} is a scaling-{kernel // 3} network; zoom needs one trained at scaling 1")
    width = state["inc.double_conv.0.weight"].shape[0]
    depth = sum(1 for key in state if key.startswith("down") and key.endswith("double_conv.0.weight"))
    model = UNet(scaling=1, width=width, depth=depth)
    model.load_state_dict(state, strict=True)
    return model.eval()


def edge_shift(output, truth, k):
    """Signed offset (s = 1 pixels) of the output's 50% crossing from the truth's jump, per edge along rows."""
    rows, cols, before, after = find_edges(truth, k)
    u = (np.asarray(output, np.float64)[rows] - before[:, None]) / (after - before)[:, None]
    centre = cols + 0.5
    return (_crossing(u, 0.5, centre[:, None]) - centre) / k


def flat(truth, k):
    """Mask (n, H, W): no jump of the truth within 3k pixels (a (6k + 1)-pixel square around the pixel)."""
    truth = torch.as_tensor(truth)[:, None]
    reach = GAP * k
    high = torch.nn.functional.max_pool2d(truth, 2 * reach + 1, stride=1, padding=reach)
    low = -torch.nn.functional.max_pool2d(-truth, 2 * reach + 1, stride=1, padding=reach)
    return (high == low)[:, 0].numpy()


def run(net, noisy, batch):
    with torch.inference_mode():
        return torch.cat([net(noisy[i : i + batch]) for i in range(0, len(noisy), batch)])


def measure(model, params, k, variant, batch, seed, reference=None):
    size = 32 * k
    net = fold_for_inference(zoom(model, k, **VARIANTS[variant]))
    noisy, clean = noisy_pairs(params, size, generator=torch.Generator().manual_seed(seed))
    tic = time.perf_counter()
    out = run(net, noisy, batch)
    seconds = time.perf_counter() - tic
    out, clean, noisy = out[:, 0].numpy(), clean[:, 0].numpy(), noisy[:, 0].numpy()
    ratio, width, shift, image = [], [], [], []
    for i, (o, t) in enumerate(zip(out, clean, strict=True)):
        w, r = edge_measures(o, t, k)
        ratio.append(r), width.append(w / size), shift.append(edge_shift(o, t, k)), image.append(np.full(len(r), i))
    ratio, width, shift, image = map(np.concatenate, (ratio, width, shift, image))
    keep = np.isfinite(shift)
    mask = interior(flat(clean, k), k)
    squared = (interior(out, k) - interior(clean, k)) ** 2
    repeated = reference.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)[:, 0].numpy()
    return dict(
        k=k, variant=variant, n_edges=len(ratio), seconds=seconds,
        jump_ratio=median_interval(ratio, image), rise_width=median_interval(width, image),
        shift=median_interval(shift[keep], image[keep]),
        mse=float(np.mean(squared)), mse_flat=float(np.mean(squared[mask])), flat_share=float(mask.mean()),
        mse_k1_repeated=float(np.mean((interior(repeated, k) - interior(clean, k)) ** 2)),
        mse_noisy=float(np.mean((interior(noisy, k) - interior(clean, k)) ** 2)),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="an s = 1 state dict (or trainer checkpoint)")
    parser.add_argument("--n-images", type=int, default=32, help="first N test images [32]")
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="+centre variants run at even k only (odd kernels are centred already)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_s1(args.checkpoint)
    params = split(sample_circles(10_000, seed=0))[1][: args.n_images]
    print(f"{args.checkpoint}: width {model.width}, depth {model.depth}; {args.n_images} test images, "
          f"noise seed {args.noise_seed}")
    # The k = 1 output, for the "k=1 rep." column: the network at its own resolution.
    noisy1, _ = noisy_pairs(params, 32, generator=torch.Generator().manual_seed(args.noise_seed))
    reference = run(model, noisy1, args.batch)
    print(f"{'k':>2} {'variant':<16} {'edges':>6} {'jump ratio [95%]':>22} {'k x':>5} {'rise width [95%]':>24} "
          f"{'shift px1 [95%]':>22} {'MSE int.':>8} {'noisy':>7} {'flat':>7} {'k=1 rep.':>8} {'s':>6}")
    for k in args.ks:
        # Centring changes nothing at odd k (odd kernels are centred already).
        for variant in [v for v in args.variants if k % 2 == 0 or not v.endswith("+centre")]:
            r = measure(model, params, k, variant, args.batch, args.noise_seed, reference)
            (j, jl, jh), (w, wl, wh), (d, dl, dh) = r["jump_ratio"], r["rise_width"], r["shift"]
            print(f"{k:>2} {variant:<16} {r['n_edges']:>6} {j:>7.3f} [{jl:.3f}, {jh:.3f}] {k * j:>5.2f} "
                  f"{w:>7.4f} [{wl:.4f}, {wh:.4f}] {d:>+6.2f} [{dl:+.2f}, {dh:+.2f}] "
                  f"{r['mse']:>8.4f} {r['mse_noisy']:>7.4f} {r['mse_flat']:>7.4f} {r['mse_k1_repeated']:>8.4f} "
                  f"{r['seconds']:>6.1f}", flush=True)
    print(f"flat: share of interior pixels {r['flat_share']:.2f} at k = {k}; s: seconds of network time for "
          f"{args.n_images} images, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
