"""Captioning data: words and ids, batches, splits by image, Flickr8k and COCO files written here in their real
formats (and every error they can raise), and the embedded digit scenes, whose captions are checked against each
scene by a parser of their own."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules import (
    CaptionBatch,
    COCOCaptionsDataModule,
    DigitScenesCaptionsDataModule,
    FlickrCaptionsDataModule,
    build_vocab,
    collate_captions,
    decode_caption,
    encode_caption,
    scene_captions,
    split_by_image,
    tokenize,
)
from datamodules.captions import BOS, EOS, PAD, SPECIALS, UNK

VOCAB = [*SPECIALS, "a", "dog", "runs"]


# --- words, ids, batches ----------------------------------------------------------------------------------------------
def test_special_ids_and_tokenize():
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
    assert SPECIALS == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert tokenize('A "Dog", in the dog\'s yard ; 2 cats!') == ["a", "dog", "in", "the", "dog's", "yard", "2", "cats"]
    assert tokenize(" .,;: ") == []


def test_build_vocab_orders_by_count_then_alphabet_and_drops_rare_words():
    captions = ["b a a", "c b", "d a"]  # a: 3, b: 2, c: 1, d: 1
    assert build_vocab(captions) == [*SPECIALS, "a", "b", "c", "d"]
    vocab = build_vocab(captions, min_count=2)
    assert vocab == [*SPECIALS, "a", "b"]
    assert encode_caption("c a d b", vocab, max_length=10).tolist() == [UNK, 4, UNK, 5, EOS]
    with pytest.raises(ValueError, match="min_count"):
        build_vocab(captions, min_count=0)


def test_encode_truncates_then_ends_with_eos_and_decode_inverts_it():
    ids = encode_caption("A dog runs, a dog runs.", VOCAB, max_length=4)
    assert ids.dtype == torch.long and ids.tolist() == [4, 5, 6, 4, EOS]
    assert BOS not in ids.tolist()
    assert decode_caption(ids, VOCAB) == "a dog runs a"
    assert decode_caption(encode_caption("A dog runs.", VOCAB, 20), VOCAB) == "a dog runs"
    mapping = {word: index for index, word in enumerate(VOCAB)}
    assert encode_caption("a cat", mapping, 20).tolist() == [4, UNK, EOS]
    # PAD and BOS skipped, UNK shown, nothing after the first EOS
    assert decode_caption([BOS, 4, UNK, PAD, 5, EOS, 6, PAD], mapping) == "a <unk> dog"
    assert encode_caption("a dog", VOCAB, max_length=0).tolist() == [EOS]


def test_collate_pads_captions_and_references():
    image = torch.zeros(3, 4, 5)
    first = (image, torch.tensor([4, EOS]), [torch.tensor([4, EOS])])
    refs = [torch.tensor([5, 6, 4, EOS]), torch.tensor([6, EOS]), torch.tensor([4, 5, 6, 4, 5, EOS])]
    second = (image + 1, refs[0], refs)
    batch = collate_captions([first, second])
    assert isinstance(batch, CaptionBatch)
    assert batch.images.shape == (2, 3, 4, 5) and batch.images.dtype == torch.float32
    assert batch.captions.tolist() == [[4, EOS, PAD, PAD], [5, 6, 4, EOS]]
    assert batch.references.shape == (2, 3, 6) and batch.references.dtype == torch.long
    assert batch.references[0, 0].tolist() == [4, EOS, PAD, PAD, PAD, PAD]
    assert (batch.references[0, 1:] == PAD).all()  # missing rows all PAD
    assert batch.references[1, 1].tolist() == [6, EOS, PAD, PAD, PAD, PAD]
    assert batch.references[1, 2].tolist() == refs[2].tolist()


def test_split_by_image_is_disjoint_complete_and_seeded():
    names = [f"img{i // 3}.jpg" for i in range(300)]  # 100 images, three captions each
    train, val, test = split_by_image(names, 0.1, 0.2, seed=1)
    assert (len(train), len(val), len(test)) == (70, 10, 20)
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert set(train) | set(val) | set(test) == set(names)
    assert split_by_image(names, 0.1, 0.2, seed=1) == (train, val, test)
    assert split_by_image(names, 0.1, 0.2, seed=2) != (train, val, test)
    assert split_by_image(["a", "b", "c"], 0.01, 0.0, seed=0)[1] != []  # a non-zero fraction gets an image
    with pytest.raises(ValueError, match="2 images cannot be split"):
        split_by_image(["a", "b"], 0.3, 0.3, seed=0)
    with pytest.raises(ValueError, match="sum below 1"):
        split_by_image(names, 0.5, 0.5, seed=0)


# --- Flickr8k ---------------------------------------------------------------------------------------------------------
def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 14), (value, 255 - value, 40)).save(path)


def _flickr(root: Path, count: int = 10) -> dict[str, list[str]]:
    """A Kaggle-style Flickr8k folder: ``captions.txt`` with a header, commas and quotes inside captions, three
    captions per image, one word (``uniq<i>``) that only image ``i``'s captions hold; JPEG and PNG images."""
    captions = {}
    lines = ["image,caption"]
    for i in range(count):
        name = f"{1000 + i}_abc.{'jpg' if i % 2 else 'png'}"
        _image(root / "Images" / name, 20 * i)
        captions[name] = [
            f'A dog, brown and "happy", runs uniq{i} .',
            "A cat sits on a mat , near a door .",
            f"Two birds fly over water number {i % 3}",
        ]
        lines += [f'{name},"A dog, brown and ""happy"", runs uniq{i} ."', f"{name},{captions[name][1]}"]
        lines.append(f"{name},{captions[name][2]}")
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    return captions


