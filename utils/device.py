"""Where the networks run: the device a flag names, bfloat16 autocast, and whether bfloat16 is native here."""

import sys
from contextlib import nullcontext

import torch


class DeviceError(ValueError):
    """A device that was asked for and is not there; the message is one sentence with the fix."""


def pick_device(name, local_rank=0):
    """The device called `name`; auto means cuda if available, else mps, else cpu. local_rank: torchrun's GPU."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise DeviceError("--device cuda was asked for but CUDA is not available here (CPU-only PyTorch or no GPU); "
                          "use --device cpu or auto")
    if name == "mps" and not mps:
        raise DeviceError("--device mps was asked for but MPS is not available here; use --device cpu or auto")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)


def native_bf16(device):
    """Whether bfloat16 runs on hardware support here (a CUDA GPU, a CPU with AVX512-BF16 or AMX), not emulated."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = torch._C._cpu
    return any(
        getattr(cpu, check, lambda: False)() for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )


def autocast(amp, device):
    """bfloat16 autocast when amp is set, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def warn_if_slow_amp(amp, device, prog):
    """--amp on a CPU without native bfloat16 (AVX2 only) is far slower than float32: say so, once."""
    if amp and device.type == "cpu" and not native_bf16(device):
        print(f"{prog}: warning: --amp on this CPU: it has no native bfloat16 (no AVX512-BF16 or AMX), so bfloat16 "
              "is emulated and runs far slower than float32 (about 125x for the paper's s = 1 network); drop --amp",
              file=sys.stderr)
