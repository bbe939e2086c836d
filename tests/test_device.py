"""Where the networks run: native bfloat16 is told from the CPU's flags, and only its absence is warned about."""

import os
import types

import pytest
import torch

from utils import device as device_module
from utils.device import BF16_FLAGS, amp_advice, cpu_flags, cpu_info, native_bf16

CPU = torch.device("cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx2\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512f", "avx512_bf16"}  # the first processor's
    assert cpu_info("model name", cpuinfo) == "AMD EPYC"
    assert cpu_flags(tmp_path / "absent") == set() and cpu_info("model name", tmp_path / "absent") == ""


def test_arm_linux_names_its_flags_features(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\n\n")
    assert cpu_flags(cpuinfo) == {"fp", "asimd", "sve", "bf16", "i8mm"}


@pytest.mark.parametrize(("flags", "native"), [({"avx2", "avx512f"}, False), ({"avx2", "avx512_bf16"}, True),
                                                ({"amx_bf16"}, True), ({"asimd", "bf16"}, True), (set(), False)])
def test_native_bf16_on_a_cpu_follows_its_flags(monkeypatch, flags, native):
    monkeypatch.setattr(torch._C, "_cpu", types.SimpleNamespace())  # a torch build without its own checks
    monkeypatch.setattr(device_module, "cpu_flags", lambda: flags)
    assert native_bf16(CPU) is native
    assert set(BF16_FLAGS) == {"avx512_bf16", "amx_bf16", "bf16"}


# What `sysctl hw.optional.arm` prints on an Apple M2 (FEAT_BF16 1) and, with FEAT_BF16 0, on an M1.
MAC_SYSCTL = "hw.optional.arm.FEAT_FP16: 1\nhw.optional.arm.FEAT_BF16: {bf16}\nhw.optional.arm.FEAT_I8MM: {bf16}\n"


@pytest.mark.parametrize("bf16", [1, 0])
def test_a_mac_is_asked_through_sysctl_since_torch_has_no_check(monkeypatch, tmp_path, bf16):
    sysctl = tmp_path / "sysctl"  # a stand-in for macOS's sysctl, first on the PATH
    sysctl.write_text(f"#!/bin/sh\n[ \"$1\" = hw.optional.arm ] && printf '{MAC_SYSCTL.format(bf16=bf16)}'\n")
    sysctl.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(device_module.sys, "platform", "darwin")
    monkeypatch.setattr(torch._C, "_cpu", types.SimpleNamespace())  # torch 2.13.0 has no check of its own
    assert cpu_flags() == ({"fp16", "bf16", "i8mm"} if bf16 else {"fp16"})
    assert native_bf16(CPU) is bool(bf16)
    monkeypatch.setenv("PATH", str(tmp_path / "absent"))  # no sysctl at all: no flags, not native
    assert cpu_flags() == set() and native_bf16(CPU) is False


@pytest.mark.parametrize("native", [False, True])
def test_slow_amp_is_warned_about_only_without_native_bf16_and_its_gain_noted_only_with_it(monkeypatch, capsys,
                                                                                          native):
    monkeypatch.setattr(device_module, "native_bf16", lambda device: native)
    amp_advice(True, CPU, "prog", "GAIN")
    said = capsys.readouterr()
    assert ("emulated" in said.err) is not native and said.out == ""  # a warning, on stderr
    amp_advice(False, CPU, "prog", "GAIN")
    said = capsys.readouterr()
    assert said.err == "" and ("GAIN" in said.out) is native  # a note, on stdout
    amp_advice(False, CPU, "prog")
    assert capsys.readouterr() == ("", "")
    amp_advice(True, torch.device("meta"), "prog", "GAIN")  # not a CPU: nothing
    assert capsys.readouterr() == ("", "")
