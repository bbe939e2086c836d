"""Convolution by FFT for training: the whole padded image is one FFT tile, forward and backward.

At these image sizes (32s px wide) an image fits one transform: the circular correlation of the
padded input, zero-filled to a fast FFT size, equals the valid linear one. Per layer and step that
is four transforms of the feature maps (the input and the output forward, the output's gradient
and the input's gradient backward), and three batched products over the channels per frequency;
the input's spectrum is kept from the forward for the weight's gradient. The kernel's spectrum and
the weight's gradient (a k x k crop) are small DFT matrix products instead of transforms.

fft_for_training(model) swaps the wide convolutions of a UNet for FFTConv2d, a Conv2d with the
same parameters (same objects, same state-dict keys), so optimizer, checkpoints and
fold_for_inference see no difference.
"""

import math
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F


def fft_size(n):
    """The smallest even size >= n with no prime factor above 7 (MKL's fast sizes; 128 is not faster)."""
    m = n + n % 2
    while True:
        rest = m
        for p in (2, 3, 5, 7):
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return m
        m += 2


@lru_cache(maxsize=64)
def _dft_matrices(n_h, n_w, kernel):
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
    return along_h.float(), along_w.float(), inverse_w.float()


def _kernel_spectrum(weight, n_h, n_w):
    """conj(rfft2(weight, s=(n_h, n_w))) in the products' layout (F, C, O), F = n_h (n_w // 2 + 1):
    two small real matrix products (k taps per axis) instead of transforms of mostly zeros."""
    out_channels, in_channels, kernel, _ = weight.shape
    (cos_h, sin_h), (cos_w, sin_w), _ = _dft_matrices(n_h, n_w, kernel)
    taps = weight.permute(2, 3, 1, 0).reshape(kernel, kernel, in_channels * out_channels)  # (k_h, k_w, C O)
    # Along the width: P = sum_j exp(+i theta_fj) w_j, real and imaginary parts, for each tap row.
    real, imag = torch.matmul(cos_w, taps), torch.matmul(sin_w, taps)  # (k_h, n_w', C O) each
    # Along the height as one real product writing interleaved complex numbers: (cos + i sin)(P)
    # = cos [Re P, Im P] + sin [-Im P, Re P].
    stacked = torch.cat([torch.stack([real, imag], -1), torch.stack([-imag, real], -1)])  # (2 k_h, n_w', C O, 2)
    spectrum = torch.matmul(torch.cat([cos_h, sin_h], 1), stacked.view(2 * kernel, -1))  # (n_h, n_w' C O 2)
    return torch.view_as_complex(spectrum.view(-1, in_channels, out_channels, 2))  # (F, C, O)


