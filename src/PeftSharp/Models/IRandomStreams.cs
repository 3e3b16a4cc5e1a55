namespace PeftSharp.Models;

/// <summary>
/// A layer or model that draws random numbers in training (LoRA dropout, NEFTune noise). Before each micro-batch
/// the trainer hands it a key derived from (seed, optimizer step, micro-batch index); every stream restarts from
/// that key folded with the stream's own name. Masks are thus a pure function of the position in training:
/// nothing to save in a checkpoint, and a resumed run or a rank of a data-parallel run draws exactly the masks
/// the uninterrupted single-process run drew.
/// </summary>
public interface IRandomStreams
{
    void Reseed(ulong key);
}
