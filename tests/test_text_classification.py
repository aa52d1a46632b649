"""Text classification data: the folder and CSV readers on files written here (and every error they raise), words and
the training vocabulary, truncation and padding, stratified splits, Tiny Shakespeare's parser and the embedded
speakers task, and the bag of embeddings pooling over valid tokens only."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest
import torch

import zoo
from datamodules import (
    ShakespeareSpeakersDataModule,
    TextCSVDataModule,
    TextFolderDataModule,
    get_datamodule_class,
    tokenize,
)
from datamodules.text_classification import (
    SHAKESPEARE_SPEAKERS,
    SHAKESPEARE_SPEAKERS_FILE,
    TEXT_SPECIALS,
    UNK_ID,
    encode_text,
    parse_speeches,
    read_shakespeare_speakers,
    read_text_csv,
    read_text_folder,
    read_text_folders,
    sorted_labels,
    split_stratified,
    write_shakespeare_speakers,
)

SHARED_TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
#: Speeches of the embedded task per speaker, counted in Tiny Shakespeare by hand-checked parsing.
SPEECHES = {
    "GLOUCESTER": 211,
    "DUKE VINCENTIO": 189,
    "MENENIUS": 161,
    "ROMEO": 160,
    "PETRUCHIO": 155,
    "LEONTES": 124,
    "KING RICHARD II": 98,
    "PROSPERO": 60,
}


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def _write_reviews(root: Path) -> None:
    """An IMDB-like tree: train/{neg,pos,unsup} and test/{neg,pos}, three reviews a class in train."""
    for index in range(3):
        _write(root / "train" / "pos" / f"{index}_9.txt", f"A great film, truly great! Number {index}.")
        _write(root / "train" / "neg" / f"{index}_2.txt", f"A dull film; dull and long. Number {index}.")
        _write(root / "train" / "unsup" / f"{index}_0.txt", "Unlabelled.")
    _write(root / "test" / "pos" / "0_10.txt", "Great zebra!")
    _write(root / "test" / "neg" / "0_1.txt", "Dull zebra.")


# --- readers ----------------------------------------------------------------------------------------------------------
def test_read_text_folder_reads_classes_in_sorted_order_and_leaves_out_unsup(tmp_path):
    _write_reviews(tmp_path)
    texts, labels = read_text_folder(tmp_path / "train")
    assert labels == ["neg"] * 3 + ["pos"] * 3  # unsup left out, classes sorted, files sorted
    assert texts[0] == "A dull film; dull and long. Number 0." and texts[5].endswith("Number 2.")
    splits = read_text_folders(tmp_path)
    assert set(splits) == {"train", "test"} and splits["test"] == (["Dull zebra.", "Great zebra!"], ["neg", "pos"])
    assert set(read_text_folders(tmp_path / "train")) == {"train"}  # a flat tree is one pool


def test_folder_errors_name_the_folder_or_file(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"No folder at {missing}.*<root>/<class>/\*\.txt"):
        read_text_folder(missing)
    (tmp_path / "bare").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no class folder"):
        read_text_folder(tmp_path / "bare")
    _write(tmp_path / "data" / "pos" / "a.txt", "fine")
    (tmp_path / "data" / "neg").mkdir()
    with pytest.raises(ValueError, match=rf"class folder {tmp_path / 'data' / 'neg'} holds no \.txt file"):
        read_text_folder(tmp_path / "data")
    _write(tmp_path / "data" / "neg" / "latin1.txt", "caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'data' / 'neg' / 'latin1.txt'} is not UTF-8 text \(byte 3\)"):
        read_text_folder(tmp_path / "data")
    _write(tmp_path / "data" / "neg" / "latin1.txt", "  \n")
    with pytest.raises(ValueError, match=r"latin1\.txt is empty"):
        TextFolderDataModule(str(tmp_path / "data")).vocab  # noqa: B018 (the first read reads the files)


def test_read_text_csv_and_its_errors(tmp_path):
    path = _write(tmp_path / "reviews.csv", 'review,stars\n"Great, great.",5\nDull.,1\n"Fine, I guess",10\n')
    assert read_text_csv(path, "review", "stars") == (["Great, great.", "Dull.", "Fine, I guess"], ["5", "1", "10"])
    assert sorted_labels(["5", "1", "10"]) == ["1", "5", "10"]  # integers in numeric order
    with pytest.raises(
        ValueError, match=r"reviews\.csv has no column 'text' or 'label'; its columns are \['review', 'stars'\]"
    ):
        read_text_csv(path)
    with pytest.raises(ValueError, match="no column 'label'"):
        read_text_csv(path, text_column="review")
    holes = _write(tmp_path / "holes.csv", "text,label\nfine,a\n,b\n   ,a\nok,b\n")
    with pytest.raises(ValueError, match=r"holes\.csv: column 'text' is empty in data row\(s\) 2, 3"):
        read_text_csv(holes)
    unlabelled = _write(tmp_path / "unlabelled.csv", "text,label\nfine,a\nok,\n")
    with pytest.raises(ValueError, match=r"unlabelled\.csv: column 'label' is empty in data row\(s\) 2"):
        read_text_csv(unlabelled)
    latin = _write(tmp_path / "latin.csv", "text,label\nfine,a\ncaf\xe9,b\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv is not UTF-8 text \(byte 0xe9 on line 3\)"):
        read_text_csv(latin)
    with pytest.raises(FileNotFoundError, match=r"No CSV file at .*absent\.csv"):
        TextCSVDataModule(str(tmp_path / "absent.csv")).num_classes  # noqa: B018


# --- words, vocabulary, ids, batches ----------------------------------------------------------------------------------
def test_tokenize_keeps_punctuation_as_tokens_and_lowercases():
    text = "Speak, speak! We know't: 'Tis ROMEO."
    assert tokenize(text, punctuation=True) == [
        *("speak", ",", "speak", "!", "we", "know't", ":", "'", "tis", "romeo", "."),
    ]
    assert tokenize(text, punctuation=True, lowercase=False)[-2] == "ROMEO"
    assert tokenize(text) == ["speak", "speak", "we", "know't", "tis", "romeo"]  # the captions' default: words only


def test_vocabulary_is_built_from_the_training_split_only(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\n" + "\n".join(f"alpha beta {i % 2},{i % 2}" for i in range(8)))
    test = _write(tmp_path / "test.csv", "text,label\nalpha zebra,0\nbeta,1\n")
    dm = TextCSVDataModule(str(train), test_path=str(test), val_fraction=0.25, batch_size=8)
    assert dm.vocab[:2] == list(TEXT_SPECIALS) and "zebra" not in dm.vocab
    assert dm.encode("Alpha ZEBRA").tolist() == [dm.vocab.index("alpha"), UNK_ID]
    dm.setup()
    inputs, targets, lengths = next(iter(dm.test_dataloader()))
    assert inputs.tolist() == [[dm.vocab.index("alpha"), UNK_ID], [dm.vocab.index("beta"), 0]]
    assert targets.tolist() == [0, 1] and lengths.tolist() == [2, 1]
    assert (len(dm.datasets["train"]), len(dm.datasets["val"])) == (6, 2)  # test from its file: nothing carved
    # min_freq and max_vocab: 'alpha' and 'beta' (6 each in training) keep ids, the digits (3 each) do not
    few = TextCSVDataModule(str(train), test_path=str(test), val_fraction=0.25, min_freq=4)
    assert few.vocab == [*TEXT_SPECIALS, "alpha", "beta"]
    assert TextCSVDataModule(str(train), val_fraction=0.25, max_vocab=3).vocab == [*TEXT_SPECIALS, "alpha"]
    with pytest.raises(ValueError, match="max_vocab must be an integer of at least 3"):
        TextCSVDataModule(str(train), max_vocab=2)


def test_a_label_only_in_the_test_split_is_an_error(tmp_path):
    train = _write(tmp_path / "train.csv", "text,label\n" + "\n".join(f"w{i},{i % 2}" for i in range(10)))
    test = _write(tmp_path / "test.csv", "text,label\nw,7\n")
    with pytest.raises(ValueError, match=r"the test split has labels \['7'\] that training lacks"):
        TextCSVDataModule(str(train), test_path=str(test)).vocab  # noqa: B018
    one = _write(tmp_path / "one.csv", "text,label\na,x\nb,x\nc,x\n")
    with pytest.raises(ValueError, match=r"1 label\(s\) \['x'\]; need two"):
        TextCSVDataModule(str(one)).num_classes  # noqa: B018


def test_texts_are_truncated_to_max_length_and_padded_with_lengths(tmp_path):
    rows = [("one two three four five six seven", "a"), ("one", "b"), ("two three", "a"), ("four five six", "b")]
    path = _write(tmp_path / "t.csv", "text,label\n" + "\n".join(f"{t},{label}" for t, label in rows))
    dm = TextCSVDataModule(str(path), max_length=4, val_fraction=0.0, test_fraction=0.0, batch_size=4)
    assert (dm.max_length, dm.in_features, dm.num_classes, dm.class_names) == (4, 1, 2, ["a", "b"])
    dm.setup()
    inputs, targets, lengths = next(iter(dm._loader("train")))
    assert lengths.tolist() == [4, 1, 2, 3] and inputs.shape == (4, 4) and targets.tolist() == [0, 1, 0, 1]
    ids = {word: i for i, word in enumerate(dm.vocab)}
    assert inputs[0].tolist() == [ids[w] for w in ("one", "two", "three", "four")]  # the first max_length tokens
    steps = torch.arange(4)
    assert (inputs[steps >= lengths.unsqueeze(1)] == 0).all() and (inputs[steps < lengths.unsqueeze(1)] > 1).all()
    assert encode_text("", ids, 4).tolist() == [UNK_ID]  # every sequence keeps a step


def test_preprocessing_is_saved_with_the_datamodule(tmp_path):
    path = _write(tmp_path / "t.csv", "text,label\nA b,x\nb C,y\nc,x\nd,y\ne,x\nf,y\n")
    dm = TextCSVDataModule(str(path), lowercase=False, max_length=7, val_fraction=0.0, test_fraction=0.0)
    saved = dm.state_dict()["preprocessing"]
    assert saved["vocab"] == dm.vocab and "A" in saved["vocab"] and "a" not in saved["vocab"]
    assert (saved["input"], saved["classes"], saved["lowercase"], saved["max_length"]) == (
        "tokens",
        ["x", "y"],
        False,
        7,
    )
    assert saved["vocab_size"] == len(dm.vocab) and (saved["pad_id"], saved["unk_id"]) == (0, 1)


# --- splits -----------------------------------------------------------------------------------------------------------
def test_stratified_splits_are_deterministic_disjoint_and_keep_proportions():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    train, val, test = split_stratified(labels, 0.1, 0.2, seed=3)
    assert (train, val, test) == split_stratified(labels, 0.1, 0.2, seed=3)
    assert split_stratified(labels, 0.1, 0.2, seed=4) != (train, val, test)
    assert sorted(train + val + test) == list(range(100)) and len(set(train + val + test)) == 100
    assert Counter(labels[i] for i in test) == {"a": 10, "b": 6, "c": 4}
    assert Counter(labels[i] for i in val) == {"a": 5, "b": 3, "c": 2}
    assert len(split_stratified(["a"] * 3 + ["b"] * 2, 0.05, 0.05, seed=0)[1]) == 1  # a fraction above 0 gets one
    with pytest.raises(ValueError, match="cannot give"):
        split_stratified(["a", "b"], 0.4, 0.4, seed=0)


def test_folder_datamodule_carves_validation_from_train_and_keeps_the_test_folder(tmp_path):
    _write_reviews(tmp_path)
    dm = TextFolderDataModule(str(tmp_path), val_fraction=0.34, batch_size=2)
    dm.setup()
    sizes = {split: len(dataset) for split, dataset in dm.datasets.items()}
    assert sizes == {"train": 4, "val": 2, "test": 2} and dm.class_names == ["neg", "pos"]
    assert sorted(dm.datasets["val"].targets.tolist()) == [0, 1]  # stratified: one review of each class
    assert "zebra" not in dm.vocab and "unlabelled" not in dm.vocab  # test and unsup words are not in it
    assert get_datamodule_class("TextFolder") is TextFolderDataModule


# --- Tiny Shakespeare -------------------------------------------------------------------------------------------------
SNIPPET = """First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak.