def _paths(dm, split: str) -> list[str]:
    return [Path(path).name for path in dm.datasets[split].images.paths]


def test_flickr_captions_split_by_image_with_one_sample_per_caption_in_training(tmp_path):
    captions = _flickr(tmp_path)
    dm = FlickrCaptionsDataModule(str(tmp_path), img_size=(16, 12), batch_size=4, val_fraction=0.2, test_fraction=0.2)
    # linked attributes before setup
    assert (dm.in_channels, dm.img_size, dm.max_length) == (3, (16, 12), 9)
    assert dm.vocab[:4] == list(SPECIALS) and dm.vocab_size == len(dm.vocab)
    dm.setup("fit")
    splits = {split: _paths(dm, split) for split in ("train", "val", "test")}
    assert [len(images) for images in splits.values()] == [6, 2, 2]
    assert not (set(splits["train"]) & set(splits["val"]) or set(splits["train"]) & set(splits["test"]))
    assert not set(splits["val"]) & set(splits["test"])
    assert set().union(*splits.values()) == set(captions)
    train = dm.datasets["train"]
    assert len(train) == 3 * 6  # one sample per (image, caption): images repeat
    image, caption, references = train[4]
    assert image.shape == (3, 16, 12) and image.dtype == torch.float32
    assert len(references) == 3 and caption is references[1]
    assert decode_caption(caption, dm.vocab) == "a cat sits on a mat near a door"
    assert len(dm.datasets["val"]) == 2  # one sample per image, with all its references
    for index, name in enumerate(splits["test"]):
        image, caption, references = dm.datasets["test"][index]
        assert decode_caption(caption, dm.vocab) == decode_caption(references[0], dm.vocab)
        assert [decode_caption(ref, dm.vocab) for ref in references][1:] == [
            " ".join(tokenize(text)) for text in captions[name][1:]
        ]
        first = tokenize(captions[name][0])
        assert decode_caption(references[0], dm.vocab).split() == [
            "<unk>" if w.startswith("uniq") else w for w in first
        ]
    batch = next(iter(dm.val_dataloader()))
    assert batch.images.shape == (2, 3, 16, 12) and batch.references.shape[:2] == (2, 3)
    assert batch.captions.dtype == torch.long and (batch.captions == EOS).sum() == 2


