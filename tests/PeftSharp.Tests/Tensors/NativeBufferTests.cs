using PeftSharp.Tensors;

namespace PeftSharp.Tests.Tensors;

public unsafe class NativeBufferTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(1023)]
    [InlineData(262_145)]   // past the page allocator's 1 MiB threshold
    [InlineData(3_000_001)]
    public void IsAlignedAndZeroed(long length)
    {
        using var buffer = new NativeBuffer<float>(length);
        Assert.Equal(0, (long)buffer.Pointer % NativeBuffer<float>.Alignment);
        Assert.All(buffer.Span.ToArray(), v => Assert.Equal(0f, v));
        Assert.Equal(length * 4, buffer.ByteLength);
    }

    [Fact]
    public void SliceOutsideThrows()
    {
        using var buffer = new NativeBuffer<float>(10);
        Assert.Throws<ArgumentOutOfRangeException>(() => buffer.Slice(8, 3));
        Assert.Equal(2, buffer.Slice(8, 2).Length);
    }

    [Fact]
    public void DisposedBufferRefusesAccess()
    {
        var buffer = new NativeBuffer<float>(4);
        buffer.Dispose();
        Assert.Throws<ObjectDisposedException>(() => { _ = buffer.Pointer; });
    }

    [Fact]
    public void PagedBuffersHoldWhatIsWrittenAndAreFreedAgainAndAgain()
    {
        for (int round = 0; round < 3; round++)
        {
            using var buffer = new NativeBuffer<float>(1 << 20, clear: false);
            var span = buffer.Span;
            for (int i = 0; i < span.Length; i += 4099) span[i] = i + round;
            for (int i = 0; i < span.Length; i += 4099) Assert.Equal(i + round, span[i]);
        }
    }
}