def _weight_gradient(products, n_h, n_w, kernel):
    """The k x k taps of irfft2 of products (F, O, C): two small real matrix products instead of a
    transform whose output would be cropped to k x k; (O, C, k, k)."""
    _, out_channels, in_channels = products.shape
    (cos_h, sin_h), _, (cos_w, sin_w) = _dft_matrices(n_h, n_w, kernel)
    interleaved = torch.view_as_real(products).view(n_h, -1)  # (n_h, n_w' O C 2)
    # Along the height: Q = sum_f exp(+i phi_jf) G_f; cos and sin times [Re G, Im G] in one product.
    both = torch.matmul(torch.cat([cos_h, sin_h], 1).T, interleaved).view(2, kernel, -1, 2)
    real = both[0, ..., 0] - both[1, ..., 1]  # (k_h, n_w' O C)
    imag = both[0, ..., 1] + both[1, ..., 0]
    # Along the width, only the real part: sum_f (cos Re Q - sin Im Q), weighted for the half spectrum.
    real = real.view(kernel, n_w // 2 + 1, -1)
    imag = imag.view(kernel, n_w // 2 + 1, -1)
    taps = torch.matmul(cos_w.T, real) - torch.matmul(sin_w.T, imag)  # (k_h, k_w, O C)
    return taps.permute(2, 0, 1).reshape(out_channels, in_channels, kernel, kernel)


def _padded_buffer(x, padding, reflect, n_h, n_w):
    """x (B, C, H, W) padded by `padding` (reflected or zeros) into the top-left of a zero
    (B, C, n_h, n_w) buffer: one pass over x instead of a pad and a zero-fill copy."""
    batch, channels, height, width = x.shape
    p = padding
    rows, cols = height + 2 * p, width + 2 * p
    buffer = x.new_empty(batch, channels, n_h, n_w)
    buffer[..., rows:, :].zero_()
    buffer[..., :rows, cols:].zero_()
    buffer[..., p : p + height, p : p + width] = x
    if p and reflect:
        buffer[..., :p, p : p + width] = x[..., 1 : p + 1, :].flip(-2)
        buffer[..., p + height : rows, p : p + width] = x[..., height - 1 - p : height - 1, :].flip(-2)
        buffer[..., :rows, :p] = buffer[..., :rows, p + 1 : 2 * p + 1].flip(-1)
        buffer[..., :rows, p + width : cols] = buffer[..., :rows, width - 1 : p + width - 1].flip(-1)
    elif p:
        buffer[..., :p, :cols].zero_()
        buffer[..., p + height : rows, :cols].zero_()
        buffer[..., p : p + height, :p].zero_()
        buffer[..., p : p + height, p + width : cols].zero_()
    return buffer


def _unpad_gradient(grad, padding, reflect, height, width):
    """The gradient of _padded_buffer: grad (B, C, >= H + 2p, >= W + 2p) of the padded image, with the
    reflected borders added back onto the pixels they copied (in place on grad); (B, C, H, W)."""
    p = padding
    rows, cols = height + 2 * p, width + 2 * p
    if p and reflect:  # undo the width reflection (all padded rows), then the height one
        grad[..., :rows, p + 1 : 2 * p + 1] += grad[..., :rows, :p].flip(-1)
        grad[..., :rows, width - 1 : p + width - 1] += grad[..., :rows, p + width : cols].flip(-1)
        grad[..., p + 1 : 2 * p + 1, p : p + width] += grad[..., :p, p : p + width].flip(-2)
        grad[..., height - 1 : p + height - 1, p : p + width] += grad[..., p + height : rows, p : p + width].flip(-2)
    return grad[..., p : p + height, p : p + width]


def _inverse_cropped(products, batch, channels, n_h, n_w, rows, cols):
    """Real images (batch, channels, rows, cols) from spectra `products` (F, batch, channels): the
    inverse along the height first, keeping only the rows needed, then along the width."""
    spectra = products.view(n_h, n_w // 2 + 1, batch, channels).permute(2, 3, 0, 1)  # (B, C, n_h, n_w')
    spectra = torch.fft.ifft(spectra, dim=-2)[..., :rows, :]
    return torch.fft.irfft(spectra, n=n_w, dim=-1)[..., :cols]


class _FFTCorrelation(torch.autograd.Function):
    """conv2d(pad(x), weight, bias) by FFT, with a backward that reuses the forward's input spectrum."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, reflect):
        batch, in_channels, height, width = x.shape
        out_channels, _, kernel, _ = weight.shape
        rows, cols = height + 2 * padding, width + 2 * padding  # padded input
        out_rows, out_cols = rows - kernel + 1, cols - kernel + 1
        n_h, n_w = fft_size(rows), fft_size(cols)
        frequencies = n_h * (n_w // 2 + 1)
        buffer = _padded_buffer(x, padding, reflect, n_h, n_w)  # (B, C, n_h, n_w)
        spectra = torch.fft.rfft2(buffer)  # (B, C, n_h, n_w')
        # One (B x C) matrix per frequency; contiguous, else bmm takes a slow path.
        spectra = spectra.permute(2, 3, 0, 1).reshape(frequencies, batch, in_channels).contiguous()  # (F, B, C)
        # Correlation is the product with the kernel's conjugate spectrum, summed over C per frequency.
        kernel_spectrum = _kernel_spectrum(weight, n_h, n_w)  # (F, C, O)
        products = torch.bmm(spectra, kernel_spectrum)  # (F, B, O)
        out = _inverse_cropped(products, batch, out_channels, n_h, n_w, out_rows, out_cols)
        out = out + bias[:, None, None] if bias is not None else out.contiguous()  # (B, O, H', W')
        ctx.save_for_backward(spectra, kernel_spectrum)
        ctx.geometry = (padding, reflect, height, width, n_h, n_w, kernel, bias is not None)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # (B, O, H', W')
        spectra, kernel_spectrum = ctx.saved_tensors
        padding, reflect, height, width, n_h, n_w, kernel, has_bias = ctx.geometry
        batch, out_channels, out_rows, out_cols = grad_out.shape
        in_channels = spectra.shape[-1]
        frequencies = n_h * (n_w // 2 + 1)
        grad_spectra = torch.fft.rfft2(_padded_buffer(grad_out, 0, False, n_h, n_w))  # (B, O, n_h, n_w')
        grad_spectra = grad_spectra.permute(2, 3, 0, 1).reshape(frequencies, batch, out_channels).contiguous()  # (F, B, O)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # the transposed correlation: a convolution with the kernel
            products = torch.bmm(grad_spectra, kernel_spectrum.transpose(1, 2).conj())  # (F, B, C)
            rows, cols = height + 2 * padding, width + 2 * padding
            grad_padded = _inverse_cropped(products, batch, in_channels, n_h, n_w, rows, cols)
            grad_x = _unpad_gradient(grad_padded, padding, reflect, height, width).contiguous()
        if ctx.needs_input_grad[1]:  # correlation of the input with the output's gradient, summed over B
            products = torch.bmm(grad_spectra.transpose(1, 2).conj(), spectra)  # (F, O, C)
            grad_weight = _weight_gradient(products, n_h, n_w, kernel)
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_out.sum((0, 2, 3))
        return grad_x, grad_weight, grad_bias, None, None


def fft_conv2d_train(x, weight, bias, padding, padding_mode):
    """The same as a stride-1 Conv2d with this padding (\"reflect\" or \"zeros\"), forward and backward, by FFT."""
    return _FFTCorrelation.apply(x, weight, bias, padding, padding_mode == "reflect")


def _autocast_enabled(device_type):
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class FFTConv2d(nn.Conv2d):
    """A Conv2d (stride 1, square kernel) computed by FFT in float32; other dtypes (bfloat16
    autocast) go the direct way. Same parameters and state-dict keys as nn.Conv2d."""

    def forward(self, x):  # (B, C, H, W) -> (B, O, H + 2p - k + 1, W + 2p - k + 1)
        if x.dtype != torch.float32 or _autocast_enabled(x.device.type):
            return super().forward(x)  # bfloat16 autocast (--amp): torch.fft does not take bfloat16
        return fft_conv2d_train(x, self.weight, self.bias, self.padding[0], self.padding_mode)


def fft_for_training(model):
    """Swap the wide convolutions of a UNet (kernels 6 x 6 and up, i.e. s >= 2) for FFTConv2d, in place,
    keeping every parameter object; returns the model. The first layer (one input channel) stays direct."""
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is nn.Conv2d and wants_fft(child):
                child.__class__ = FFTConv2d
    return model


def wants_fft(conv):
    """Whether FFT measured faster for this convolution in training (benchmarks/train_speed.py)."""
    kernel = conv.kernel_size[0]
    return (conv.kernel_size[0] == conv.kernel_size[1] and kernel >= 6 and conv.stride == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.in_channels > 1
            and conv.padding[0] == conv.padding[1] and conv.padding_mode in ("zeros", "reflect"))