def test_flickr_vocabulary_comes_from_the_training_images_only(tmp_path):
    _flickr(tmp_path)
    dm = FlickrCaptionsDataModule(str(tmp_path), img_size=8, val_fraction=0.2, test_fraction=0.2)
    dm.setup()
    split_words = {
        split: {f"uniq{int(name[:4]) - 1000}" for name in _paths(dm, split)} for split in ("train", "val", "test")
    }
    assert split_words["train"] <= set(dm.vocab)
    assert not (split_words["val"] | split_words["test"]) & set(dm.vocab)
    word = sorted(split_words["test"])[0]
    assert encode_caption(f"a {word} dog", dm.vocab, 5).tolist() == [
        dm.vocab.index("a"),
        UNK,
        dm.vocab.index("dog"),
        EOS,
    ]
    rare = FlickrCaptionsDataModule(str(tmp_path), img_size=8, val_fraction=0.2, test_fraction=0.2, min_count=2)
    assert not any(word.startswith("uniq") for word in rare.vocab) and "birds" in rare.vocab


def test_flickr_token_file_and_max_length(tmp_path):
    for i in range(4):
        _image(tmp_path / "Images" / f"im{i}.jpg", 50 * i)
    lines = [
        f"im{i}.jpg#{n}\tA man , number {i} , rides a very long red bicycle today ." for i in range(4) for n in (0, 1)
    ]
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    dm = FlickrCaptionsDataModule(
        str(tmp_path), "Flickr8k.token.txt", img_size=8, max_length=5, val_fraction=0.25, test_fraction=0.25
    )
    assert dm.max_length == 5
    dm.setup()
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == len(dm.datasets["test"]) == 1
    _, caption, references = dm.datasets["val"][0]
    assert _paths(dm, "val")[0][2] not in dm.vocab  # the image's number is in its own captions only
    assert len(references) == 2 and decode_caption(caption, dm.vocab) == "a man number <unk> rides"
    assert all(len(ref) == 6 and ref[-1] == EOS for ref in references)


def _flickr_error(tmp_path: Path, text: str | None, name: str = "captions.txt", **kwargs):
    _image(tmp_path / "Images" / "a.jpg", 10)
    if text is not None:
        (tmp_path / name).write_text(text)
    return FlickrCaptionsDataModule(str(tmp_path), name, img_size=8, val_fraction=0.0, test_fraction=0.0, **kwargs)


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        (None, FileNotFoundError, r"No captions file at .*captions\.txt\. Put the Flickr8k layout .*Images/"),
        ("", ValueError, r"captions\.txt, line 1: the file is empty"),
        ("image,caption\n", ValueError, r"captions\.txt, line 1: a header and no captions"),
        ("image,caption\na.jpg,A dog .\na.jpg\n", ValueError, r"captions\.txt, line 3: no caption after 'a\.jpg'"),
        ("image,caption\na.jpg,A dog .\n\na.jpg,  \n", ValueError, r"captions\.txt, line 4: no caption after"),
        ("image,caption\na.jpg,A dog\n,A cat\n", ValueError, r"captions\.txt, line 3: no image file name"),
        (
            "image,caption\na.jpg,A dog .\na.jpg,A cat .\nghost.jpg,A ghost .\nb.jpg,x\n",
            FileNotFoundError,
            r"captions\.txt, line 4: image 'ghost\.jpg' not found in .*Images/ \(and 1 more",
        ),
    ],
)
def test_flickr_errors_name_the_file_and_line(tmp_path, text, error, match):
    dm = _flickr_error(tmp_path, text)
    with pytest.raises(error, match=match):
        dm.setup()


