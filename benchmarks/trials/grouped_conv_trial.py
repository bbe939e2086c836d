"""Would training K = 2 networks in lockstep (two weight decays, identical batches) as one grouped
network pay on a CPU? One grouped convolution (groups=2, 2 x 16 channels) against two separate
16-channel convolutions, forward and backward, at the quick preset's sizes (batch 32, channels-last,
float32, the s = 2 and s = 3 kernels and image sizes). Interleaved, medians.

    python benchmarks/trials/grouped_conv_trial.py   # about a minute
"""

import statistics
import sys
import time

import torch
import torch.nn as nn


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    torch.set_num_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    torch.manual_seed(0)
    print(f"{threads} threads; one grouped conv (2 x 16 -> 2 x 16) vs two 16 -> 16 convs, forward + backward, ms")
    for scaling in (2, 3):
        kernel, size = 3 * scaling, 32 * scaling
        pad = (kernel - 1 + 1) // 2

        def conv(channels, groups=1):
            return nn.Conv2d(channels, channels, kernel, padding=pad, padding_mode="reflect",
                             groups=groups).to(memory_format=torch.channels_last)

        grouped, first, second = conv(32, groups=2), conv(16), conv(16)
        x = torch.randn(32, 32, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
        a = torch.randn(32, 16, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()
        b = torch.randn(32, 16, size, size).contiguous(memory_format=torch.channels_last).requires_grad_()

        def run_grouped():
            grouped(x).sum().backward()

        def run_separate():
            (first(a).sum() + second(b).sum()).backward()

        times = {"grouped": [], "separate": []}
        run_grouped(), run_separate()
        for _ in range(7):
            for name, fn in (("grouped", run_grouped), ("separate", run_separate)):
                tic = clock()
                fn()
                times[name].append(clock() - tic)
        g, s = statistics.median(times["grouped"]), statistics.median(times["separate"])
        print(f"s = {scaling} ({kernel} x {kernel}, {size} px): grouped {g * 1e3:.0f}, separate {s * 1e3:.0f} "
              f"(grouped/separate {g / s:.2f})", flush=True)


if __name__ == "__main__":
    main()
