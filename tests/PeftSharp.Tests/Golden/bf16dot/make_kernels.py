#!/usr/bin/python3
"""Writes the 8x48 VDPBF16PS micro-kernels (Bf16Dot.EmitKernel) as AT&T assembly, independently of the C# emitter,
and assembles them with llvm-mc into the golden bytes the tests compare the emitter's output with.

Run from this folder: /usr/bin/python3 make_kernels.py   (needs llvm-mc and objcopy on PATH; checked with LLVM 14)."""
import os
import subprocess

ROWS, COLS = 8, 48


def kernel(accumulate):
    lines = [f"vpxord %zmm{r}, %zmm{r}, %zmm{r}" for r in range(24)]
    lines.append(".Lloop:")
    lines += [f"vmovups {64 * v}(%rsi), %zmm{24 + v}" for v in range(3)]
    for i in range(ROWS):
        lines.append(f"vpbroadcastd {4 * i}(%rdi), %zmm27")
        lines += [f"vdpbf16ps %zmm27, %zmm{24 + v}, %zmm{3 * i + v}" for v in range(3)]
    lines += [f"add ${4 * ROWS}, %rdi", f"add ${4 * COLS}, %rsi", "dec %rdx", "jnz .Lloop"]
    for i in range(ROWS):
        for v in range(3):
            if accumulate:
                lines.append(f"vaddps {64 * v}(%rcx), %zmm{3 * i + v}, %zmm{3 * i + v}")
            lines.append(f"vmovups %zmm{3 * i + v}, {64 * v}(%rcx)")
        if i < ROWS - 1:
            lines.append("add %r8, %rcx")
    lines += ["vzeroupper", "ret"]
    return "\n".join(lines) + "\n"


for name, accumulate in (("store", False), ("add", True)):
    source = kernel(accumulate)
    with open(f"kernel_{name}.s", "w") as f:
        f.write(source)
    subprocess.run(["llvm-mc", "-triple=x86_64", "-mattr=+avx512f,+avx512bf16", "-filetype=obj", "-o", f"kernel_{name}.o"],
                   input=source, text=True, check=True)
    subprocess.run(["objcopy", "-O", "binary", "--only-section=.text", f"kernel_{name}.o", f"kernel_{name}.bin"], check=True)
    with open(f"kernel_{name}.bin", "rb") as f:
        code = f.read()
    os.remove(f"kernel_{name}.o")
    os.remove(f"kernel_{name}.bin")
    with open(f"kernel_{name}.hex", "w") as f:
        f.write(code.hex() + "\n")
