"""Where the networks run: the device a flag names, bfloat16 autocast, and whether bfloat16 is native here."""

import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

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


# CPU flags of native bfloat16: x86's (as /proc/cpuinfo and lscpu name them) and Arm's (Linux and macOS alike)
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_info(field, cpuinfo="/proc/cpuinfo"):
    """The first processor's value of field (e.g. "model name", "flags") in cpuinfo (Linux's /proc/cpuinfo);
    '' where there is none."""
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == field), "")


def cpu_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's feature flags: cpuinfo's (Linux's /proc/cpuinfo) "flags" on x86, "Features" on Arm; on macOS,
    which has no cpuinfo, the Arm features sysctl reports (mac_cpu_flags). An empty set where there are none."""
    if sys.platform == "darwin":
        return mac_cpu_flags()
    return set((cpu_info("flags", cpuinfo) or cpu_info("Features", cpuinfo)).split())


def mac_cpu_flags():
    """The Arm features macOS reports as present (`sysctl hw.optional.arm`: lines "hw.optional.arm.FEAT_BF16: 1"),
    lower-cased without the prefix, as Linux names them (bf16, ...); an empty set on an Intel Mac or without sysctl."""
    prefix = "hw.optional.arm.FEAT_"
    try:
        lines = subprocess.run(["sysctl", "hw.optional.arm"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    flags = (line.split(":", 1) for line in lines.splitlines() if line.startswith(prefix) and ":" in line)
    return {name[len(prefix):].strip().lower() for name, value in flags if value.strip() == "1"}


def native_bf16(device):
    """Whether bfloat16 runs on hardware support here (a CUDA GPU, a CPU with AVX512-BF16, AMX or Arm's BF16), not
    emulated.

    On the CPU the flags decide (cpu_flags, on Linux and macOS alike): torch's own checks
    (torch._C._cpu._is_avx512_bf16_supported) are not in every build (not in 2.13.0+cpu), and its capability
    string says AVX512 with or without bfloat16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = torch._C._cpu
    names = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    checks = [getattr(cpu, name) for name in names if hasattr(cpu, name)]
    return any(check() for check in checks) or not cpu_flags().isdisjoint(BF16_FLAGS)


def autocast(amp, device):
    """bfloat16 autocast when amp is set, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def amp_advice(amp, device, prog, gain=None):
    """What a script says about --amp on the CPU, once: on a CPU without native bfloat16 (AVX2 only) --amp is
    emulated and far slower than float32, a warning; on one with it, without --amp, gain (a sentence of what
    --amp was measured to gain there), if given, as a note on stdout. float32 stays the default either way."""
    if device.type != "cpu":
        return
    if amp and not native_bf16(device):
        print(f"{prog}: warning: --amp on this CPU: it has no native bfloat16 (no AVX512-BF16 or AMX), so bfloat16 "
              "is emulated and runs far slower than float32 (about 125x for the paper's s = 1 network); drop --amp",
              file=sys.stderr)
    elif not amp and gain and native_bf16(device):
        print(f"{prog}: note: this CPU has native bfloat16 (AVX512-BF16 or AMX): {gain}", flush=True)
