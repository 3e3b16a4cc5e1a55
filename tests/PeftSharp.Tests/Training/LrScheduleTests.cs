using PeftSharp.Training;

namespace PeftSharp.Tests.Training;

public class LrScheduleTests
{
    [Theory]
    [InlineData(0, 0.0)]
    [InlineData(1, 0.5)]
    [InlineData(2, 1.0)]
    [InlineData(6, 0.5)]
    [InlineData(9, 0.125)]
    [InlineData(10, 0.0)]
    [InlineData(12, 0.0)]
    public void LinearWarmsUpThenDecaysToZero(int step, double expected) =>
        Assert.Equal(expected, new LrSchedule("linear", 1.0, 2, 10).Factor(step), 12);

    [Theory]
    [InlineData(1, 0.5)]
    [InlineData(2, 1.0)]
    [InlineData(4, 0.85355339059327373)] // 0.5·(1 + cos(π·0.25))
    [InlineData(6, 0.5)]
    [InlineData(10, 0.0)]
    public void CosineIsHalfACosineAfterWarmup(int step, double expected) =>
        Assert.Equal(expected, new LrSchedule("cosine", 3e-4, 2, 10).Factor(step), 12);

    [Theory]
    [InlineData(3, 0.34549150281252629)] // progress 0.3, 2 cycles: 0.5·(1 + cos(π·0.6))
    [InlineData(5, 1.0)] // restart
    [InlineData(7, 0.65450849718747373)] // 0.5·(1 + cos(π·0.4))
    [InlineData(10, 0.0)]
    public void CosineWithRestartsRestartsEachCycle(int step, double expected) =>
        Assert.Equal(expected, new LrSchedule("cosine_with_restarts", 1.0, 0, 10, numCycles: 2).Factor(step), 12);

    [Theory]
    [InlineData(1, 0.5)]
    [InlineData(6, 0.325)] // (1 - 0.1)·0.5² + 0.1
    [InlineData(10, 0.1)]
    [InlineData(12, 0.1)]
    public void PolynomialDecaysToLrEnd(int step, double expected) =>
        Assert.Equal(expected, new LrSchedule("polynomial", 1.0, 2, 10, power: 2, lrEnd: 0.1).Factor(step), 12);

    [Fact]
    public void ConstantSchedules()
    {
        Assert.Equal(1.0, new LrSchedule("constant", 1.0, 5, 10).Factor(0));
        var w = new LrSchedule("constant_with_warmup", 2.0, 4, 10);
        Assert.Equal(0.25, w.Factor(1));
        Assert.Equal(1.0, w.Factor(5));
        Assert.Equal(2.0, w.LearningRate(9));
    }

    [Fact]
    public void KwargsAndWarmupComeFromTrainingArguments()
    {
        var args = new TrainingArguments { LrSchedulerType = "polynomial", LearningRate = 1.0, WarmupSteps = 0.1 };
        args.LrSchedulerKwargs["power"] = 2.0;
        args.LrSchedulerKwargs["lr_end"] = 0.1;
        var s = LrSchedule.From(args, 25);
        Assert.Equal(3, s.WarmupSteps); // ceil(0.1 · 25)
        Assert.Equal(2.0, s.Power);
        Assert.Equal(0.1, s.LrEnd);
        Assert.Throws<PeftSharpException>(() => new LrSchedule("polynomial", 1e-8, 0, 10));
        Assert.Throws<PeftSharpException>(() => new LrSchedule("exotic", 1, 0, 10));
    }
}
