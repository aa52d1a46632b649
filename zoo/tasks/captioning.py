"""Image-captioning task base: teacher-forced training; greedy, sampled and beam-search captions decoded step by step
with the decoder's cache; BLEU-1 to BLEU-4 against every reference of an image, and exact match.

Batches are ``(images, captions, references)`` (``datamodules.captions.CaptionBatch``): normalized images
``(B, C, H, W)``; one caption per image ``(B, T)``, its word ids followed by ``EOS`` then ``PAD``; and all captions of
each image ``(B, R, T')`` (rows of ``PAD`` where an image has fewer). ``vocab`` lists the words by id, ``<pad>``,
``<bos>``, ``<eos>`` and ``<unk>`` first (ids 0-3), and is stored as a hyperparameter, so a checkpoint writes text
alone. The decoder reads ``[BOS, caption[:-1]]`` and predicts ``caption``.

A subclass builds the network and implements four methods:

- ``encode(images) -> memory``: a tuple of batch-first tensors, the image tokens ``(B, N, D)`` first;
- ``decoder_state(memory) -> state``: the state before the first word (an LSTM's states, empty KV caches);
- ``decode_step(memory, token, state) -> (logits (B, V), state, attention (B, N))``: one word, reusing the state;
- ``decode(memory, tgt_in) -> logits (B, T, V)``: every position at once (teacher forcing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.text import BLEUScore

from zoo.layers.attention import KVCache
from zoo.tasks.base import Split, StepOutput, TaskModule
from zoo.tasks.seq2seq import BOS, EOS, PAD, shift_right, writable

UNK = 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
#: The words of a model built without data (the presets): the embedded digit scenes' digit words.
DEFAULT_VOCAB = (*SPECIALS, "a", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DecodeName = Literal["greedy", "beam", "sample"]
Memory = tuple[torch.Tensor, ...]


def reorder(state: Any, index: torch.Tensor) -> Any:
    """``state`` with its batch rows taken at ``index``: tensors, KV caches, and tuples, lists or dicts of them."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index)
    if isinstance(state, KVCache):
        if state.k is None:
            return KVCache()
        return KVCache(state.k.index_select(0, index), state.v.index_select(0, index))
    if isinstance(state, Mapping):
        return {key: reorder(value, index) for key, value in state.items()}
    return type(state)(reorder(part, index) for part in state)


