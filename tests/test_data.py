"""Text data: the built-in corpus, local formats, packing with BOS, column errors, resumable batches."""

import json

import pytest

from core import (BUILTIN_CORPUS, DatasetConfig, DatasetError, PackedSequences, TokenBatches, builtin_corpus_file,
                  held_out_sequences, load_text_dataset)


def one_epoch(cfg, tokenizer, **kwargs) -> list[list[int]]:
    """The sequences of the first epoch of `cfg`'s data."""
    stream = PackedSequences(cfg, tokenizer, bos_token_id=BOS, separator_token_id=BOS, **kwargs)
    sequences = []
    while stream.epoch == 0:
        sequences.append(next(stream))
    return sequences[:-1]

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
    seqs = one_epoch(cfg, tokenizer)
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
    seqs = one_epoch(cfg, tokenizer)
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




# ----------------------------------------------------------------------------------------------
# Epochs, held-out evaluation text, exact and cheap resumption


def _numbered_docs(tmp_path, n: int = 120):
    """Documents whose words name them (`d17w3`), so every token says which document it came from."""
    import random

    rng = random.Random(0)
    docs = [" ".join(f"d{i}w{j}" for j in range(rng.randint(2, 30))) for i in range(n)]
    path = tmp_path / "numbered.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return path


def _documents_in(tokenizer, sequences) -> list[int]:
    import re

    text = tokenizer.decode([t for s in sequences for t in s[1:] if t != BOS])
    return [int(m) for m in re.findall(r"d(\d+)w", text)]


class CountingTokenizer:
    """The real tokenizer, counting the texts it is asked to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, 0

    def __call__(self, texts, **kwargs):
        self.texts += len(texts)
        return self.tokenizer(texts, **kwargs)


@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_from_any_position_after_many_epochs_is_exact_and_cheap(tmp_path, tokenizer, shuffle):
    import io
    import random

    import torch

    from core.data import DOCS_PER_TOKENIZER_CALL

    cfg = DatasetConfig(path=str(_numbered_docs(tmp_path)), context_size=16, shuffle_documents=shuffle,
                        shuffle_buffer_documents=30)
    kwargs = dict(bos_token_id=BOS, separator_token_id=BOS, first_document=7, seed=5)
    reference = PackedSequences(cfg, tokenizer, **kwargs)
    expected = [next(reference) for _ in range(2500)]
    assert reference.epoch >= 4  # the data wrapped several times
    rng = random.Random(1)
    for n in sorted(rng.sample(range(2400), 12)) + [0]:
        stream = PackedSequences(cfg, tokenizer, **kwargs)
        for _ in range(n):
            next(stream)
        saved = io.BytesIO()
        torch.save(stream.position(), saved)  # a checkpoint holds it; only plain containers and tensors
        saved.seek(0)
        position = torch.load(saved, weights_only=True)
        counting = CountingTokenizer(tokenizer)
        resumed = PackedSequences(cfg, counting, position=position, **kwargs)
        assert counting.texts <= DOCS_PER_TOKENIZER_CALL  # one batch of documents, not everything before
        assert resumed.epoch == position["epoch"] and resumed.sequences_served == n
        assert [next(resumed) for _ in range(100)] == expected[n:n + 100], n


def test_held_out_documents_are_never_in_any_epoch_of_training(tmp_path, tokenizer):
    cfg = DatasetConfig(path=str(_numbered_docs(tmp_path)), context_size=16)
    held = held_out_sequences(cfg, tokenizer, bos_token_id=BOS, separator_token_id=BOS, n_sequences=10)
    assert len(held.sequences) == 10 and all(len(s) == 16 and s[0] == BOS for s in held.sequences)
    held_docs = set(_documents_in(tokenizer, held.sequences))
    assert held_docs == set(range(held.n_documents - 1)) | ({held.n_documents - 1} & held_docs)
    stream = PackedSequences(cfg, tokenizer, bos_token_id=BOS, separator_token_id=BOS,
                             first_document=held.n_documents)
    trained = [next(stream) for _ in range(1500)]
    assert stream.epoch >= 2  # wrapped twice
    trained_docs = _documents_in(tokenizer, trained)
    assert min(trained_docs) == held.n_documents  # every epoch starts after the held-out documents
    assert set(trained_docs) == set(range(held.n_documents, 120))


def test_shuffled_epochs_are_permutations_of_the_training_documents(tmp_path, tokenizer):
    cfg = DatasetConfig(path=str(_numbered_docs(tmp_path)), context_size=16, shuffle_documents=True,
                        shuffle_buffer_documents=40)
    first = one_epoch(cfg, tokenizer, first_document=5, seed=1)
    again = one_epoch(cfg, tokenizer, first_document=5, seed=1)
    other_seed = one_epoch(cfg, tokenizer, first_document=5, seed=2)
    plain = one_epoch(DatasetConfig(path=cfg.path, context_size=16), tokenizer, first_document=5)
    assert first == again != other_seed
    order = list(dict.fromkeys(_documents_in(tokenizer, first)))
    assert sorted(order) == list(range(5, 120))  # each training document once per epoch
    assert order != sorted(order) and first != plain


def test_a_position_from_another_holdout_is_refused(tmp_path, tokenizer):
    cfg = DatasetConfig(path=str(_numbered_docs(tmp_path)), context_size=16)
    stream = PackedSequences(cfg, tokenizer, bos_token_id=BOS, separator_token_id=BOS, first_document=3)
    next(stream)
    with pytest.raises(DatasetError, match="holds out 4"):
        PackedSequences(cfg, tokenizer, bos_token_id=BOS, separator_token_id=BOS, first_document=4,
                        position=stream.position())


def test_too_little_text_for_the_held_out_sequences(tmp_path, tokenizer):
    cfg = DatasetConfig(path=str(_numbered_docs(tmp_path, n=5)), context_size=16)
    with pytest.raises(DatasetError, match="fewer than the 500 held out"):
        held_out_sequences(cfg, tokenizer, bos_token_id=BOS, separator_token_id=BOS, n_sequences=500)


def test_builtin_corpus_holds_each_passage_once(tmp_path):
    import re

    rows = [json.loads(line) for line in builtin_corpus_file(tmp_path).read_text().splitlines()]
    paragraphs = [" ".join(p.split()) for r in rows for p in re.split(r"\n\s*\n", r["text"]) if p.strip()]
    long_ones = [p for p in paragraphs if len(p) > 60]
    assert len(long_ones) > 5000
    assert len(set(long_ones)) == len(long_ones)
    # pydoc's "customization" topic is a part of "specialnames": its text is kept once.
    key = "Called when the instance is about to be destroyed"
    assert sum(key in p for p in paragraphs) == 1