TITUS:

MENENIUS:
Why, masters, my good friends, mine honest neighbours,
Will you undo yourselves?
"""


def test_parse_speeches_reads_the_tiny_shakespeare_format():
    assert parse_speeches(SNIPPET) == [
        ("First Citizen", "Before we proceed any further, hear me speak."),
        ("All", "Speak, speak."),
        ("MENENIUS", "Why, masters, my good friends, mine honest neighbours,\nWill you undo yourselves?"),
    ]  # TITUS speaks no line: no speech
    with pytest.raises(ValueError, match=r"play\.txt, line 4: a speech starts with its speaker's name"):
        parse_speeches("ROMEO:\nHark.\n\nNo colon here\nline\n", source="play.txt")


def test_write_and_read_speakers_round_trip(tmp_path):
    source = _write(tmp_path / "input.txt", SNIPPET)
    path = tmp_path / "speakers.tsv.gz"
    assert write_shakespeare_speakers(str(source), str(path), speakers=("All", "MENENIUS")) == 2
    texts, labels = read_shakespeare_speakers(str(path))
    assert labels == ["All", "MENENIUS"] and texts[1] == parse_speeches(SNIPPET)[2][1]
    first = path.read_bytes()
    write_shakespeare_speakers(str(source), str(path), speakers=("All", "MENENIUS"))
    assert path.read_bytes() == first  # no time stamp in the gzip header
    with pytest.raises(ValueError, match=r"no speech of \['PROSPERO'\]"):
        write_shakespeare_speakers(str(source), str(path), speakers=("All", "PROSPERO"))
    with pytest.raises(FileNotFoundError, match="write_shakespeare_speakers"):
        read_shakespeare_speakers(str(tmp_path / "absent.tsv.gz"))


def test_embedded_speakers_classes_sizes_and_split():
    texts, labels = read_shakespeare_speakers()
    assert Counter(labels) == SPEECHES and len(texts) == 1158 and set(SHAKESPEARE_SPEAKERS) == set(SPEECHES)
    assert Path(SHAKESPEARE_SPEAKERS_FILE).stat().st_size < 200_000
    dm = ShakespeareSpeakersDataModule()
    assert dm.class_names == sorted(SPEECHES) and dm.num_classes == 8
    assert (dm.vocab_size, dm.max_length) == (1500, 128)
    assert (dm.vocab_size, dm.max_length, dm.num_classes) == tuple(
        zoo.model_info("bag_of_embeddings_speakers").args[key] for key in ("vocab_size", "max_length", "num_classes")
    )
    dm.setup()
    sizes = {split: len(dataset) for split, dataset in dm.datasets.items()}
    assert sizes == {"train": 810, "val": 174, "test": 174}
    test_counts = Counter(dm.datasets["test"].targets.tolist())
    assert test_counts[dm.class_names.index("GLOUCESTER")] == 32 and test_counts[dm.class_names.index("PROSPERO")] == 9
    again = ShakespeareSpeakersDataModule()
    again.setup()
    assert all(
        torch.equal(a, b) for a, b in zip(dm.datasets["test"].sequences, again.datasets["test"].sequences, strict=True)
    )


@pytest.mark.skipif(not SHARED_TEXT.is_file(), reason="needs ../shared/data/tinyshakespeare/input.txt")
def test_the_embedded_file_is_what_the_command_writes_from_tiny_shakespeare(tmp_path):
    path = tmp_path / "speakers.tsv.gz"
    assert write_shakespeare_speakers(str(SHARED_TEXT), str(path)) == 1158
    assert gzip.decompress(path.read_bytes()) == gzip.decompress(Path(SHAKESPEARE_SPEAKERS_FILE).read_bytes())


# --- bag of embeddings ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max"])
def test_bag_of_embeddings_pools_the_valid_tokens_only(pooling):
    torch.manual_seed(0)
    model = zoo.BagOfEmbeddings(num_classes=3, vocab_size=20, embed_dim=6, hidden_dims=(), pooling=pooling).eval()
    lengths = torch.tensor([5, 2, 3])
    x = torch.randint(2, 20, (3, 5))  # padding filled with real ids: only the lengths can leave them out
    table = model.embed.weight.detach()
    expected = []
    for row, length in zip(x, lengths.tolist(), strict=True):
        vectors = table[row[:length]]  # (length, embed_dim)
        parts = {"mean": [vectors.mean(0)], "max": [vectors.amax(0)], "mean_max": [vectors.mean(0), vectors.amax(0)]}
        expected.append(torch.cat(parts[pooling]))
    with torch.no_grad():
        features = model.forward_features(x, lengths)
        torch.testing.assert_close(features, torch.stack(expected))
        alone = model(x[1:2, :2], lengths[1:2])  # the second text without its padding
        torch.testing.assert_close(model(x, lengths)[1:2], alone)
    assert model.num_features == 6 * (2 if pooling == "mean_max" else 1)
    with pytest.raises(ValueError, match="Unknown pooling 'sum'"):
        zoo.BagOfEmbeddings(pooling="sum")
    with pytest.raises(ValueError, match="vocab_size must be at least 1"):
        zoo.BagOfEmbeddings(vocab_size=0)