def length_penalty(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """GNMT's length normalization ``((5 + length) / 6) ** alpha`` (Wu et al., 2016): 1 when ``alpha`` is 0."""
    return ((5.0 + lengths.float()) / 6.0) ** alpha


class CaptioningTask(TaskModule):
    """Task base for image-to-text models over a word vocabulary.

    Logs ``{train,val,test}/loss`` (cross-entropy per caption word, ``EOS`` included) and per epoch
    ``{val,test}/bleu1`` to ``/bleu4`` (torchmetrics' corpus BLEU of the decoded captions against all references of
    each image) and ``/exact_match`` (the caption equals one of its references).

    Args:
        vocab: the words by id, ``<pad> <bos> <eos> <unk>`` first (linked from the datamodule).
        max_length: the longest caption in words; captions are decoded up to ``max_length + 1`` tokens.
        in_channels: image channels (linked).
        img_size: image height and width (linked).
        label_smoothing: label smoothing of the cross-entropy.
        decoding: how validation and test decode: ``"greedy"``, ``"beam"`` or ``"sample"``.
        beam_size: beams of beam search.
        length_alpha: beam search's length normalization exponent (0: raw log-likelihood, which favours short
            captions; 0.6-1.0 is usual).
        temperature: softmax temperature of ``"sample"``.
        image_blind: train and caption from a blank image: the baseline that shows how much the image matters.
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    monitor = ("val/bleu4", "max")
    data_links: ClassVar[tuple[str, ...]] = ("vocab", "max_length", "in_channels", "img_size")
    overfit_lr = 3e-3

    def __init__(
        self,
        vocab: Sequence[str] = DEFAULT_VOCAB,
        max_length: int = 16,
        in_channels: int = 1,
        img_size: int | Sequence[int] = 32,
        label_smoothing: float = 0.0,
        decoding: DecodeName = "greedy",
        beam_size: int = 3,
        length_alpha: float = 0.0,
        temperature: float = 1.0,
        image_blind: bool = False,
        **optim_args: Any,
    ) -> None:
        vocab = [str(word) for word in vocab]
        if tuple(vocab[: len(SPECIALS)]) != SPECIALS or len(set(vocab)) != len(vocab) or len(vocab) <= len(SPECIALS):
            raise ValueError(f"vocab must start with {list(SPECIALS)} and list more words, each once; got {vocab[:8]}")
        known = decoding in ("greedy", "beam", "sample")
        if max_length < 1 or beam_size < 1 or not 0 <= label_smoothing < 1 or not known:
            raise ValueError(
                "need max_length >= 1, beam_size >= 1, label_smoothing in [0, 1) and decoding 'greedy', 'beam' or "
                f"'sample', got {max_length}, {beam_size}, {label_smoothing}, {decoding!r}"
            )
        if not (0 < temperature < math.inf and 0 <= length_alpha < math.inf and in_channels >= 1):
            raise ValueError(
                f"need temperature > 0, length_alpha >= 0 (finite) and in_channels >= 1, got {temperature}, "
                f"{length_alpha}, {in_channels}"
            )
        super().__init__(**optim_args)
        self.vocab, self.max_length, self.vocab_size = vocab, max_length, len(vocab)
        self.in_channels = in_channels
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
        self.example_input_array = torch.zeros(2, in_channels, *self.img_size)

    # --- text ------------------------------------------------------------------------------------------------------
    def decode_ids(self, ids: torch.Tensor | Sequence[int]) -> str:
        """The words of ids up to the first ``EOS`` (``PAD`` and ``BOS`` skipped)."""
        return self.ids_to_text(ids, {"vocab": self.vocab})

    @staticmethod
    def ids_to_text(ids: torch.Tensor | Sequence[int], preprocessing: Mapping[str, Any]) -> str:
        """The words of ids up to the first ``EOS`` in the vocabulary ``preprocessing["vocab"]``."""
        vocab, words = preprocessing["vocab"], []
        for index in torch.as_tensor(ids).tolist():
            if index == EOS:
                break
            if index not in (PAD, BOS):
                words.append(vocab[index])
        return " ".join(words)

    # --- the network's contract ----------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> Memory:
        """What the decoder reads: a tuple of batch-first tensors, the image tokens ``(B, N, D)`` first."""
        raise NotImplementedError

    def decoder_state(self, memory: Memory) -> Any:
        """The decoder's state before the first word."""
        raise NotImplementedError

    def decode_step(
        self, memory: Memory, token: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
        """Logits ``(B, V)`` of the word after ``token`` ``(B,)``, the new state, and the attention ``(B, N)`` over
        the image tokens that chose it (``None`` when the decoder has none)."""
        raise NotImplementedError

    def decode(self, memory: Memory, tgt_in: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, V)`` of the word after each prefix of ``tgt_in`` ``(B, T)``."""
        raise NotImplementedError

    @property
    def grid_size(self) -> tuple[int, int]:
        """The image tokens' ``(rows, columns)`` (attention maps are shown on it)."""
        raise NotImplementedError

    def check_input(self, images: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape when ``images`` do not fit the network."""
        expected = (self.in_channels, *self.img_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected or not images.is_floating_point():
            raise ValueError(
                f"{type(self).__name__} expects images of shape (B, {', '.join(map(str, expected))}) and a float "
                f"dtype, got {images.dtype} {tuple(images.shape)}"
            )

    def encode_images(self, images: torch.Tensor) -> Memory:
        """:meth:`encode` after the input check; a blank image for an ``image_blind`` model."""
        self.check_input(images)
        return self.encode(torch.zeros_like(images) if self.hparams.image_blind else images)

    def forward(self, images: torch.Tensor, tgt_in: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits ``(B, T, V)`` for decoder inputs ``tgt_in``; without them, the logits of the
        greedy caption (``max_length + 1`` steps)."""
        memory = self.encode_images(images)
        if tgt_in is None:
            return self._greedy(memory, images.shape[0], self.max_length + 1, stop_early=False)[2]
        return self.decode(memory, tgt_in)

    # --- decoding --------------------------------------------------------------------------------------------------
    def _greedy(
        self,
        memory: Memory,
        batch: int,
        max_new_tokens: int,
        stop_early: bool = True,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Ids ``(B, L)``, their log-likelihood ``(B,)``, the step logits ``(B, L, V)`` and each word's attention
        over the image tokens ``(B, L, N)`` (zero after a caption's ``EOS``; ``None`` for a decoder without); the
        most likely word at each step, or one drawn at ``temperature``."""
        device = memory[0].device
        state = self.decoder_state(memory)
        token = torch.full((batch,), BOS, dtype=torch.long, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        log_likelihood = torch.zeros(batch, device=device)
        ids, steps, maps = [], [], []
        for _ in range(max_new_tokens):
            logits, state, attention = self.decode_step(memory, token, state)
            steps.append(logits)
            if attention is not None:
                maps.append(attention.masked_fill(done.unsqueeze(1), 0.0))
            logp = writable(logits).log_softmax(-1)
            if temperature is None:
                token = logp.argmax(-1)
            else:
                token = torch.multinomial((logp / temperature).softmax(-1), 1, generator=generator).squeeze(1)
            log_likelihood += logp.gather(1, token.unsqueeze(1)).squeeze(1).masked_fill(done, 0.0)
            token = token.masked_fill(done, PAD)
            ids.append(token)
            done |= token == EOS
            if stop_early and bool(done.all()):  # a data-dependent branch: off for a graph of fixed length
                break
        attention = torch.stack(maps, dim=1) if maps else None
        return torch.stack(ids, dim=1), log_likelihood, torch.stack(steps, dim=1), attention

    def _beam(
        self, memory: Memory, batch: int, max_new_tokens: int, beam_size: int, alpha: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The best of ``beam_size`` beams by length-normalized log-likelihood: ids ``(B, L)`` and that score."""
        device = memory[0].device
        memory = reorder(memory, torch.arange(batch, device=device).repeat_interleave(beam_size))
        state = self.decoder_state(memory)
        token = torch.full((batch * beam_size,), BOS, dtype=torch.long, device=device)
        scores = torch.full((batch, beam_size), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live beam at the start, so the first step does not pick the same word K times
        done = torch.zeros(batch * beam_size, dtype=torch.bool, device=device)
        lengths = torch.zeros(batch * beam_size, dtype=torch.long, device=device)
        ids = torch.zeros(batch * beam_size, 0, dtype=torch.long, device=device)
        offsets = torch.arange(batch, device=device).unsqueeze(1) * beam_size
        for _ in range(max_new_tokens):
            logits, state, _ = self.decode_step(memory, token, state)
            logp = writable(logits).log_softmax(-1)  # (B*K, V)
            # A finished beam only extends with PAD, at no cost, so it keeps its score.
            finished = torch.full_like(logp, float("-inf"))
            finished[:, PAD] = 0.0
            logp = torch.where(done.unsqueeze(1), finished, logp)
            vocab = logp.shape[-1]
            total = (scores.unsqueeze(-1) + logp.view(batch, beam_size, vocab)).view(batch, -1)  # (B, K*V)
            scores, flat = total.topk(beam_size, dim=-1)
            origin = ((flat // vocab) + offsets).view(-1)
            token = (flat % vocab).view(-1)
            ids = torch.cat([ids[origin], token.unsqueeze(1)], dim=1)
            state = reorder(state, origin)
            lengths = lengths[origin] + (~done[origin]).long()
            done = done[origin] | (token == EOS)
            if bool(done.all()):
                break
        normalized = scores / length_penalty(lengths.view(batch, beam_size), alpha)
        best = normalized.argmax(-1)
        return ids[best + offsets.squeeze(1)], normalized.gather(1, best.unsqueeze(1)).squeeze(1)

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,
        method: DecodeName = "greedy",
        beam_size: int | None = None,
        length_alpha: float | None = None,
        temperature: float | None = None,
        max_new_tokens: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Caption ids ``(B, L)`` (``EOS`` then ``PAD`` after each caption).

        Args:
            images: normalized images ``(B, C, H, W)``.
            method: ``"greedy"``, ``"sample"`` (a word drawn at ``temperature`` each step) or ``"beam"``: the best of
                ``beam_size`` beams by log-likelihood over ``length_penalty`` (``length_alpha``), or greedy's caption
                when that scores higher (a beam can prune the greedy path), so beam search never scores below it.
            beam_size, length_alpha, temperature: override the hyperparameters of the same names.
            max_new_tokens: the longest caption, ``EOS`` included (default ``max_length + 1``).
            generator: the random generator of ``"sample"``.
        """
        hp = self.hparams
        was_training = self.training
        self.eval()
        memory = self.encode_images(images)
        limit = max_new_tokens or self.max_length + 1
        if method == "sample":
            temperature = temperature or hp.temperature
            ids = self._greedy(memory, images.shape[0], limit, temperature=temperature, generator=generator)[0]
        elif method in ("greedy", "beam"):
            ids, log_likelihood, _, _ = self._greedy(memory, images.shape[0], limit)
            if method == "beam":
                alpha = hp.length_alpha if length_alpha is None else length_alpha
                beams, score = self._beam(memory, images.shape[0], limit, beam_size or hp.beam_size, alpha)
                greedy_score = log_likelihood / length_penalty(((ids != PAD) & (ids != BOS)).sum(1), alpha)
                width = max(ids.shape[1], beams.shape[1])
                ids, beams = F.pad(ids, (0, width - ids.shape[1])), F.pad(beams, (0, width - beams.shape[1]))
                ids = torch.where((score >= greedy_score).unsqueeze(1), beams, ids)
        else:
            raise ValueError(f"Unknown decoding {method!r}; choose 'greedy', 'beam' or 'sample'.")
        self.train(was_training)
        return ids

    def caption(self, images: torch.Tensor, method: DecodeName | None = None, **options: Any) -> list[str]:
        """The captions of ``images`` as text (decoding by ``method``, default the ``decoding`` hyperparameter)."""
        return [self.decode_ids(row) for row in self.generate(images, method or self.hparams.decoding, **options)]

    def caption_log_likelihood(self, images: torch.Tensor, captions: torch.Tensor) -> torch.Tensor:
        """Log-likelihood ``(B,)`` of each caption ``(B, T)`` (through its ``EOS``; ``PAD`` not counted), with the
        writable words only, as decoding scores them."""
        logits = self(images, self.decoder_inputs(captions))
        logp = writable(logits).log_softmax(-1)
        picked = logp.gather(-1, captions.unsqueeze(-1)).squeeze(-1)
        return picked.masked_fill(captions == PAD, 0.0).sum(-1)

    @torch.no_grad()
    def attention_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The greedy caption ``(B, L)`` and the attention of each of its words over the image tokens, as maps
        ``(B, L, rows, columns)`` (zero after a caption's ``EOS``)."""
        was_training = self.training
        self.eval()
        ids, _, _, maps = self._greedy(self.encode_images(images), images.shape[0], self.max_length + 1)
        self.train(was_training)
        if maps is None:
            raise ValueError(f"{type(self).__name__}'s decoder has no attention over the image to show")
        return ids, maps.unflatten(-1, self.grid_size)

    # --- training logic --------------------------------------------------------------------------------------------
    decoder_inputs = staticmethod(shift_right)

    def build_metrics(self) -> MetricCollection:
        bleu = {f"bleu{n}": BLEUScore(n_gram=n) for n in range(1, 5)}
        return MetricCollection({**bleu, "exact_match": MeanMetric()}, compute_groups=False)

    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The teacher-forced loss; in evaluation also the decoded captions (``hparams.decoding``)."""
        images, captions, references = batch
        logits = self(images, self.decoder_inputs(captions))
        loss = F.cross_entropy(
            logits.flatten(0, 1), captions.flatten(), ignore_index=PAD, label_smoothing=self.hparams.label_smoothing
        )
        size = (captions != PAD).sum()
        if split == "train":
            return StepOutput(loss, size)
        # sampled captions are drawn from a generator seeded by the batch, so a metric repeats from run to run
        decoding = self.hparams.decoding
        generator = torch.Generator(images.device).manual_seed(batch_idx) if decoding == "sample" else None
        answer = self.generate(images, decoding, generator=generator)
        return StepOutput(loss, size, {"answer": answer, "references": references})

    def update_metrics(self, metrics: MetricCollection, answer: torch.Tensor, references: torch.Tensor) -> None:
        """BLEU of the decoded captions against every reference of their image; exact match with any of them."""
        predictions = [self.decode_ids(row) for row in answer]
        texts = [[self.decode_ids(row) for row in rows if row[0] != PAD] for rows in references]
        for n in range(1, 5):
            metrics[f"bleu{n}"].update(predictions, texts)
        hits = [prediction in options for prediction, options in zip(predictions, texts, strict=True)]
        metrics["exact_match"].update(torch.tensor(hits, dtype=torch.float32, device=answer.device))

    # --- the tools' path -------------------------------------------------------------------------------------------
    def preprocessing(self) -> dict[str, Any]:
        return {
            "input": "image",
            "in_channels": self.in_channels,
            "img_size": list(self.img_size),
            "vocab": list(self.vocab),
            "max_length": self.max_length,
        }

    def predict_tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The greedy captions' ids ``(B, max_length + 1)`` (``caption``: ``EOS`` then ``PAD`` after each); always
        ``max_length + 1`` steps, so an exported graph has one length."""
        memory = self.encode_images(x)
        return {"caption": self._greedy(memory, x.shape[0], self.max_length + 1, stop_early=False)[0]}

    @classmethod
    def answers(
        cls, outputs: Mapping[str, torch.Tensor], preprocessing: Mapping[str, Any], top_k: int = 5
    ) -> list[dict[str, Any]]:
        """Each caption as text (``caption``)."""
        return [{"caption": cls.ids_to_text(row, preprocessing)} for row in outputs["caption"]]

    def predict_batch(self, batch: Any) -> list[str]:
        """The captions of a batch's images as text (``hparams.decoding``)."""
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.caption(images)

    # --- the registry test's hooks ---------------------------------------------------------------------------------
    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Random images and random captions of varied lengths (each its own single reference)."""
        images = torch.randn(batch_size, *self.example_input_array.shape[1:], generator=generator)
        steps = min(self.max_length, 6)
        words = torch.randint(len(SPECIALS), self.vocab_size, (batch_size, steps + 1), generator=generator)
        lengths = torch.randint(1, steps + 1, (batch_size,), generator=generator)
        positions = torch.arange(steps + 1)
        captions = words.masked_fill(positions == lengths.unsqueeze(1), EOS)
        captions = captions.masked_fill(positions > lengths.unsqueeze(1), PAD)
        return images, captions, captions.unsqueeze(1)
