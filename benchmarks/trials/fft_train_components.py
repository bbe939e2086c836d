"""Where the time of one FFT training convolution goes (models/trunks/fft.py, the whole image): each piece of the
forward and backward of a width x width layer of the quick preset (batch 32, channels-last input),
against the direct convolution's forward + backward, at s = 2 and 3. One thread, this process's CPU
time (steady on a shared machine), the best of 5 interleaved rounds.

    python benchmarks/trials/fft_train_components.py [width]   # about a minute
"""

import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from models.trunks import fft as ft  # noqa: E402


def main():
    torch.set_num_threads(1)
    width = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    batch = 32
    for scaling in (2, 3):
        kernel, size = 3 * scaling, 32 * scaling
        pad = (kernel - 1 + 1) // 2
        rows = size + 2 * pad
        n = ft.fft_size(rows)
        frequencies = n * (n // 2 + 1)
        out_rows = rows - kernel + 1
        torch.manual_seed(0)
        x = torch.randn(batch, width, size, size).contiguous(memory_format=torch.channels_last)
        weight = torch.randn(width, width, kernel, kernel)
        buffer = ft._padded_buffer(x, pad, True, n, n)
        spectra = torch.fft.rfft2(buffer)
        flat = spectra.permute(2, 3, 0, 1).reshape(frequencies, batch, width).contiguous()
        kernel_spectrum = ft._kernel_spectrum(weight, n, n)
        products = torch.bmm(flat, kernel_spectrum)
        out = ft._inverse(products, batch, width, n, n, out_rows, out_rows)
        padded_grad = torch.randn(batch, width, n, n)  # the inverse's output, folded in place
        grad_out = torch.randn(batch, width, out_rows, out_rows).contiguous(memory_format=torch.channels_last)
        direct = nn.Conv2d(width, width, kernel, padding=pad, padding_mode="reflect").to(
            memory_format=torch.channels_last
        )
        x_grad = x.detach().requires_grad_()
        pieces = {
            "forward: pad into the FFT buffer": lambda: ft._padded_buffer(x, pad, True, n, n),
            "forward: rfft2": lambda: torch.fft.rfft2(buffer),
            "forward: spectra to (F, B, C)": lambda: (
                spectra.permute(2, 3, 0, 1).reshape(frequencies, batch, width).contiguous()
            ),
            "forward: kernel spectrum (DFT products)": lambda: ft._kernel_spectrum(weight, n, n),
            "forward: bmm over channels": lambda: torch.bmm(flat, kernel_spectrum),
            "forward: inverse (ifft, crop, irfft)": lambda: ft._inverse(
                products, batch, width, n, n, out_rows, out_rows
            ),
            "forward: output to channels-last": lambda: out.contiguous(memory_format=torch.channels_last),
            "backward: gradient into the FFT buffer": lambda: ft._padded_buffer(grad_out, 0, False, n, n),
            "backward: rfft2": lambda: torch.fft.rfft2(buffer),
            "backward: spectra to (F, B, O)": lambda: (
                spectra.permute(2, 3, 0, 1).reshape(frequencies, batch, width).contiguous()
            ),
            "backward: bmm for the input gradient": lambda: torch.bmm(flat, kernel_spectrum.transpose(1, 2).conj()),
            "backward: inverse (ifft, crop, irfft)": lambda: ft._inverse(products, batch, width, n, n, rows, rows),
            "backward: fold reflection, channels-last (+clone)": lambda: ft._unpadded_gradient(
                padded_grad.clone(), pad, True, x.shape, torch.channels_last
            ),
            "backward: weight gradient (bmm, DFT products)": lambda: ft._weight_gradient(products, flat, n, n, kernel),
            "direct: forward + backward": lambda: direct(x_grad).backward(grad_out),
        }
        best = {name: float("inf") for name in pieces}
        for _ in range(5):
            for name, piece in pieces.items():
                tic = time.process_time()
                piece()
                best[name] = min(best[name], time.process_time() - tic)
        print(f"s = {scaling}: {width} -> {width} channels, {kernel} x {kernel}, {size} px, FFT {n} x {n}; ms")
        for name, seconds in best.items():
            print(f"  {name:50s} {seconds * 1e3:6.1f}")
        fft_total = sum(seconds for name, seconds in best.items() if not name.startswith("direct"))
        print(f"  {'FFT forward + backward (sum)':50s} {fft_total * 1e3:6.1f}  "
              f"(direct / FFT {best['direct: forward + backward'] / fft_total:.2f})", flush=True)


if __name__ == "__main__":
    main()
