namespace PeftSharp.Kernels;

/// <summary>
/// A minimal x86-64 assembler for the few instructions the emitted micro-kernels need (<see cref="Bf16Dot"/>):
/// EVEX-encoded 512-bit forms of VDPBF16PS, VPBROADCASTD, VMOVUPS, VADDPS and VPXORD, and the general-purpose
/// ADD / DEC / JNZ / RET plus VZEROUPPER. .NET has no intrinsic for AVX512-BF16, so a kernel that uses it is
/// written here as bytes, the way oneDNN writes its kernels with Xbyak. Memory operands are [base + disp] only
/// (no index register); displacements use EVEX's compressed disp8·N where they fit. Every encoding is checked
/// against llvm-mc's in the tests (golden bytes).
/// </summary>
internal sealed class X64Emitter
{
    public const int Rcx = 1, Rdx = 2, Rsp = 4, Rsi = 6, Rdi = 7, R8 = 8, R12 = 12;

    private readonly List<byte> _code = [];

    public int Position => _code.Count;

    public byte[] ToArray() => [.. _code];

    /// <summary>vdpbf16ps zmm<paramref name="dst"/>, zmm<paramref name="src1"/>, zmm<paramref name="src2"/> (EVEX.512.F3.0F38.W0 52 /r).</summary>
    public void Vdpbf16ps(int dst, int src1, int src2) => EvexRegisters(map: 2, pp: 2, opcode: 0x52, dst, src1, src2);

    /// <summary>vpxord zmm<paramref name="dst"/>, zmm<paramref name="src1"/>, zmm<paramref name="src2"/> (EVEX.512.66.0F.W0 EF /r).</summary>
    public void Vpxord(int dst, int src1, int src2) => EvexRegisters(map: 1, pp: 1, opcode: 0xEF, dst, src1, src2);

    /// <summary>vpbroadcastd zmm<paramref name="dst"/>, dword [<paramref name="baseRegister"/> + disp] (EVEX.512.66.0F38.W0 58 /r; disp8·4).</summary>
    public void VpbroadcastdLoad(int dst, int baseRegister, int displacement) =>
        EvexMemory(map: 2, pp: 1, opcode: 0x58, dst, vvvv: 0, baseRegister, displacement, scale: 4);

    /// <summary>vmovups zmm<paramref name="dst"/>, [<paramref name="baseRegister"/> + disp] (EVEX.512.0F.W0 10 /r; disp8·64).</summary>
    public void VmovupsLoad(int dst, int baseRegister, int displacement) =>
        EvexMemory(map: 1, pp: 0, opcode: 0x10, dst, vvvv: 0, baseRegister, displacement, scale: 64);

    /// <summary>vmovups [<paramref name="baseRegister"/> + disp], zmm<paramref name="src"/> (EVEX.512.0F.W0 11 /r; disp8·64).</summary>
    public void VmovupsStore(int baseRegister, int displacement, int src) =>
        EvexMemory(map: 1, pp: 0, opcode: 0x11, src, vvvv: 0, baseRegister, displacement, scale: 64);

    /// <summary>vaddps zmm<paramref name="dst"/>, zmm<paramref name="src1"/>, [<paramref name="baseRegister"/> + disp] (EVEX.512.0F.W0 58 /r; disp8·64).</summary>
    public void VaddpsLoad(int dst, int src1, int baseRegister, int displacement) =>
        EvexMemory(map: 1, pp: 0, opcode: 0x58, dst, src1, baseRegister, displacement, scale: 64);

    /// <summary>add r64, imm32 (REX.W 83 /0 ib, or 81 /0 id).</summary>
    public void AddImmediate(int register, int immediate)
    {
        CheckGpr(register);
        Emit((byte)(0x48 | ((register >> 3) & 1)));
        bool short8 = immediate is >= sbyte.MinValue and <= sbyte.MaxValue;
        Emit(short8 ? (byte)0x83 : (byte)0x81);
        Emit((byte)(0xC0 | (register & 7)));
        if (short8) Emit((byte)(sbyte)immediate);
        else EmitInt32(immediate);
    }

