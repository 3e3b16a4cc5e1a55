using System.Runtime.InteropServices;
using PeftSharp.Kernels;

namespace PeftSharp.Quantization;

/// <summary>Pins a 4-bit tensor's managed state arrays for as long as a <see cref="FourBitView"/> of it is in use.</summary>
internal readonly unsafe struct FourBitPin : IDisposable
{
    private static readonly float[] Nf4Table = PinnedTable(QuantType.Nf4);
    private static readonly float[] Fp4Table = PinnedTable(QuantType.Fp4);

    private readonly GCHandle _absmax, _quantizedAbsmax, _nestedAbsmax, _nestedCode;

    public FourBitPin(Quantized4BitTensor tensor)
    {
        var state = tensor.State;
        _absmax = Pin(state.Absmax);
        _quantizedAbsmax = Pin(state.QuantizedAbsmax);
        _nestedAbsmax = Pin(state.Nested?.Absmax);
        _nestedCode = Pin(state.Nested?.Code);
        var table = state.QuantType == QuantType.Nf4 ? Nf4Table : Fp4Table;
        View = new FourBitView
        {
            Packed = tensor.Packed.Pointer,
            Table = (float*)Marshal.UnsafeAddrOfPinnedArrayElement(table, 0),
            Absmax = Address<float>(_absmax),
            QuantizedAbsmax = Address<byte>(_quantizedAbsmax),
            NestedAbsmax = Address<float>(_nestedAbsmax),
            NestedCode = Address<float>(_nestedCode),
            NestedBlockSize = state.Nested?.BlockSize ?? 1,
            Offset = state.Offset,
            BlockSize = state.BlockSize,
            Rows = tensor.Rows,
            Columns = tensor.Columns,
        };
    }

    public FourBitView View { get; }

    public void Dispose()
    {
        Free(_absmax);
        Free(_quantizedAbsmax);
        Free(_nestedAbsmax);
        Free(_nestedCode);
    }

    private static float[] PinnedTable(QuantType type)
    {
        var table = GC.AllocateArray<float>(16, pinned: true);
        FourBitCodes.Table(type).CopyTo(table);
        return table;
    }

    private static GCHandle Pin(Array? array) => array is null || array.Length == 0 ? default : GCHandle.Alloc(array, GCHandleType.Pinned);

    private static T* Address<T>(GCHandle handle) where T : unmanaged =>
        handle.IsAllocated ? (T*)handle.AddrOfPinnedObject() : null;

    private static void Free(GCHandle handle)
    {
        if (handle.IsAllocated) handle.Free();
    }
}