def test_flickr_errors_of_layout_and_token_file(tmp_path):
    dm = FlickrCaptionsDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"captions\.txt .*the images in .*nowhere/Images/"):
        _ = dm.vocab
    (tmp_path / "captions.txt").write_text("image,caption\na.jpg,A dog .\n")
    with pytest.raises(FileNotFoundError, match=r"No images folder at .*Images/\. Put the Flickr8k layout"):
        FlickrCaptionsDataModule(str(tmp_path)).prepare_data()
    dm = _flickr_error(tmp_path, "a.jpg#0\tA dog .\na.jpg#1 A cat .\n", "Flickr8k.token.txt")
    with pytest.raises(ValueError, match=r"Flickr8k\.token\.txt, line 2: no caption after 'a\.jpg#1 A cat \.'"):
        dm.setup()
    text = "a.jpg#0\tA dog .\nb.jpg.1#0\tA ghost .\n"
    with pytest.raises(FileNotFoundError, match=r"line 2: image 'b\.jpg\.1' not found.*skip_missing_images=True"):
        _flickr_error(tmp_path, text, "Flickr8k.token.txt").setup()
    dm = _flickr_error(tmp_path, text, "Flickr8k.token.txt", skip_missing_images=True)
    dm.setup()
    assert _paths(dm, "train") == ["a.jpg"] and "ghost" not in dm.vocab


# --- COCO -------------------------------------------------------------------------------------------------------------
def _coco(root: Path, count: int = 8) -> dict:
    images = [{"id": 100 + i, "file_name": f"0000{i}.jpg", "height": 14, "width": 20} for i in range(count + 1)]
    annotations = []
    for i in range(count):  # the last image has no caption and is left out
        _image(root / "train2017" / f"0000{i}.jpg", 25 * i)
        for n in range(2 + i % 2):
            annotations.append({"image_id": 100 + i, "id": 10 * i + n, "caption": f"Caption {n} of image word{i}."})
    data = {"info": {}, "images": images, "annotations": annotations}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "captions_train2017.json").write_text(json.dumps(data))
    return data


def test_coco_captions_split_by_image(tmp_path):
    _coco(tmp_path)
    dm = COCOCaptionsDataModule(str(tmp_path), img_size=10, val_fraction=0.25, test_fraction=0.25, batch_size=3)
    dm.setup()
    splits = {split: _paths(dm, split) for split in ("train", "val", "test")}
    assert [len(images) for images in splits.values()] == [4, 2, 2]
    assert len(set().union(*splits.values())) == 8 and "00008.jpg" not in set().union(*splits.values())
    counts = {f"0000{i}.jpg": 2 + i % 2 for i in range(8)}
    assert len(dm.datasets["train"]) == sum(counts[name] for name in splits["train"])
    for index, name in enumerate(splits["val"]):
        _, caption, references = dm.datasets["val"][index]
        assert len(references) == counts[name]
        assert decode_caption(caption, dm.vocab) == "caption 0 of image <unk>"  # word<i> only in its own image
    train_words = {f"word{int(name[4])}" for name in splits["train"]}
    assert {word for word in dm.vocab if word.startswith("word")} == train_words
    batch = next(iter(dm.train_dataloader()))
    assert batch.images.shape == (3, 3, 10, 10) and batch.references.shape[1] in (2, 3)


def test_coco_errors_name_the_file_and_entry(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"No captions file at .*captions_train2017\.json\. Put the COCO layout .*train2017/"
    ):
        COCOCaptionsDataModule(str(tmp_path)).setup()
    data = _coco(tmp_path)
    path = tmp_path / "annotations" / "captions_train2017.json"
    with pytest.raises(FileNotFoundError, match=r"No images folder at .*val2017/"):
        COCOCaptionsDataModule(str(tmp_path), images_dir="val2017").setup()

    def fails(content, error, match):
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(error, match=match):
            COCOCaptionsDataModule(str(tmp_path), val_fraction=0.2, test_fraction=0.2).setup()

    fails('{"images": [', ValueError, r"captions_train2017\.json is not valid JSON \(line 1, column 13")
    fails({"images": []}, ValueError, r"captions_train2017\.json has no list 'annotations'")
    fails({**data, "images": [{"id": 1}]}, ValueError, r"images\[0\] needs an 'id' and a 'file_name'")
    unknown = {**data, "annotations": [*data["annotations"][:2], {"image_id": 99, "id": 7, "caption": "x"}]}
    fails(unknown, ValueError, r"captions_train2017\.json: annotations\[2\] \(id 7\) names image_id 99, which no")
    missing = {**data, "images": [*data["images"], {"id": 5, "file_name": "gone.jpg"}]}
    missing["annotations"] = [*data["annotations"], {"image_id": 5, "id": 1, "caption": "A gone cat"}]
    count = len(data["annotations"])
    fails(missing, FileNotFoundError, rf"annotations\[{count}\] \(image_id 5\): image 'gone\.jpg' not found")
    fails({**data, "annotations": []}, ValueError, "has no annotations")


