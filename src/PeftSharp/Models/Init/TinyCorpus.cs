namespace PeftSharp.Models.Init;

/// <summary>A small built-in English text the tiny tokenizer's merges are learned from.</summary>
internal static class TinyCorpus
{
    public const string Text =
        """
        Once upon a time, there was a little girl named Lily. She loved to play outside in the sun with her friends.
        One day, she found a small red ball in the garden. "Look, Mom! I found a ball!" she said. Her mom smiled and
        said, "That is a very nice ball. Can you share it with your brother?" Lily thought about it and then she
        gave the ball to her brother Tom. They played together all afternoon, and they were very happy.

        The cat sat on the mat. The dog ran in the park. The bird sang a song in the tall green tree.
        The children walked to school in the morning and came back home in the evening. They read books,
        wrote stories, and learned about numbers: one, two, three, four, five, six, seven, eight, nine, ten.

        A language model reads text as a sequence of tokens and learns to predict the next token. Training
        changes the weights of the model so that the loss goes down. Fine-tuning starts from a model that was
        already trained and adapts it to a new task with a smaller dataset. Low-rank adaptation adds two small
        matrices to a frozen weight, and only those matrices are trained, which saves memory and time.

        Question: What is the capital of France? Answer: The capital of France is Paris.
        Question: How many days are there in a week? Answer: There are seven days in a week.
        Question: What color is the sky on a clear day? Answer: The sky is blue on a clear day.
        User: Please write a short poem about the sea. Assistant: The sea is wide, the sea is deep; it sings the
        shore to sleep. Waves come in and waves go out, and that is what the sea is about.

        In 2024, the team wrote 1,234 lines of code and ran 56 tests in 7.8 seconds. The price was $19.99 (plus tax).
        Email me at hello@example.com, or call 555-0100. It's a nice day, isn't it? We'll see; they're here; I'd go.
        def add(a, b):
            return a + b

        for i in range(10):
            print(i * 2)

        The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
        Every morning the old man walked along the river, looking at the water and thinking about the years that
        had passed. He remembered his father, who had taught him how to fish, and his mother, who had told him
        stories by the fire. The river was always the same, and yet it was never the same river.
        """;
}
