"""Convolution by FFT, for training, the folded inference copy and the zoom: one module, one rule.

A k x k kernel costs k^2 multiply-adds per pixel and channel pair in a direct convolution; in the
Fourier domain a convolution is one complex multiply-add per frequency and channel pair (a batched
matrix product over the channels) plus the transforms of the feature maps. Two ways to transform:

- **The whole image** (fft_conv2d_whole): the padded image, zero-filled to a fast FFT size, is one
  transform, so the circular correlation equals the valid linear one. Per layer and training step
  that is four transforms of the feature maps (the input and the output forward, the output's
  gradient and the input's gradient backward) and three batched products over the channels per
  frequency; the input's spectrum is kept from the forward for the weight's gradient. The kernel's
  spectrum and the weight's gradient (a k x k crop) are small DFT matrix products instead of
  transforms. The kernel's spectrum has C x O numbers per frequency of the whole image, so this
  suits few channels.
- **Tiles** (fft_conv2d_tiled, overlap-save, forward only): T x T input tiles, each giving T - k + 1
  valid outputs per axis. The transformed weights grow with the tile, not the image, which suits
  many channels on large images; TILES holds the tile sizes that measured fastest.

fft_plan(conv, output_size, for_training) is the one rule that picks direct, the whole image or a
tile size for a convolution. FFTConv2d is a Conv2d with the same parameters (same objects, same
state-dict keys) that computes by that rule; fft_for_training(model) swaps a UNet's wide
convolutions for it in place, and fold_for_inference(model, fft=True) swaps the folded copy's.
reuse_freed_memory() spares the large temporaries a page fault per step.
"""

import ctypes
import ctypes.util
import math
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from .unet_parts import Divide, DoubleConv

# The rule (fft_plan), from the measurements in benchmarks/trials/README.md, on 2-core CPUs, float32:
MIN_KERNEL = 6  # narrower kernels go direct: too few taps to pay for the transforms
# With few channels, whole-image transforms pay from 6 x 6 in training (per layer, forward and backward,
# batch 32, against channels-last direct: 9 x 9 2.0-3.0x, 6 x 6 1.0-1.3x, benchmarks/trials/train_speed.py),
# where the backward reuses the forward's spectra; for a forward alone, from 12 x 12 (the zoomed
# networks' 3k x 3k at k >= 4: for the quick network zoomed to k = 4 / 6 / 8, batch 32, 1.4x / 2.3x / 3.6x).
MIN_KERNEL_FORWARD = 12
# From this many channels (the smaller of in and out), a forward goes by tiles where TILES has one and
# direct elsewhere; training keeps the whole image, whose backward is written out below.
MIN_CHANNELS = 64
# (kernel size, smallest output size, tile): where tiles measured faster than torch's direct convolution
# on a 2-core AVX2 CPU, batch 5 (benchmarks/trials/fft_trial.py; 1.6-2.3x per layer of 64-512 channels
# at 48-384 px). Slower: below 48 px, 6 x 6 kernels (s = 2), and few channels.
TILES = ((9, 256, 64), (9, 96, 32), (9, 48, 16))
WHOLE_IMAGE = "whole image"  # fft_plan's answer for one transform of the whole padded image


def fft_tile(kernel_size, output_size, channels):
    """The tile for this kernel, output size and smaller channel count, or None where direct is faster."""
    for kernel, smallest, tile in TILES:
        if kernel_size == kernel and output_size >= smallest and channels >= MIN_CHANNELS:
            return tile
    return None


def wants_fft(conv, min_kernel=MIN_KERNEL):
    """Whether a convolution can go by FFT at all: stride 1, square kernels of min_kernel x min_kernel and up,
    more than one input channel (the first layer would be 2-7x slower), zeros or reflect padding."""
    kernel = conv.kernel_size[0]
    return (conv.kernel_size[0] == conv.kernel_size[1] and kernel >= min_kernel and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.in_channels > 1
            and conv.padding[0] == conv.padding[1] and conv.padding_mode in ("zeros", "reflect"))