# --- the embedded digit scenes ----------------------------------------------------------------------------------------
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")  # written out, not imported
NUMBER = {word: value for value, word in enumerate(WORDS)}
PLACES = {"top left": 0, "top right": 1, "bottom left": 2, "bottom right": 3}
RELATION = "above and left of|above and right of|below and left of|below and right of|left of|right of|above|below"
COUNTS = {"one digit": 1, "two digits": 2, "three digits": 3, "four digits": 4}


def holds(relation: str, a: int, b: int) -> bool:
    """Whether cell ``a`` is in ``relation`` to cell ``b`` (cells by row and column of the 2x2 grid)."""
    (row_a, col_a), (row_b, col_b) = divmod(a, 2), divmod(b, 2)
    vertical = {"above": row_a < row_b, "below": row_a > row_b, None: row_a == row_b}
    horizontal = {"left": col_a < col_b, "right": col_a > col_b, None: col_a == col_b}
    words = relation.replace(" of", "").split(" and ")
    up = next((w for w in words if w in ("above", "below")), None)
    side = next((w for w in words if w in ("left", "right")), None)
    return vertical[up] and horizontal[side]


def caption_is_true(caption: str, digits: tuple[int, ...], cells: tuple[int, ...]) -> bool:
    """Parse ``caption`` (its tokens) and check it against the scene; an unparsed caption is a failure."""
    text = " ".join(tokenize(caption))
    named: list[int] = []

    def noun(match: re.Match) -> str:
        article, word = match.groups()
        assert (article == "an") == (word == "eight"), f"article of {word!r} in {caption!r}"
        named.append(NUMBER[word])
        return "X"

    skeleton = re.sub(r"\b(a|an) (" + "|".join(NUMBER) + r")\b", noun, text)
    scene = sorted(zip(cells, digits, strict=True))
    reading = [digit for _, digit in scene]
    place = {cell: digit for cell, digit in scene}

    def somewhere(pairs: list[tuple[int, int, str]]) -> bool:  # (digit, digit, relation) for some distinct digits
        return all(
            any(place[a] == x and place[b] == y and holds(rel, a, b) for a in place for b in place if a != b)
            for x, y, rel in pairs
        )

    listing = r"X(?: X)* and X"
    if re.fullmatch(listing, skeleton):
        return named == reading
    if match := re.fullmatch(rf"({'|'.join(COUNTS)}) ({listing}|X)", skeleton):
        return COUNTS[match[1]] == len(reading) and named == reading
    if match := re.fullmatch(rf"({listing}) with the ({'|'.join(PLACES)}) empty", skeleton):
        return named == reading and PLACES[match[2]] not in place
    if match := re.fullmatch(rf"X ({RELATION}) X", skeleton):
        return somewhere([(named[0], named[1], match[1])])
    if match := re.fullmatch(rf"X ({RELATION}) X and X ({RELATION}) X", skeleton):
        return somewhere([(named[0], named[1], match[1]), (named[2], named[3], match[2])])
    if match := re.fullmatch(r"X(?: and X)? in the (?:(top|bottom) row|(left|right) column)", skeleton):
        if match[1]:
            on_line = [cell for cell in place if cell // 2 == ("top", "bottom").index(match[1])]
        else:
            on_line = [cell for cell in place if cell % 2 == ("left", "right").index(match[2])]
        return sorted(named) == sorted(place[cell] for cell in on_line)
    if match := re.fullmatch(rf"X in the ({'|'.join(PLACES)})(?: and X in the ({'|'.join(PLACES)}))?", skeleton):
        wanted = [PLACES[match[1]]] + ([PLACES[match[2]]] if match[2] else [])
        return all(place.get(cell) == digit for cell, digit in zip(wanted, named, strict=True))
    raise AssertionError(f"caption not understood: {caption!r} (skeleton {skeleton!r})")


def test_scene_captions_are_true_varied_and_fixed_by_the_layout():
    from itertools import combinations

    for k in range(1, 5):
        skeletons = set()
        for cells in combinations(range(4), k):
            phrasings = set()
            for digits in [(7, 2, 8, 0)[:k], (8, 8, 1, 1)[:k], (3, 0, 9, 5)[:k]]:
                captions = scene_captions(digits, cells)
                assert len(set(captions)) >= 3
                assert all(caption_is_true(caption, digits, cells) for caption in captions), captions
                assert all(len(tokenize(caption)) <= 14 for caption in captions)
                phrasings.add(tuple(re.sub(r"\b(a|an) \w+", "X", caption) for caption in captions))
            assert len(phrasings) == 1  # the layout alone picks the phrasings
            skeletons |= phrasings
        assert len(skeletons) == len(list(combinations(range(4), k)))  # and tells the layouts apart
    # the cells' order in the call does not matter: reading order is derived
    assert scene_captions([2, 7], [1, 0]) == scene_captions([7, 2], [0, 1])
    # the parser is no rubber stamp: a wrong place, order, count, line or empty cell is false
    for caption in [
        "a two left of a seven",
        "a seven above a two",
        "a seven above and left of a two",
        "a two and a seven in the bottom row",
        "a seven in the top right and a two in the top left",
        "three digits : a seven and a two",
        "a two and a seven",
        "a seven and a two with the top right empty",
    ]:
        assert not caption_is_true(caption, (7, 2), (0, 1)), caption
    assert not caption_is_true("a one left of a two and a five below a one", (1, 2, 5), (0, 1, 3))
    assert caption_is_true("a one left of a two and a five below a two", (1, 2, 5), (0, 1, 3))
    with pytest.raises(AssertionError, match="article"):
        caption_is_true("a eight above a two", (8, 2), (0, 2))
    with pytest.raises(ValueError, match="distinct cells"):
        scene_captions([1, 2], [3, 3])


@pytest.fixture(scope="module")
def scenes():
    pytest.importorskip("sklearn")
    dm = DigitScenesCaptionsDataModule(num_train=400, num_val=50, num_test=100, batch_size=16, seed=3)
    dm.setup("fit")
    return dm


def test_digit_scenes_are_deterministic_per_seed(scenes):
    again = DigitScenesCaptionsDataModule(num_train=400, num_val=50, num_test=100, seed=3)
    other = DigitScenesCaptionsDataModule(num_train=400, num_val=50, num_test=100, seed=4)
    again.setup()
    other.setup()
    for split in ("train", "val", "test"):
        assert again.scenes[split] == scenes.scenes[split]
        assert torch.equal(again.datasets[split].images, scenes.datasets[split].images)
    assert other.scenes["train"] != scenes.scenes["train"]
    assert (again.vocab, again.mean, again.std) == (scenes.vocab, scenes.mean, scenes.std)


def test_digit_scenes_hold_their_digits_and_every_caption_is_true(scenes):
    from sklearn.datasets import load_digits

    labels = load_digits().target
    for split in ("train", "val", "test"):
        images = scenes.datasets[split].images
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 32, 32)
        for index, scene in enumerate(scenes.scenes[split]):
            assert 2 <= len(scene.digits) <= 4 and len(set(scene.cells)) == len(scene.cells)
            assert [int(labels[source]) for source in scene.sources] == list(scene.digits)
            for cell in range(4):
                row, col = divmod(cell, 2)
                ink = images[index, 0, 16 * row : 16 * row + 16, 16 * col : 16 * col + 16].float().sum()
                assert (ink > 255 * 5) if cell in scene.cells else (ink == 0), (split, index, cell)
            captions = scene_captions(scene.digits, scene.cells)
            assert len(set(captions)) >= 3
            assert all(caption_is_true(caption, scene.digits, scene.cells) for caption in captions)
            encoded = [decode_caption(ref, scenes.vocab) for ref in scenes.datasets[split].captions[index]]
            assert encoded == [" ".join(tokenize(caption)) for caption in captions]


