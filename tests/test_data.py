"""Text data: the built-in corpus, local formats, packing with BOS, column errors, resumable batches."""

import json

import pytest

from core import BUILTIN_CORPUS, DatasetConfig, DatasetError, TokenBatches, builtin_corpus_file, load_text_dataset
from core.data import iterate_sequences

BOS = 50256


@pytest.fixture(scope="module")
def tokenizer(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_gpt2_dir)


def test_builtin_corpus_is_real_english_and_deterministic(tmp_path):
    first = builtin_corpus_file(tmp_path / "a")
    second = builtin_corpus_file(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    rows = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(rows) > 1000
    text = " ".join(r["text"] for r in rows[:200])
    for word in (" the ", " and ", " is ", " of "):
        assert word in text


def test_builtin_corpus_goes_through_datasets_json_loader(tmp_path):
    ds = load_text_dataset(DatasetConfig(path=BUILTIN_CORPUS), cache_dir=tmp_path)
    import datasets

    assert isinstance(ds, datasets.IterableDataset)
    row = next(iter(ds))
    assert isinstance(row["text"], str) and len(row["text"]) > 50


def _write_docs(tmp_path, fmt, docs):
    if fmt == "txt":
        path = tmp_path / "docs.txt"
        path.write_text("\n".join(docs) + "\n")
    elif fmt == "jsonl":
        path = tmp_path / "docs.jsonl"
        path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "docs.parquet"
        pq.write_table(pa.table({"text": docs}), path)
    else:
        import datasets

        path = tmp_path / "saved"
        datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "parquet", "saved"])
def test_local_formats_pack_into_bos_sequences(tmp_path, tokenizer, fmt):
    docs = [f"Document number {i} talks about the weather in a city far away." for i in range(40)]
    path = _write_docs(tmp_path, fmt, docs)
    cfg = DatasetConfig(path=str(path), context_size=16)
    seqs = list(iterate_sequences(cfg, tokenizer, bos_token_id=BOS, separator_token_id=BOS))
    assert seqs and all(len(s) == 16 and s[0] == BOS for s in seqs)
    # The bodies, concatenated, are exactly the documents' tokens joined by the separator.
    stream = []
    for d in docs:
        stream += tokenizer(d, add_special_tokens=False)["input_ids"] + [BOS]
    body = [t for s in seqs for t in s[1:]]
    assert body == stream[:len(body)]
    assert len(stream) - len(body) < 15


def test_pretokenized_dataset(tmp_path, tokenizer):
    path = tmp_path / "tok.jsonl"
    path.write_text("".join(json.dumps({"input_ids": list(range(100 + i, 130 + i))}) + "\n" for i in range(5)))
    cfg = DatasetConfig(path=str(path), is_tokenized=True, context_size=11)
    seqs = list(iterate_sequences(cfg, tokenizer, bos_token_id=BOS, separator_token_id=BOS))
    assert seqs[0] == [BOS] + list(range(100, 110))


def test_missing_text_column_is_a_clear_error(tmp_path, tokenizer):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"content": "hello there"}) + "\n")
    with pytest.raises(DatasetError, match=r"no column 'text'.*content.*dataset.text_column"):
        load_text_dataset(DatasetConfig(path=str(path)))


def test_missing_file_and_unknown_builtin(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_text_dataset(DatasetConfig(path=str(tmp_path / "nope.jsonl")))
    from core import ConfigError

    with pytest.raises(ConfigError, match="builtin:python-docs"):
        load_text_dataset(DatasetConfig(path="builtin:wikipedia"))


def test_unreachable_hub_dataset_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DatasetError, match="without network use a local file"):
        load_text_dataset(DatasetConfig(path="someone/a-dataset-that-is-not-cached"))


def test_too_little_text_for_one_sequence(tmp_path, tokenizer):
    path = tmp_path / "short.txt"
    path.write_text("tiny\n")
    batches = TokenBatches(DatasetConfig(path=str(path), context_size=64), tokenizer, bos_token_id=BOS,
                           separator_token_id=BOS, batch_size=2)
    with pytest.raises(DatasetError, match="smaller context_size"):
        next(batches)


def test_token_batches_skip_continues_the_same_stream(tokenizer, tmp_path):
    cfg = DatasetConfig(context_size=32)
    full = TokenBatches(cfg, tokenizer, bos_token_id=BOS, separator_token_id=BOS, batch_size=4, cache_dir=tmp_path)
    batches = [next(full) for _ in range(3)]
    resumed = TokenBatches(cfg, tokenizer, bos_token_id=BOS, separator_token_id=BOS, batch_size=4,
                           cache_dir=tmp_path, skip_sequences=full.sequences_served - 4)
    assert (next(resumed) == batches[2]).all()
    assert resumed.sequences_served == full.sequences_served
