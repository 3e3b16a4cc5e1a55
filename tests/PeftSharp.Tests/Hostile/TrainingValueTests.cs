using PeftSharp.Config;
using PeftSharp.Training;

namespace PeftSharp.Tests.Hostile;

/// <summary>Issue 19, item 7: values that cannot train are refused by name; a merely high learning rate is warned about.</summary>
public class TrainingValueTests
{
    private static RunConfig Load(string training) => RunConfig.FromTree(ConfigTree.ParseYaml($"""
        model:
          name_or_path: some/model
        data:
          train_file: data.jsonl
        training:
        {training}
        """));

    [Theory]
    [InlineData("  learning_rate: 1e6", "training: learning_rate is 1000000; expected at most 1")]
    [InlineData("  learning_rate: 2.0", "training: learning_rate is 2; expected at most 1")]
    [InlineData("  warmup_steps: 1e30", "warmup_steps")]
    [InlineData("  warmup_steps: 2.5", "warmup_steps must be a whole number")]
    [InlineData("  warmup_steps: -3", "warmup_steps")]
    [InlineData("  max_steps: -5", "max_steps")]
    [InlineData("  weight_decay: -0.1", "weight_decay")]
    [InlineData("  num_train_epochs: -1", "num_train_epochs")]
    public void A_value_that_cannot_train_is_refused_by_name(string training, string expected)
    {
        var e = Assert.Throws<PeftSharpException>(() => Load(training));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void A_high_learning_rate_is_accepted_with_a_warning()
    {
        var config = Load("  learning_rate: 0.05");
        Assert.Equal(0.05, config.Training.LearningRate);
        Assert.Contains(config.Notices, n => n.StartsWith("training.learning_rate 0.05 is high for fine-tuning"));
        Assert.DoesNotContain(Load("  learning_rate: 2e-4").Notices, n => n.Contains("learning_rate"));
    }

    [Fact]
    public void Validate_refuses_absurd_values_set_through_the_api()
    {
        var args = new TrainingArguments { LearningRate = 1e6 };
        Assert.Contains("learning_rate", Assert.Throws<PeftSharpException>(() => args.Validate()).Message);
        args = new TrainingArguments { WarmupSteps = 1e30 };
        Assert.Contains("warmup_steps", Assert.Throws<PeftSharpException>(() => args.Validate()).Message);
        args = new TrainingArguments { LearningRate = double.NaN };
        Assert.Contains("learning_rate is NaN", Assert.Throws<PeftSharpException>(() => args.Validate()).Message);
        new TrainingArguments().Validate();
    }
}
