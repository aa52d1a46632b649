"""Print text sampled from a language-model checkpoint; the vocabulary is in the checkpoint, so no data is read.

python -m recipes.sample --ckpt_path logs/shakespeare_char_gpt/version_0/checkpoints/last.ckpt --prompt "ROMEO:"
python -m recipes.sample --ckpt_path last.ckpt --prompt "\n" --max_new_tokens 500 --temperature 0.8 --top_k 10
python -m recipes.sample --ckpt_path logs/seq2seq_reverse/version_0/checkpoints/last.ckpt --prompt 123456  # answer
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

import zoo
from zoo.tasks import LanguageModel, Seq2SeqTask


def load_model(ckpt_path: str) -> LanguageModel | Seq2SeqTask:
    """The zoo model a checkpoint was written by, rebuilt from its saved hyperparameters (``weights_only``)."""
    model = zoo.load_from_checkpoint(ckpt_path)
    if not isinstance(model, (LanguageModel, Seq2SeqTask)):
        raise ValueError(f"{ckpt_path} holds a {type(model).__name__}: neither generates text nor answers a source")
    return model


def main(args: Sequence[str] | None = None) -> str:
    """Parse ``args`` (``None``: ``sys.argv``), print the generated text and return it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of a zoo language model or seq2seq model")
    parser.add_argument("--prompt", default="\n", help="the text to continue (a language model) or to answer")
    parser.add_argument("--max_new_tokens", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: always the most likely character")
    parser.add_argument("--top_k", type=int, default=None, help="sample among the k most likely characters")
    parser.add_argument("--beam_size", type=int, default=0, help="seq2seq: beam search with this many beams")
    parser.add_argument("--seed", type=int, default=0)
    options = parser.parse_args(args)
    prompt = options.prompt.encode().decode("unicode_escape") if "\\" in options.prompt else options.prompt
    model = load_model(options.ckpt_path)
    try:
        if isinstance(model, LanguageModel):
            generator = torch.Generator().manual_seed(options.seed)
            text = model.generate(prompt, options.max_new_tokens, options.temperature, options.top_k, generator)
        else:
            method = "beam" if options.beam_size > 1 else "greedy"
            text = model.generate(prompt, method=method, beam_size=options.beam_size or None)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
