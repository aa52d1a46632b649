"""Language-modelling task base: next-token cross-entropy, perplexity and bits per character, and sampling.

Batches are ``(x, y)``: token ids ``(B, T)`` and the next tokens ``(B, T)``, with ``-100`` at padded targets (never
counted). The vocabulary is a string of characters stored as a hyperparameter (``vocab``), so a checkpoint encodes
prompts and decodes samples with no data present. Runs are long in steps and short in epochs, so warmup is given in
steps (the base's ``warmup_steps``) and the schedule decays over the run's optimizer steps (``max_steps``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection

from zoo.tasks.base import Split, StepOutput, TaskModule

IGNORE_INDEX = -100


def sample_tokens(
    next_logits: Callable[[torch.Tensor], torch.Tensor],
    ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``ids`` ``(B, T)`` followed by ``max_new_tokens`` tokens sampled from ``next_logits(ids) -> (B, V)``: the
    sampling loop of every language model, whatever computes the logits (a cached model, an exported graph).

    Args:
        next_logits: the logits of the token after the ids so far.
        ids: the prompt's token ids.
        max_new_tokens: tokens to add.
        temperature: divides the logits; ``0`` picks the most likely token (greedy).
        top_k: sample among the ``top_k`` most likely tokens only.
        generator: random source of the sampling (on the CPU).
    """
    if max_new_tokens < 0 or temperature < 0 or (top_k is not None and top_k < 1):
        raise ValueError("need max_new_tokens >= 0, temperature >= 0 and top_k >= 1 (or None)")
    for _ in range(max_new_tokens):
        logits = next_logits(ids)
        if temperature == 0:
            token = logits.argmax(-1, keepdim=True)
        else:
            logits = logits.float() / temperature
            if top_k is not None and top_k < logits.shape[-1]:
                kth = logits.topk(top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            token = torch.multinomial(logits.softmax(-1).cpu(), 1, generator=generator).to(ids.device)
        ids = torch.cat([ids, token], dim=1)
    return ids


class LanguageModel(TaskModule):
    """Task base for autoregressive models that map token ids ``(B, T)`` to next-token logits ``(B, T, V)``.

    Logs ``train/loss_step`` on logging steps and per epoch ``{train,val,test}/loss``, ``/ppl`` (``exp(loss)``) and
    ``/bpc`` (``loss / ln 2``: bits per character for character vocabularies). Subclasses build
    the network, implement ``forward(x)`` and may override :meth:`next_token_logits` for cached decoding.

    Args:
        vocab: the characters of the vocabulary, in id order (``""``: anonymous ids, give ``vocab_size``).
        vocab_size: number of token ids; taken from ``vocab`` when that is given.
        block_size: the longest context the model reads.
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    monitor = ("val/loss", "min")
    data_links: ClassVar[tuple[str, ...]] = ("vocab", "vocab_size", "block_size")
    overfit_lr = 3e-3
    generates_text = True

    def __init__(
        self,
        vocab: str = "",
        vocab_size: int = 0,
        block_size: int = 64,
        **optim_args: Any,
    ) -> None:
        if vocab:
            if len(set(vocab)) != len(vocab):
                raise ValueError("vocab must list each character once")
            if vocab_size not in (0, len(vocab)):
                raise ValueError(f"vocab has {len(vocab)} characters but vocab_size={vocab_size}")
            vocab_size = len(vocab)
        if vocab_size < 1 or block_size < 1:
            raise ValueError(
                f"need vocab (or vocab_size >= 1) and block_size >= 1, got vocab_size={vocab_size}, "
                f"block_size={block_size}"
            )
        super().__init__(**optim_args)
        self.hparams["vocab_size"] = vocab_size
        self.vocab, self.vocab_size, self.block_size = vocab, vocab_size, block_size
        self._char_to_id = {char: index for index, char in enumerate(vocab)}
        self.example_input_array = torch.zeros(2, min(block_size, 16), dtype=torch.long)

    # --- inputs ------------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming what is expected for ids that are not ``(B, T)`` long or too long."""
        name = type(self).__name__
        if x.ndim != 2 or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise ValueError(
                f"{name} expects token ids of shape (B, T) and dtype torch.long, got {x.dtype} {tuple(x.shape)}"
            )
        if x.shape[1] == 0 or x.shape[1] > self.block_size:
            raise ValueError(f"{name} reads 1 to block_size={self.block_size} tokens, got T={x.shape[1]}")

    def encode(self, text: str) -> torch.Tensor:
        """Token ids ``(len(text),)`` of ``text``; characters outside the vocabulary are a ValueError listing them."""
        if not self.vocab:
            raise ValueError(f"{type(self).__name__} has no vocab (built with vocab_size only): give token ids")
        return self.text_to_ids(text, {"vocab": self.vocab})

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The text of token ids."""
        return self.ids_to_text(ids, {"vocab": self.vocab})

    @classmethod
    def text_to_ids(cls, text: str, preprocessing: Mapping[str, Any]) -> torch.Tensor:
        """Token ids ``(T,)`` of ``text`` in the vocabulary ``preprocessing["vocab"]``; a ValueError lists the
        characters outside it."""
        vocab = preprocessing.get("vocab") or ""
        if not text:
            raise ValueError("the text is empty: give at least one character, e.g. '\\n'")
        unknown = sorted(set(text) - set(vocab))
        if unknown:
            raise ValueError(f"characters {unknown} are not in the model's vocabulary of {len(vocab)}: {vocab!r}")
        lookup = {char: index for index, char in enumerate(vocab)}
        return torch.tensor([lookup[char] for char in text], dtype=torch.long)

    @classmethod
    def ids_to_text(cls, ids: torch.Tensor | list[int], preprocessing: Mapping[str, Any]) -> str:
        """The text of token ids in the vocabulary ``preprocessing["vocab"]``."""
        vocab = preprocessing["vocab"]
        return "".join(vocab[index] for index in torch.as_tensor(ids).tolist())

    def preprocessing(self) -> dict[str, Any]:
        if self.vocab:
            return {"input": "text", "vocab": self.vocab, "block_size": self.block_size}
        return {"input": "tokens", "vocab_size": self.vocab_size, "block_size": self.block_size}

    def predict_tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Next-token logits ``(B, T, V)`` (``logits``)."""
        return {"logits": self(x)}

    @classmethod
    def answers(
        cls, outputs: Mapping[str, torch.Tensor], preprocessing: Mapping[str, Any], top_k: int = 5
    ) -> list[dict[str, Any]]:
        """The ``top_k`` most likely tokens after each sequence (``next``: id, token, probability)."""
        probabilities = outputs["logits"][:, -1].float().softmax(-1)
        values, indices = probabilities.topk(max(1, min(top_k, probabilities.shape[-1])), dim=-1)
        vocab = preprocessing.get("vocab")
        answers = []
        for ids, probs in zip(indices.tolist(), values.tolist(), strict=True):
            tokens = [vocab[i] if vocab else None for i in ids]
            answers.append(
                {"next": [{"id": i, "token": t, "probability": p} for i, t, p in zip(ids, tokens, probs, strict=True)]}
            )
        return answers

    # --- the loop's parts ----------------------------------------------------------------------------------------
    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """Mean cross-entropy over the counted targets, and their number."""
        x, y = batch[0], batch[1]
        logits = self(x)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX)
        return StepOutput(loss, (y != IGNORE_INDEX).sum())

    def epoch_values(self, split: Split, loss: MeanMetric, metrics: MetricCollection | None) -> dict[str, Any]:
        """The loss, perplexity and bits per character."""
        value = loss.compute()
        return {f"{split}/loss": loss, f"{split}/ppl": value.exp(), f"{split}/bpc": value / math.log(2)}

    def predict_batch(self, batch: Any) -> torch.Tensor:
        """Next-token probabilities ``(B, T, V)``."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(-1)

    # --- the registry test's hooks -------------------------------------------------------------------------
    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Sequences ``x[t + 1] = x[t] + s`` (mod V) whose first token names the stride ``s`` (1 or 2), so every
        target follows from the context; the last steps of some sequences are padding (target ``-100``)."""
        steps, vocab = min(self.block_size, 16), self.vocab_size
        first = torch.arange(batch_size) % vocab
        stride = 1 + first % 2
        ids = (first.unsqueeze(1) + stride.unsqueeze(1) * torch.arange(steps + 1)) % vocab  # (B, T + 1)
        x, y = ids[:, :-1].clone(), ids[:, 1:].clone()
        lengths = torch.randint(steps // 2, steps + 1, (batch_size,), generator=generator)
        lengths[0] = steps
        y[torch.arange(steps) >= lengths.unsqueeze(1)] = IGNORE_INDEX
        return x, y

    # --- sampling ------------------------------------------------------------------------------------------
    def next_token_logits(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Logits ``(B, V)`` of the token after ``ids`` ``(B, T)``, and a state for the next call. This default
        re-reads the last ``block_size`` tokens each time; models with a cache override it (``state`` is theirs)."""
        return self(ids[:, -self.block_size :])[:, -1], None

    @torch.no_grad()
    def generate(
        self,
        prompt: str | torch.Tensor,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> str | torch.Tensor:
        """Sample a continuation of ``prompt``: text gives the prompt and the sample as text, ids ``(B, T)`` give ids
        ``(B, T + max_new_tokens)``.

        Args:
            prompt: the start, as text (encoded with the stored vocabulary) or token ids.
            max_new_tokens: tokens to add.
            temperature: divides the logits; ``0`` picks the most likely token (greedy).
            top_k: sample among the ``top_k`` most likely tokens only.
            generator: random source of the sampling.
        """
        if max_new_tokens < 0 or temperature < 0 or (top_k is not None and top_k < 1):
            raise ValueError("need max_new_tokens >= 0, temperature >= 0 and top_k >= 1 (or None)")
        text = isinstance(prompt, str)
        if text:
            if not prompt:
                raise ValueError("the prompt is empty: give at least one character, e.g. '\\n'")
            prompt = self.encode(prompt).unsqueeze(0)
        ids = prompt.to(self.device)
        self.check_input(ids[:, -self.block_size :])
        was_training = self.training
        self.eval()
        cache: list[Any] = [None]

        def next_logits(ids: torch.Tensor) -> torch.Tensor:
            logits, cache[0] = self.next_token_logits(ids, cache[0])
            return logits

        ids = sample_tokens(next_logits, ids, max_new_tokens, temperature, top_k, generator)
        self.train(was_training)
        return self.decode(ids[0]) if text else ids
