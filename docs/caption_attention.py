"""Draw where a trained captioner looks for each word of its captions of test scenes (the pictures of
``docs/captioning.md``).

    python docs/caption_attention.py CHECKPOINT [--count 3] [--out docs/captioning]

The scenes are the embedded digit scenes' test split, rebuilt with the data arguments saved in the checkpoint; each
picture is the scene, then the scene under the attention of each generated word (the last one: ``<eos>``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import zoo
from callbacks import draw_caption_attention
from datamodules import DigitScenesCaptionsDataModule


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--count", type=int, default=3, help="scenes drawn")
    parser.add_argument("--name", default=None, help="file name prefix (default: the checkpoint's run folder)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "captioning")
    args = parser.parse_args(argv)
    model = zoo.load_from_checkpoint(args.checkpoint).eval()
    saved = zoo.read_checkpoint(args.checkpoint).get("datamodule_hyper_parameters", {})
    data = DigitScenesCaptionsDataModule(**{key: value for key, value in saved.items() if not key.startswith("_")})
    if data.vocab != list(model.vocab):
        raise ValueError(f"{args.checkpoint} was not trained on these digit scenes (another vocabulary)")
    data.setup("test")
    images = next(iter(data.test_dataloader())).images[: args.count]
    ids, maps = model.attention_maps(images)
    pixels = images * torch.tensor(data.std).view(1, -1, 1, 1) + torch.tensor(data.mean).view(1, -1, 1, 1)
    name = args.name or args.checkpoint.parent.parent.parent.name
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(len(images)):
        words = [*model.decode_ids(ids[index]).split(), "<eos>"][: maps.shape[1]]
        figure = draw_caption_attention(pixels[index], words, maps[index, : len(words)], title="test scene")
        path = args.out / f"{name}_{index}.png"
        figure.savefig(path, dpi=100)
        written.append(path)
        print(f"{path}: {' '.join(words[:-1])}")
    return written


if __name__ == "__main__":
    main()