def fft_plan(conv, output_size, for_training):
    """How to compute conv on an output output_size pixels wide: None (direct), WHOLE_IMAGE, or a tile size.

    for_training: a backward pass follows (the trainer's convolutions), else a forward alone (inference)."""
    if not wants_fft(conv):
        return None
    kernel, channels = conv.kernel_size[0], min(conv.in_channels, conv.out_channels)
    if channels >= MIN_CHANNELS and not for_training:
        return fft_tile(kernel, output_size, channels)
    return WHOLE_IMAGE if kernel >= (MIN_KERNEL if for_training else MIN_KERNEL_FORWARD) else None


PRIMES = (2, 3, 5, 7, 13)  # 104 = 8 x 13 (s = 3, 96 px, padded) measured as fast as 108


def fft_size(n):
    """The smallest even size >= n whose prime factors are in PRIMES (fast for MKL; 128 is not faster)."""
    m = n + n % 2
    while True:
        rest = m
        for p in PRIMES:
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 2


@lru_cache(maxsize=64)
def _dft_matrices(n_h, n_w, kernel, device):
    """Real and imaginary parts of exp(+2 pi i f j / n) for the kernel's k taps j, as float32 matrices
    stacked for real matrix products: along the height (2, n_h, k), along the width's half spectrum
    (2, n_w // 2 + 1, k), the latter also weighted for the inverse real transform (1 / (n_h n_w), and
    2 for every width frequency but 0 and n_w / 2, by Hermitian symmetry). Built in float64."""
    j = torch.arange(kernel, dtype=torch.float64)
    angle_h = 2 * math.pi * torch.outer(torch.arange(n_h, dtype=torch.float64), j) / n_h
    angle_w = 2 * math.pi * torch.outer(torch.arange(n_w // 2 + 1, dtype=torch.float64), j) / n_w
    along_h = torch.stack([angle_h.cos(), angle_h.sin()])
    along_w = torch.stack([angle_w.cos(), angle_w.sin()])
    twice = torch.full((n_w // 2 + 1, 1), 2.0, dtype=torch.float64)
    twice[0] = twice[-1] = 1.0
    inverse_w = along_w * twice / (n_h * n_w)
    return along_h.float().to(device), along_w.float().to(device), inverse_w.float().to(device)


def _kernel_spectrum(weight, n_h, n_w):
    """conj(rfft2(weight, s=(n_h, n_w))) in the products' layout (F, C, O), F = n_h (n_w // 2 + 1):
    two small real matrix products (k taps per axis) instead of transforms of mostly zeros."""
    out_channels, in_channels, kernel, _ = weight.shape
    (cos_h, sin_h), (cos_w, sin_w), _ = _dft_matrices(n_h, n_w, kernel, weight.device)
    taps = weight.permute(2, 3, 1, 0).reshape(kernel, kernel, in_channels * out_channels)  # (k_h, k_w, C O)
    # Along the width: P = sum_j exp(+i theta_fj) w_j, real and imaginary parts, for each tap row.
    real, imag = torch.matmul(cos_w, taps), torch.matmul(sin_w, taps)  # (k_h, n_w', C O) each
    # Along the height as one real product writing interleaved complex numbers: (cos + i sin)(P)
    # = cos [Re P, Im P] + sin [-Im P, Re P].
    stacked = torch.cat([torch.stack([real, imag], -1), torch.stack([-imag, real], -1)])  # (2 k_h, n_w', C O, 2)
    spectrum = torch.matmul(torch.cat([cos_h, sin_h], 1), stacked.view(2 * kernel, -1))  # (n_h, n_w' C O 2)
    return torch.view_as_complex(spectrum.view(-1, in_channels, out_channels, 2))  # (F, C, O)


def _weight_gradient(grad_spectra, spectra, n_h, n_w, kernel):
    """The k x k taps of the correlation of the inputs with the output gradients, summed over the
    batch: irfft2(conj(GY)^T X) cropped to k x k, for GY (F, B, O) and X (F, B, C); (O, C, k, k).

    The product over the batch is a real one on the interleaved real and imaginary parts (no
    conjugate copy), M = [Re GY, Im GY]^T [Re X, Im X] (F, 2 O, 2 C); its complex combination and
    the inverse transform, cropped to k x k, are two small DFT matrix products."""
    frequencies, batch, out_channels = grad_spectra.shape
    in_channels = spectra.shape[-1]
    (cos_h, sin_h), _, (cos_w, sin_w) = _dft_matrices(n_h, n_w, kernel, spectra.device)
    blocks = torch.bmm(torch.view_as_real(grad_spectra).view(frequencies, batch, -1).transpose(1, 2),
                       torch.view_as_real(spectra).view(frequencies, batch, -1))  # (F, O 2, C 2)
    # Along the height, Q = sum_f exp(+i phi_jf) G_f with G = conj(GY)^T X:
    # Re G = M[re, re] + M[im, im] and Im G = M[re, im] - M[im, re].
    both = torch.matmul(torch.cat([cos_h, sin_h], 1).T, blocks.view(n_h, -1))  # (2 k, n_w' O 2 C 2)
    both = both.view(2, kernel, n_w // 2 + 1, out_channels, 2, in_channels, 2)
    cos_part, sin_part = both[0], both[1]
    real = (cos_part[..., 0, :, 0] + cos_part[..., 1, :, 1]) - (sin_part[..., 0, :, 1] - sin_part[..., 1, :, 0])
    imag = (cos_part[..., 0, :, 1] - cos_part[..., 1, :, 0]) + (sin_part[..., 0, :, 0] + sin_part[..., 1, :, 1])
    # Along the width only the real part, weighted for the half spectrum: sum_f cos Re Q - sin Im Q.
    real = real.reshape(kernel, n_w // 2 + 1, -1)  # (k_h, n_w', O C)
    imag = imag.reshape(kernel, n_w // 2 + 1, -1)
    taps = torch.matmul(cos_w.T, real) - torch.matmul(sin_w.T, imag)  # (k_h, k_w, O C)
    return taps.permute(2, 0, 1).reshape(out_channels, in_channels, kernel, kernel)


def _padded_buffer(x, padding, reflect, n_h, n_w):
    """x (B, C, H, W), any memory format, padded by `padding` (reflected or zeros) and zero-filled to
    a contiguous (B, C, n_h, n_w): one pass over x, then narrow strips."""
    batch, channels, height, width = x.shape
    p = padding
    rows, cols = height + 2 * p, width + 2 * p
    buffer = x.new_empty(batch, channels, n_h, n_w)
    buffer[..., rows:, :].zero_()
    buffer[..., :rows, cols:].zero_()
    buffer[..., p : p + height, p : p + width] = x
    for i in range(1, p + 1):  # one row or column at a time: faster than flipped strips
        if reflect:
            buffer[..., p - i, p : p + width] = buffer[..., p + i, p : p + width]
            buffer[..., p + height - 1 + i, p : p + width] = buffer[..., p + height - 1 - i, p : p + width]
        else:
            buffer[..., p - i, p : p + width] = 0
            buffer[..., p + height - 1 + i, p : p + width] = 0
    for i in range(1, p + 1):  # the columns over all padded rows, which fills the corners
        if reflect:
            buffer[..., :rows, p - i] = buffer[..., :rows, p + i]
            buffer[..., :rows, p + width - 1 + i] = buffer[..., :rows, p + width - 1 - i]
        else:
            buffer[..., :rows, p - i] = 0
            buffer[..., :rows, p + width - 1 + i] = 0
    return buffer


def _unpadded_gradient(grad, padding, reflect, shape, memory_format):
    """The gradient of _padded_buffer: grad (B, C, >= H + 2p, >= W + 2p) of the padded image, its
    reflected borders added back onto the pixels they copied (in place on grad), returned as a new
    (B, C, H, W) = shape tensor in memory_format."""
    height, width = shape[-2:]
    p = padding
    rows = height + 2 * p
    if reflect:
        for i in range(1, p + 1):  # the columns (all padded rows) first, undoing _padded_buffer's order
            grad[..., :rows, p + i] += grad[..., :rows, p - i]
            grad[..., :rows, p + width - 1 - i] += grad[..., :rows, p + width - 1 + i]
        for i in range(1, p + 1):
            grad[..., p + i, p : p + width] += grad[..., p - i, p : p + width]
            grad[..., p + height - 1 - i, p : p + width] += grad[..., p + height - 1 + i, p : p + width]
    out = torch.empty(shape, dtype=grad.dtype, device=grad.device, memory_format=memory_format)
    out.copy_(grad[..., p : p + height, p : p + width])
    return out


def _inverse(products, batch, channels, n_h, n_w, rows, cols):
    """Real images (batch, channels, rows, cols), a view, from spectra `products` (F, batch, channels):
    the inverse along the height first, keeping the rows needed, then along the width."""
    spectra = products.view(n_h, n_w // 2 + 1, batch, channels).permute(2, 3, 0, 1)  # (B, C, n_h, n_w')
    spectra = torch.fft.ifft(spectra, dim=-2)[..., :rows, :]
    return torch.fft.irfft(spectra, n=n_w, dim=-1)[..., :cols]


def _memory_format(x):
    """channels_last where x is stored so (and not also contiguous), else contiguous."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class _FFTCorrelation(torch.autograd.Function):
    """conv2d(pad(x), weight, bias) * scale by FFT, with a backward that reuses the forward's input spectrum."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, reflect, scale):
        batch, in_channels, height, width = x.shape
        out_channels, _, kernel, _ = weight.shape
        rows, cols = height + 2 * padding, width + 2 * padding  # padded input
        n_h, n_w = fft_size(rows), fft_size(cols)
        frequencies = n_h * (n_w // 2 + 1)
        # Zero-filled to the FFT size, the circular correlation is the linear one.
        spectra = torch.fft.rfft2(_padded_buffer(x, padding, reflect, n_h, n_w))  # (B, C, n_h, n_w')
        # One (B x C) matrix per frequency; contiguous, else bmm takes a slow path.
        spectra = spectra.permute(2, 3, 0, 1).reshape(frequencies, batch, in_channels).contiguous()  # (F, B, C)
        # Correlation is the product with the kernel's conjugate spectrum, summed over C per frequency.
        kernel_spectrum = _kernel_spectrum(weight * scale if scale != 1 else weight, n_h, n_w)  # (F, C, O)
        products = torch.bmm(spectra, kernel_spectrum)  # (F, B, O)
        if bias is not None:  # a constant image is n_h n_w times the constant at frequency 0
            products[0] += bias * (scale * n_h * n_w)
        out = _inverse(products, batch, out_channels, n_h, n_w, rows - kernel + 1, cols - kernel + 1)
        ctx.save_for_backward(spectra, kernel_spectrum)
        ctx.geometry = (padding, reflect, scale, n_h, n_w, kernel, bias is not None)
        ctx.shape, ctx.memory_format = x.shape, _memory_format(x)
        return out.contiguous(memory_format=ctx.memory_format)  # (B, O, H + 2p - k + 1, W + 2p - k + 1)

    @staticmethod
    def backward(ctx, grad_out):  # (B, O, H', W')
        spectra, kernel_spectrum = ctx.saved_tensors
        padding, reflect, scale, n_h, n_w, kernel, has_bias = ctx.geometry
        batch, out_channels = grad_out.shape[:2]
        frequencies = n_h * (n_w // 2 + 1)
        grad_spectra = torch.fft.rfft2(_padded_buffer(grad_out, 0, False, n_h, n_w))  # (B, O, n_h, n_w')
        grad_spectra = grad_spectra.permute(2, 3, 0, 1).reshape(frequencies, batch, out_channels)
        grad_spectra = grad_spectra.contiguous()  # (F, B, O)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # the transposed correlation: a convolution with the kernel
            products = torch.bmm(grad_spectra, kernel_spectrum.transpose(1, 2).conj())  # (F, B, C)
            in_channels, height, width = ctx.shape[1:]
            rows, cols = height + 2 * padding, width + 2 * padding
            grad_padded = _inverse(products, batch, in_channels, n_h, n_w, rows, cols)  # (B, C, rows, cols)
            grad_x = _unpadded_gradient(grad_padded, padding, reflect, ctx.shape, ctx.memory_format)
        if ctx.needs_input_grad[1]:  # correlation of the input with the output's gradient, summed over B
            grad_weight = _weight_gradient(grad_spectra, spectra, n_h, n_w, kernel)
            if scale != 1:
                grad_weight = grad_weight * scale
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3)) * scale
        return grad_x, grad_weight, grad_bias, None, None, None


@torch.compiler.disable  # inductor has no complex kernels: compiled, this ran 3x slower; a graph break instead
def fft_conv2d_whole(x, weight, bias, padding, padding_mode, scale=1.0):
    """The same as a stride-1 Conv2d with this padding ("reflect" or "zeros"), times `scale`, forward
    and backward, by FFT of the whole padded image, for float32 x (B, C, H, W) and weight (O, C, k, k).
    The output has x's memory format."""
    return _FFTCorrelation.apply(x, weight, bias, padding, padding_mode == "reflect", scale)


def fft_conv2d_tiled(x, weight, bias, tile):
    """The same as F.conv2d(x, weight, bias) (no padding, stride 1), computed tile by tile by FFT.

    x: (B, C, H, W), weight: (O, C, k, k), bias: (O,) or None, tile: FFT size T > k.
    Each T x T input tile gives T - k + 1 valid outputs per axis; tiles overlap by k - 1.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kernel, _ = weight.shape
    out_h, out_w = height - kernel + 1, width - kernel + 1
    step = tile - kernel + 1  # valid outputs per tile and axis
    tiles_h, tiles_w = math.ceil(out_h / step), math.ceil(out_w / step)
    x = F.pad(x, [0, tiles_w * step + kernel - 1 - width, 0, tiles_h * step + kernel - 1 - height])
    tiles = x.unfold(2, tile, step).unfold(3, tile, step)  # (B, C, th, tw, T, T)
    spectra = torch.fft.rfft2(tiles)  # (B, C, th, tw, T, T/2+1)
    freqs = tile * (tile // 2 + 1)
    # Correlation is multiplication by the conjugate spectrum; one matrix product over C per frequency.
    kernels = torch.fft.rfft2(weight, s=(tile, tile)).conj().resolve_conj()  # (O, C, T, T/2+1); a lazy
    # conjugate would send the matrix product below down a slow path
    product = torch.bmm(spectra.permute(4, 5, 0, 2, 3, 1).reshape(freqs, -1, channels),
                        kernels.permute(2, 3, 1, 0).reshape(freqs, channels, out_channels))  # (F, B th tw, O)
    product = product.reshape(tile, tile // 2 + 1, batch, tiles_h, tiles_w, out_channels).permute(2, 5, 3, 4, 0, 1)
    out = torch.fft.irfft2(product, s=(tile, tile))[..., :step, :step]  # (B, O, th, tw, step, step)
    out = out.permute(0, 1, 2, 4, 3, 5).reshape(batch, out_channels, tiles_h * step, tiles_w * step)[
        ..., :out_h, :out_w
    ]
    return out if bias is None else out + bias[:, None, None]


def _autocast_enabled(device_type):
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class FFTConv2d(nn.Conv2d):
    """A Conv2d (stride 1, square kernel) followed by a division by `divisor`, computed as fft_plan says:
    by FFT in float32, direct otherwise (also under bfloat16 autocast, which torch.fft does not take).
    Same parameters and state-dict keys as nn.Conv2d; made from one by as_fft."""

    divisor = 1  # the s^2 of the Divide it replaced (fft_for_training), else 1
    for_training = False  # a backward pass follows: fft_plan's for_training
    offset = 0  # output rows and columns dropped at the start (a zoom.CentredConv2d's, at even kernels)

    def forward(self, x):  # (B, C, H, W) -> (B, O, H + 2p - k + 1 - offset, W + 2p - k + 1 - offset)
        kernel, pad = self.kernel_size[0], self.padding[0]
        plan = None
        if x.dtype == torch.float32 and not _autocast_enabled(x.device.type):
            plan = fft_plan(self, x.shape[-1] + 2 * pad - kernel + 1, self.for_training)
        if plan is None:
            out = super().forward(x)
            out = out / self.divisor if self.divisor != 1 else out
        elif plan == WHOLE_IMAGE:
            out = fft_conv2d_whole(x, self.weight, self.bias, pad, self.padding_mode, 1 / self.divisor)
        else:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            out = fft_conv2d_tiled(F.pad(x.contiguous(), [pad] * 4, mode=mode), self.weight, self.bias, plan)
            out = out / self.divisor if self.divisor != 1 else out
        return out[..., self.offset :, self.offset :] if self.offset else out

    def extra_repr(self):
        extra = [f"divisor={self.divisor}"] * (self.divisor != 1) + ["for_training=True"] * self.for_training
        return ", ".join([super().extra_repr(), *extra, *[f"offset={self.offset}"] * (self.offset != 0)])


def as_fft(conv, for_training=False, divisor=1):
    """conv (an nn.Conv2d or a zoom.CentredConv2d, whose crop it keeps) as an FFTConv2d, in place: the same
    object and parameters; returns it."""
    offset = getattr(conv, "offset", 0)
    conv.__class__ = FFTConv2d
    conv.for_training, conv.divisor, conv.offset = for_training, divisor, offset
    return conv


def fft_for_training(model, min_kernel=MIN_KERNEL):
    """Swap the wide convolutions of a UNet (kernels min_kernel x min_kernel and up: 6 is s >= 2, 9 is
    s >= 3; never the first layer with its single input channel) for FFTConv2d, in place, keeping
    every parameter object, and fold the division by s^2 that follows a DoubleConv's convolutions
    into them (its Divide becomes an Identity); returns the model. The state dict keeps its keys and
    tensors; the network computes the same function up to float32 rounding, in any memory format
    (channels-last is faster). Meant for training: fold_for_inference wants the plain UNet, which
    loads this one's state dict."""
    for block in model.modules():
        if isinstance(block, DoubleConv):
            layers = block.double_conv
            for i in (0, 4):
                conv, divide = layers[i], layers[i + 1]
                if type(conv) is nn.Conv2d and wants_fft(conv, min_kernel) and isinstance(divide, Divide):
                    as_fft(conv, for_training=True, divisor=divide.divisor)
                    layers[i + 1] = nn.Identity()
    if type(model.prediction) is nn.Conv2d and wants_fft(model.prediction, min_kernel):
        as_fft(model.prediction, for_training=True)
    return model


def reuse_freed_memory():
    """Make glibc's malloc keep freed blocks of up to 32 MB (its largest mmap threshold) for reuse
    instead of unmapping them, and keep up to 1 GB free at the top of its heap, so that the FFT
    path's temporaries (several of 10-45 MB a layer) need not fault in fresh zeroed pages every
    step: at s = 3, width 16, batch 32, page faults per step 60,000 -> 27,000, about 8 % of a step.
    Larger blocks are still handed back, so a one-off large allocation does not stay resident.
    Process-wide, harmless for the direct path. Returns whether it applied (False where there is no
    glibc, e.g. macOS or Windows)."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 * 2**20)) and bool(mallopt(m_trim_threshold, 2**30))
