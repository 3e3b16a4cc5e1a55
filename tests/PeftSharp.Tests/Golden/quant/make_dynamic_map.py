#!/usr/bin/env python3
"""bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), the 8-bit map that double
quantization uses for the absmax values, evaluated with PyTorch (Debian's python3-torch 1.13 here) and written as
the float32 bit patterns of its 256 entries. The function body restates bitsandbytes.functional.create_dynamic_map.
Run: python3 tests/PeftSharp.Tests/Golden/quant/make_dynamic_map.py
"""
import json
import os
import struct

import torch


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    if additional_items > 0:
        boundaries = torch.linspace(0.1, 1, additional_items + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


def main():
    values = create_dynamic_map()
    bits = [struct.unpack("<I", struct.pack("<f", float(v)))[0] for v in values]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dynamic_map_signed.json")
    with open(out, "w") as f:
        json.dump({"torch": torch.__version__, "float32_bits": bits}, f)
        f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