def test_digit_scenes_use_disjoint_handwriting_and_need_the_image(scenes):
    sources = {split: {s for scene in scenes.scenes[split] for s in scene.sources} for split in scenes.scenes}
    assert not (
        sources["train"] & sources["val"] or sources["train"] & sources["test"] or sources["val"] & sources["test"]
    )
    train = scenes.scenes["train"]
    firsts = Counter(scene_captions(scene.digits, scene.cells)[0] for scene in train)
    assert firsts.most_common(1)[0][1] <= 0.02 * len(train)  # no caption a blind model could bet on
    digits = Counter(digit for scene in train for digit in scene.digits)
    assert all(0.06 < digits[d] / sum(digits.values()) < 0.14 for d in range(10))
    cells = Counter(cell for scene in train for cell in scene.cells)
    assert all(0.2 < cells[c] / sum(cells.values()) < 0.3 for c in range(4))
    assert Counter(len(scene.digits) for scene in train).keys() == {2, 3, 4}


def test_digit_scenes_batches_and_linked_attributes(scenes):
    dm = DigitScenesCaptionsDataModule(num_train=30, num_val=5, num_test=5, max_length=6, canvas=24, seed=0)
    # read at construction time by LightningCLI's links, before setup
    assert (dm.in_channels, dm.img_size, dm.max_length) == (1, (24, 24), 6)
    assert 20 <= dm.vocab_size - len(SPECIALS) <= 40 and dm.vocab[: len(SPECIALS)] == list(SPECIALS)
    assert 0 < dm.mean[0] < 1 and 0 < dm.std[0] < 1
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4 * 30 and len(dm.datasets["val"]) == 5
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, CaptionBatch)
    assert batch.images.shape == (32, 1, 24, 24)
    assert batch.images.dtype == torch.float32 and batch.captions.dtype == batch.references.dtype == torch.long
    assert batch.captions.shape[1] <= 7 and batch.references.shape[1:] == (4, 7)  # 6 words at most, then EOS
    assert (batch.captions == BOS).sum() == 0 and ((batch.captions == EOS).sum(dim=1) == 1).all()
    val = next(iter(dm.val_dataloader()))
    assert val.images.shape[0] == 5 and torch.equal(val.captions, val.references[:, 0, : val.captions.shape[1]])
    train = scenes.datasets["train"]
    images = torch.stack([train[index][0] for index in range(0, len(train), 4)])  # each image once (4 captions each)
    assert abs(float(images.mean())) < 0.05 and abs(float(images.std()) - 1) < 0.05  # normalized by its own stats


