// Writes the Parquet fixtures of tests/PeftSharp.Tests/Golden/datasets with DuckDB (an implementation independent of
// Parquet.Net, which PeftSharp reads them with). Run from the repository root:
//   dotnet run -c Release --project tests/tools/DatasetGolden [output folder]
// The rows are generated from their index, so the tests can compute what each row holds.
using DuckDB.NET.Data;

string root = Path.GetFullPath(args.Length > 0 ? args[0] : "tests/PeftSharp.Tests/Golden/datasets");
using var db = new DuckDBConnection("DataSource=:memory:");
db.Open();
Exec("SET threads = 1");

void Exec(string sql)
{
    using var command = db.CreateCommand();
    command.CommandText = sql;
    command.ExecuteNonQuery();
}

void Copy(string select, string relative, string compression, int rowGroupSize = 122880)
{
    string path = Path.Combine(root, relative);
    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
    if (File.Exists(path)) File.Delete(path);
    Exec($"COPY ({select}) TO '{path}' (FORMAT parquet, COMPRESSION {compression}, ROW_GROUP_SIZE {rowGroupSize})");
    Console.WriteLine($"{relative}: {new FileInfo(path).Length} bytes");
}

// A smoltalk-shaped conversation: messages list<struct<content, role>> and a source column, row i of a split.
string Chat(int from, int to, string tag) => $$"""
    SELECT [{'content': 'Question {{tag}} ' || i || '?', 'role': 'user'},
            {'content': 'Answer {{tag}} ' || i || '.', 'role': 'assistant'}] AS messages,
           'gen-' || (i % 3) AS source
    FROM range({{from}}, {{to}}) t(i) ORDER BY i
    """;

// smoltalk: a dataset card with two configs; "all" has two train shards (snappy, several row groups) and a test shard (zstd).
File.WriteAllText(Path.Combine(Directory.CreateDirectory(Path.Combine(root, "smoltalk")).FullName, "README.md"), """
    ---
    language:
    - en
    configs:
    - config_name: all
      data_files:
      - split: train
        path: data/all/train-*
      - split: test
        path: data/all/test-*
    - config_name: smol-magpie
      data_files:
      - split: train
        path: data/smol-magpie/train-*
    ---
    # A smoltalk-shaped fixture written by tests/tools/DatasetGolden
    """.Replace("\r\n", "\n"));
Copy(Chat(0, 3000, "all"), "smoltalk/data/all/train-00000-of-00002.parquet", "snappy", rowGroupSize: 1000);
Copy(Chat(3000, 3010, "all"), "smoltalk/data/all/train-00001-of-00002.parquet", "snappy");
Copy(Chat(0, 7, "test"), "smoltalk/data/all/test-00000-of-00001.parquet", "zstd");
Copy(Chat(0, 5, "magpie"), "smoltalk/data/smol-magpie/train-00000-of-00001.parquet", "gzip");

// No card: the layout datasets infers (data/{split}-0000K-of-0000N.parquet), prompt-completion.
string PromptCompletion(int from, int to) =>
    $"SELECT 'Say ' || i || ':' AS prompt, ' ' || i || '!' AS completion FROM range({from}, {to}) t(i) ORDER BY i";
Copy(PromptCompletion(0, 6), "inferred/data/train-00000-of-00001.parquet", "snappy");
Copy(PromptCompletion(100, 103), "inferred/data/test-00000-of-00001.parquet", "snappy");

// TRL's other formats.
Copy("""
    SELECT [{'from': 'system', 'value': 'Be brief.'}, {'from': 'human', 'value': 'Hi ' || i},
            {'from': 'gpt', 'value': 'Hello ' || i}] AS conversations
    FROM range(0, 3) t(i) ORDER BY i
    """, "formats/sharegpt.parquet", "snappy");
Copy("""
    SELECT [{'role': 'user', 'content': [{'type': 'text', 'text': 'Part A' || i}, {'type': 'text', 'text': ' part B'}]},
            {'role': 'assistant', 'content': [{'type': 'text', 'text': 'Reply ' || i}]}] AS messages,
           '[{"type": "function", "function": {"name": "get_time", "description": "Current time", "parameters": {"type": "object", "properties": {}}}}]' AS tools
    FROM range(0, 3) t(i) ORDER BY i
    """, "formats/content_parts.parquet", "zstd");
Copy("""
    SELECT 'Is ' || i || ' even?' AS prompt, CASE WHEN i % 2 = 0 THEN 'Yes.' ELSE 'No.' END AS chosen,
           CASE WHEN i % 2 = 0 THEN 'No.' ELSE 'Yes.' END AS rejected
    FROM range(0, 4) t(i) ORDER BY i
    """, "formats/preference.parquet", "snappy");
Copy("""
    SELECT [{'role': 'user', 'content': 'Pick ' || i}, {'role': 'assistant', 'content': 'Good ' || i}] AS chosen,
           [{'role': 'user', 'content': 'Pick ' || i}, {'role': 'assistant', 'content': 'Bad ' || i}] AS rejected
    FROM range(0, 2) t(i) ORDER BY i
    """, "formats/preference_implicit_conversational.parquet", "snappy");
Copy("""
    SELECT 'Rate ' || i AS prompt, 'Answer ' || i AS completion, i % 2 = 0 AS label
    FROM range(0, 4) t(i) ORDER BY i
    """, "formats/unpaired_preference.parquet", "snappy");
Copy("""
    SELECT 'Line ' || i AS text, ['a' || i, 'b'] AS tags, {'n': i, 'name': 'x' || i} AS meta
    FROM range(0, 3) t(i) ORDER BY i
    """, "formats/text_nested_columns.parquet", "snappy");

// Bad input: messages of the wrong type, and a null role in row 2.
Copy("SELECT 'hello ' || i AS messages FROM range(0, 2) t(i)", "bad/messages_string.parquet", "snappy");
Copy("""
    SELECT [{'content': 'Q' || i, 'role': CASE WHEN i = 2 THEN NULL ELSE 'user' END},
            {'content': 'A' || i, 'role': 'assistant'}] AS messages
    FROM range(0, 3) t(i) ORDER BY i
    """, "bad/null_role.parquet", "snappy");
