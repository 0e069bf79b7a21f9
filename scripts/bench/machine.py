"""The machine a benchmark ran on, as the reports print it: CPU model, cores, and the SIMD
flags that decide which kernels tract and onnxruntime pick (VMs of one type differ: AVX-512 or
not changes the ratios)."""

import os
import platform

# The flags that change the kernels: x86 (AVX2/FMA, AVX-512 and its VNNI), ARM (NEON/asimd,
# the dot-product and fp16 extensions).
FLAGS = ("avx2", "fma", "avx512f", "avx512vnni", "asimd", "neon", "asimddp", "fphp")


def cpu_description() -> str:
    """E.g. ``AMD EPYC 9B14 (x86_64, 2 cores; avx2 fma, no avx512f)``."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        info = ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith(("model name", "Model", "Hardware"))), "unknown CPU")
    present = set()
    for line in info.splitlines():
        if line.startswith(("flags", "Features")):
            present.update(line.split(":", 1)[1].split())
    have = [f for f in FLAGS if f in present]
    missing = "" if "avx512f" in present or platform.machine() != "x86_64" else ", no avx512f"
    return f"{name} ({platform.machine()}, {os.cpu_count()} cores; {' '.join(have) or 'no SIMD flags listed'}{missing})"
