"""Convolution by FFT, tile by tile (models/trunks/fft.py), for the 9 x 9 kernels of the s = 3 network against
torch's direct convolution, one layer at a time and in the whole folded network, batch 5, float32:
the measurements behind fft.TILES. Their results: benchmarks/trials/README.md.

    python benchmarks/trials/fft_trial.py   # about 6 minutes on 2 CPU cores
"""

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from models.trunks import UNet, fold_for_inference  # noqa: E402
from models.trunks.fft import fft_conv2d_tiled, fft_tile  # noqa: E402


def timed(fn, reps=2):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def main():
    torch.manual_seed(0)
    print("one 9 x 9 layer, batch 5 (input already padded): direct / FFT seconds, best of 2 after a warm-up")
    layers = [(384, 64, 64), (192, 128, 128), (96, 256, 256), (48, 512, 512), (24, 512, 512)]
    with torch.inference_mode():
        for size, c_in, c_out in layers:
            x = torch.randn(5, c_in, size + 8, size + 8)
            w = torch.randn(c_out, c_in, 9, 9) / (c_in * 81) ** 0.5
            tile = fft_tile(9, size, c_in) or 16  # 16 where direct is the choice
            ref = F.conv2d(x, w)
            deviation = ((fft_conv2d_tiled(x, w, None, tile) - ref).abs().max() / ref.abs().max()).item()
            direct, fft = timed(lambda: F.conv2d(x, w)), timed(lambda: fft_conv2d_tiled(x, w, None, tile))
            print(f"  {size} px, {c_in} -> {c_out}, tile {tile}: {direct:.2f} / {fft:.2f} s ({direct / fft:.2f}x), "
                  f"rel. deviation {deviation:.1e}", flush=True)
        model = UNet(3).eval()
        x = torch.randn(5, 1, 384, 384).contiguous(memory_format=torch.channels_last)
        direct_net = fold_for_inference(model).to(memory_format=torch.channels_last)
        fft_net = fold_for_inference(model, fft=True).to(memory_format=torch.channels_last)
        ref = direct_net(x)
        deviation = ((fft_net(x) - ref).abs().max() / ref.abs().max()).item()
        direct, fft = timed(lambda: direct_net(x), 1), timed(lambda: fft_net(x), 1)
        print(f"whole s = 3 network, folded, channels-last, batch 5: direct {direct:.1f} s, FFT {fft:.1f} s "
              f"({direct / fft:.2f}x), rel. deviation {deviation:.1e}")


if __name__ == "__main__":
    main()