    /// <summary>add <paramref name="dst"/>, <paramref name="src"/> (64-bit registers; REX.W 01 /r).</summary>
    public void AddRegister(int dst, int src)
    {
        CheckGpr(dst);
        CheckGpr(src);
        Emit((byte)(0x48 | (((src >> 3) & 1) << 2) | ((dst >> 3) & 1)));
        Emit(0x01);
        Emit((byte)(0xC0 | ((src & 7) << 3) | (dst & 7)));
    }

    /// <summary>dec r64 (REX.W FF /1).</summary>
    public void Decrement(int register)
    {
        CheckGpr(register);
        Emit((byte)(0x48 | ((register >> 3) & 1)));
        Emit(0xFF);
        Emit((byte)(0xC8 | (register & 7)));
    }

    /// <summary>jnz to the code position <paramref name="target"/> (0F 85 rel32).</summary>
    public void JumpIfNotZero(int target)
    {
        Emit(0x0F);
        Emit(0x85);
        EmitInt32(target - (Position + 4));
    }

    public void Vzeroupper()
    {
        Emit(0xC5);
        Emit(0xF8);
        Emit(0x77);
    }

    public void Ret() => Emit(0xC3);

    /// <summary>
    /// The four-byte EVEX prefix for a 512-bit operation without masking or broadcast: P0 = R̄ X̄ B̄ R̄' 0 0 m m,
    /// P1 = W v̄v̄v̄v̄ 1 p p, P2 = z L'L b V̄' a a a with L'L = 10 (512 bits).
    /// </summary>
    private void EvexPrefix(int map, int pp, int reg, int vvvv, int rmB, int rmX)
    {
        Emit(0x62);
        Emit((byte)((((~reg >> 3) & 1) << 7) | ((~rmX & 1) << 6) | ((~rmB & 1) << 5) | (((~reg >> 4) & 1) << 4) | map));
        Emit((byte)(((~vvvv & 15) << 3) | 4 | pp));
        Emit((byte)(0x40 | (((~vvvv >> 4) & 1) << 3)));
    }

    private void EvexRegisters(int map, int pp, byte opcode, int reg, int vvvv, int rm)
    {
        CheckZmm(reg);
        CheckZmm(vvvv);
        CheckZmm(rm);
        EvexPrefix(map, pp, reg, vvvv, (rm >> 3) & 1, (rm >> 4) & 1);
        Emit(opcode);
        Emit((byte)(0xC0 | ((reg & 7) << 3) | (rm & 7)));
    }

    private void EvexMemory(int map, int pp, byte opcode, int reg, int vvvv, int baseRegister, int displacement, int scale)
    {
        CheckZmm(reg);
        CheckZmm(vvvv);
        CheckGpr(baseRegister);
        if ((baseRegister & 7) == Rsp)
            throw new ArgumentException("rsp/r12 as a base needs a SIB byte, which this emitter does not write.", nameof(baseRegister));
        EvexPrefix(map, pp, reg, vvvv, (baseRegister >> 3) & 1, 0);
        Emit(opcode);
        int regBits = (reg & 7) << 3, rmBits = baseRegister & 7;
        if (displacement == 0 && rmBits != 5)
            Emit((byte)(regBits | rmBits));
        else if (displacement % scale == 0 && displacement / scale is >= sbyte.MinValue and <= sbyte.MaxValue)
        {
            Emit((byte)(0x40 | regBits | rmBits));
            Emit((byte)(sbyte)(displacement / scale));
        }
        else
        {
            Emit((byte)(0x80 | regBits | rmBits));
            EmitInt32(displacement);
        }
    }

    private static void CheckZmm(int register) => ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)register, 31u, nameof(register));

    private static void CheckGpr(int register) => ArgumentOutOfRangeException.ThrowIfGreaterThan((uint)register, 15u, nameof(register));

    private void Emit(byte value) => _code.Add(value);

    private void EmitInt32(int value)
    {
        for (int i = 0; i < 4; i++) Emit((byte)(value >> (8 * i)));
    }
}