def _primitive(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(key, str) and _primitive(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_primitive(item) for item in value)
    return value is None or type(value) in (str, int, float, bool)


def test_preprocessing_is_primitives_only(scenes, tmp_path):
    _flickr(tmp_path, count=4)
    for dm in (scenes, FlickrCaptionsDataModule(str(tmp_path), img_size=8, val_fraction=0.25, test_fraction=0.25)):
        pre = dm.preprocessing
        assert _primitive(pre), pre
        assert pre["input"] == "image" and pre["classes"] is None
        assert pre["vocab"] == dm.vocab and pre["max_length"] == dm.max_length
        assert pre["img_size"] == list(dm.img_size) and len(pre["mean"]) == len(pre["std"]) == dm.in_channels
        assert dm.state_dict()["preprocessing"] == pre
        assert json.loads(json.dumps(pre)) == pre


def test_bad_arguments_are_errors_at_construction():
    with pytest.raises(ValueError, match="min_digits <= max_digits"):
        DigitScenesCaptionsDataModule(min_digits=3, max_digits=2)
    with pytest.raises(ValueError, match="canvas must be at least 16"):
        DigitScenesCaptionsDataModule(canvas=12)
    with pytest.raises(ValueError, match="min_count"):
        DigitScenesCaptionsDataModule(min_count=0)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction < 1"):
        FlickrCaptionsDataModule(val_fraction=0.5, test_fraction=0.5)
