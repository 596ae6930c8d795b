"""The NF4 code lookup as inline PTX: a byte's two weights without a memory access.

A gather into a table in memory (`pair_table`, 1 KiB) costs the L1 pipe up to eight 128-byte
lines per warp; on the H200 that, not memory, bounded the Triton NF4 kernels (bench/nf4_lookup.py:
the GEMV at 0.7-0.9 TB/s with the gather, 1.0-1.1 TB/s with this). Here the 16 codes' bfloat16
bits live in eight registers, their low bytes in four and their high bytes in four, and `prmt`
(byte permute, eight source bytes picked by a 3-bit index) looks them up: for the four nibbles of
two bytes, one `prmt` per half of each table, a `lop3` choosing the half by the nibble's bit 3
(a mask spread from those bits by a sign-replicating `prmt`), and two `prmt`s that pair the low and
high bytes into bfloat16. About six integer instructions a byte, all in registers.

The strings are built from the code table itself (bitsandbytes' NF4 values, as bfloat16), so they
hold for any 16-entry 4-bit code. Triton's interpreter cannot run PTX: `lookup_asm` returns "" there
and off NVIDIA GPUs, and the kernels gather from the table instead.
"""

from __future__ import annotations

import functools
import os

import torch


def table_words(code: tuple[float, ...]) -> tuple[list[str], list[str]]:
    """The low and the high bytes of the codes' bfloat16 bits, four to a 32-bit word."""
    bits = torch.tensor(code).to(torch.bfloat16).view(torch.int16).to(torch.int64).tolist()
    low = [b & 0xFF for b in bits]
    high = [(b >> 8) & 0xFF for b in bits]

    def words(values: list[int]) -> list[str]:
        return [f"0x{sum(values[4 * w + i] << (8 * i) for i in range(4)):08x}" for w in range(4)]

    return words(low), words(high)


def _lookup_two_bytes(src: str, low: list[str], high: list[str]) -> str:
    """PTX leaving in `lw` and `hw` the low and high bytes of the codes of the four nibbles in the
    low 16 bits of `src` (byte 0's low nibble first)."""
    def select(table: list[str], out: str) -> str:
        return (f"mov.b32 ta, {table[0]}; mov.b32 tb, {table[1]}; prmt.b32 lo, ta, tb, s7;\n"
                f"mov.b32 ta, {table[2]}; mov.b32 tb, {table[3]}; prmt.b32 hi, ta, tb, s7;\n"
                f"lop3.b32 {out}, lo, hi, m, 0xD8;\n")  # (lo & ~m) | (hi & m)

    return (f"and.b32 s7, {src}, 0x7777; shl.b32 m, {src}, 4; prmt.b32 m, m, {src}, 0xD9C8;\n"
            + select(low, "lw") + select(high, "hw"))


def _program(code: tuple[float, ...], per_pair) -> str:
    low, high = table_words(code)
    body = ""
    for half in (0, 1):
        src = "$4" if half == 0 else "w"
        if half:
            body += "shr.b32 w, $4, 16;\n"
        body += _lookup_two_bytes(src, low, high) + per_pair(half)
    return "{\n.reg .b32 w, s7, m, lo, hi, ta, tb, lw, hw, e, o;\n" + body + "}"


@functools.lru_cache(maxsize=8)
def pair_asm(code: tuple[float, ...]) -> str:
    """Four bytes ($4) -> four int32 ($0-$3), one per byte: the even (high-nibble) weight's
    bfloat16 bits in the upper half, the odd one's in the lower: what `pair_table` holds."""
    def pairs(half: int) -> str:
        a, b = ("$0", "$1") if half == 0 else ("$2", "$3")
        return f"prmt.b32 {a}, lw, hw, 0x5140; prmt.b32 {b}, lw, hw, 0x7362;\n"

    return _program(code, pairs)


@functools.lru_cache(maxsize=8)
def dequant_asm(code: tuple[float, ...]) -> str:
    """Four bytes ($4) and their fp32 scales ($5-$8) -> four int32 ($0-$3): each byte's two
    weights, scaled in fp32 and rounded to bfloat16, in memory order (even in the lower half)."""
    def scaled(half: int) -> str:
        text = ""
        for j, sel in enumerate(("0x5140", "0x7362")):
            byte = 2 * half + j
            text += (f"prmt.b32 e, lw, hw, {sel}; shl.b32 o, e, 16; and.b32 e, e, 0xFFFF0000;\n"
                     f"mul.f32 e, e, ${5 + byte}; mul.f32 o, o, ${5 + byte};\n"
                     f"cvt.rn.bf16x2.f32 ${byte}, o, e;\n")
        return text

    return _program(code, scaled)


@functools.lru_cache(maxsize=8)
def split_asm(code: tuple[float, ...]) -> str:
    """Four bytes ($4) -> their even (high-nibble) weights ($0, $1) and their odd ones ($2,
    $3), two bfloat16 to a register in memory order: the tensor-core kernel's two operands."""
    def split(half: int) -> str:
        even, odd = ("$0", "$2") if half == 0 else ("$1", "$3")
        return f"prmt.b32 {even}, lw, hw, 0x7351; prmt.b32 {odd}, lw, hw, 0x6240;\n"

    return _program(code, split)


def lookup_asm(code: torch.Tensor, kind: str = "pair") -> str:
    """The PTX for `code` (16 values, on the device that will run it), or "" where it cannot run:
    Triton's interpreter, a GPU that is not NVIDIA's, and for `dequant` (its bfloat16 pair
    conversion) one older than compute capability 8.0. `kind`: "pair" (`pair_asm`), "dequant"
    (`dequant_asm`) or "split" (`split_asm`)."""
    if os.environ.get("TRITON_INTERPRET") == "1" or torch.version.hip is not None:
        return ""
    if kind == "dequant" and code.is_cuda and (
            torch.cuda.get_device_capability(code.device) < (8, 0)):
        return ""
    values = tuple(float(v) for v in code.float().cpu())
    if len(values) != 16:
        return ""
    return {"pair": pair_asm, "dequant": dequant_asm, "split": split_asm}[kind](values)
