"""Sequence-to-sequence task base: teacher-forced training, greedy and beam-search decoding, token accuracy,
exact-match accuracy and BLEU.

Batches are ``(src, tgt, src_lengths)``: source ids ``(B, S)`` padded with ``PAD`` after ``src_lengths[b]`` steps,
and target ids ``(B, T)``, each answer followed by ``EOS`` and then ``PAD``. Ids 0-2 are ``PAD``, ``BOS`` and ``EOS``;
id ``3 + i`` is ``vocab[i]``, the characters stored as a hyperparameter so a checkpoint reads and writes text alone.
The decoder reads ``[BOS, tgt[:-1]]`` (teacher forcing) and predicts ``tgt``. A subclass implements
``encode(src, src_lengths) -> memory`` (a tuple of batch-first tensors) and ``decode(memory, tgt_in) -> logits``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.text import BLEUScore

from zoo.tasks.base import Split, StepOutput, TaskModule

PAD, BOS, EOS = 0, 1, 2
#: Ids before the first character of the vocabulary.
NUM_SPECIAL = 3
DecodeName = Literal["greedy", "beam"]
Memory = tuple[torch.Tensor, ...]


def shift_right(tgt: torch.Tensor) -> torch.Tensor:
    """``[BOS, tgt[:-1]]`` per row: what a decoder reads under teacher forcing to predict ``tgt``."""
    return torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], dim=1)


def writable(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` ``(..., V)`` as float with ``PAD`` and ``BOS`` ruled out: a decoder never writes them."""
    logits = logits.float().clone()
    logits[..., PAD] = logits[..., BOS] = float("-inf")
    return logits


def _select(memory: Memory, index: torch.Tensor) -> Memory:
    """The memory of the batch rows ``index`` (beams share their source's memory)."""
    return tuple(part.index_select(0, index) for part in memory)


class Seq2SeqTask(TaskModule):
    """Task base for encoder-decoder models over character vocabularies.

    Logs ``{train,val,test}/loss`` and per epoch ``{val,test}/token_acc`` (teacher-forced next-token accuracy over
    the target tokens, ``EOS`` included), ``/exact_match`` (the decoded answer equals the target) and ``/bleu``
    (torchmetrics' BLEU-4 with smoothing, over the answers' characters).

    Args:
        vocab: the characters of sources and targets (ids ``3..``; 0-2 are PAD, BOS, EOS).
        max_length: the longest source; answers are decoded up to ``max_length + 1`` tokens.
        label_smoothing: label smoothing of the cross-entropy.
        decoding: how validation and test decode: ``"greedy"`` or ``"beam"``.
        beam_size: beams of beam search.
        **optim_args: optimizer and schedule, see :class:`~zoo.tasks.base.TaskModule`.
    """

    monitor = ("val/exact_match", "max")
    data_links: ClassVar[tuple[str, ...]] = ("vocab", "max_length")
    overfit_lr = 3e-3

    def __init__(
        self,
        vocab: str = "0123456789",
        max_length: int = 16,
        label_smoothing: float = 0.0,
        decoding: DecodeName = "greedy",
        beam_size: int = 4,
        **optim_args: Any,
    ) -> None:
        if not vocab or len(set(vocab)) != len(vocab):
            raise ValueError(f"vocab must be a non-empty string listing each character once, got {vocab!r}")
        if max_length < 1 or beam_size < 1 or not 0 <= label_smoothing < 1 or decoding not in ("greedy", "beam"):
            raise ValueError(
                "need max_length >= 1, beam_size >= 1, label_smoothing in [0, 1) and decoding 'greedy' or 'beam', "
                f"got {max_length}, {beam_size}, {label_smoothing}, {decoding!r}"
            )
        super().__init__(**optim_args)
        self.vocab, self.max_length = vocab, max_length
        self.vocab_size = len(vocab) + NUM_SPECIAL
        self._char_to_id = {char: NUM_SPECIAL + index for index, char in enumerate(vocab)}
        steps = min(max_length, 8)
        self.example_input_array = (
            torch.full((2, steps), NUM_SPECIAL, dtype=torch.long),
            torch.tensor([steps, steps]),
            torch.full((2, steps + 1), BOS, dtype=torch.long),
        )

    # --- text ------------------------------------------------------------------------------------------------
    def encode_text(self, text: str) -> torch.Tensor:
        """Source ids ``(len(text),)``; characters outside the vocabulary are a ValueError listing them."""
        return self.text_to_ids(text, {"vocab": self.vocab})

    def decode_ids(self, ids: torch.Tensor | list[int]) -> str:
        """The characters of ids up to the first ``EOS`` (``PAD`` and ``BOS`` skipped)."""
        return self.ids_to_text(ids, {"vocab": self.vocab})

    @classmethod
    def text_to_ids(cls, text: str, preprocessing: Mapping[str, Any]) -> torch.Tensor:
        """Source ids ``(T,)`` of ``text`` in the vocabulary ``preprocessing["vocab"]`` (id ``3 + i`` is
        ``vocab[i]``); a ValueError lists the characters outside it."""
        vocab = preprocessing.get("vocab") or ""
        unknown = sorted(set(text) - set(vocab))
        if unknown:
            raise ValueError(f"characters {unknown} are not in the model's vocabulary {vocab!r}")
        if not text:
            raise ValueError("the source is empty: give at least one character")
        lookup = {char: NUM_SPECIAL + index for index, char in enumerate(vocab)}
        return torch.tensor([lookup[char] for char in text], dtype=torch.long)

    @classmethod
    def ids_to_text(cls, ids: torch.Tensor | list[int], preprocessing: Mapping[str, Any]) -> str:
        """The characters of ids up to the first ``EOS`` (``PAD`` and ``BOS`` skipped)."""
        vocab, out = preprocessing["vocab"], []
        for index in torch.as_tensor(ids).tolist():
            if index == EOS:
                break
            if index >= NUM_SPECIAL:
                out.append(vocab[index - NUM_SPECIAL])
        return "".join(out)

    # --- the network's contract --------------------------------------------------------------------------
    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> Memory:
        """What the decoder reads: a tuple of batch-first tensors."""
        raise NotImplementedError

    def decode(self, memory: Memory, tgt_in: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, V)`` of the next token after each prefix of ``tgt_in`` ``(B, T)``."""
        raise NotImplementedError

    def check_input(self, src: torch.Tensor, src_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Raise a ValueError naming what is expected; returns the lengths (full length when ``None``)."""
        name = type(self).__name__
        if src.ndim != 2 or src.is_floating_point() or src.is_complex() or src.dtype == torch.bool:
            raise ValueError(
                f"{name} expects token ids of shape (B, T) and dtype torch.long, got {src.dtype} {tuple(src.shape)}"
            )
        if src.shape[1] == 0 or src.shape[1] > self.max_length:
            raise ValueError(f"{name} reads sources of 1 to max_length={self.max_length} tokens, got {src.shape[1]}")
        if src_lengths is None:
            return torch.full((src.shape[0],), src.shape[1], dtype=torch.long, device=src.device)
        if src_lengths.shape != (src.shape[0],):
            raise ValueError(f"{name} expects src_lengths of shape ({src.shape[0]},), got {tuple(src_lengths.shape)}")
        return src_lengths

    def forward(
        self, src: torch.Tensor, src_lengths: torch.Tensor | None = None, tgt_in: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced logits ``(B, T, V)`` for decoder inputs ``tgt_in``; without them, the logits of the
        greedy answer."""
        src_lengths = self.check_input(src, src_lengths)
        memory = self.encode(src, src_lengths)
        if tgt_in is None:
            return self._greedy(memory, src.shape[0], self.max_length + 1)[1]
        return self.decode(memory, tgt_in)

    # --- decoding ------------------------------------------------------------------------------------------
    def _greedy(
        self, memory: Memory, batch: int, max_new_tokens: int, stop_early: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device = memory[0].device
        ids = torch.full((batch, 1), BOS, dtype=torch.long, device=device)
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        steps = []
        for _ in range(max_new_tokens):
            logits = self.decode(memory, ids)[:, -1]  # (B, V)
            token = writable(logits).argmax(-1).masked_fill(done, PAD)
            steps.append(logits)
            ids = torch.cat([ids, token.unsqueeze(1)], dim=1)
            done |= token == EOS
            if stop_early and bool(done.all()):  # a data-dependent branch: off for a graph of fixed length
                break
        return ids[:, 1:], torch.stack(steps, dim=1)

    def _beam(self, memory: Memory, batch: int, max_new_tokens: int, beam_size: int) -> torch.Tensor:
        device = memory[0].device
        memory = _select(memory, torch.arange(batch, device=device).repeat_interleave(beam_size))
        ids = torch.full((batch * beam_size, 1), BOS, dtype=torch.long, device=device)
        scores = torch.full((batch, beam_size), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live beam at the start, so the first step does not pick the same token K times
        done = torch.zeros(batch * beam_size, dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            logp = writable(self.decode(memory, ids)[:, -1]).log_softmax(-1)  # (B*K, V)
            # A finished beam only extends with PAD, at no cost, so it keeps its score.
            finished = torch.full_like(logp, float("-inf"))
            finished[:, PAD] = 0.0
            logp = torch.where(done.unsqueeze(1), finished, logp)
            vocab = logp.shape[-1]
            total = (scores.unsqueeze(-1) + logp.view(batch, beam_size, vocab)).view(batch, -1)  # (B, K*V)
            scores, flat = total.topk(beam_size, dim=-1)
            origin = (flat // vocab) + torch.arange(batch, device=device).unsqueeze(1) * beam_size  # (B, K)
            token = (flat % vocab).view(-1)
            ids = torch.cat([ids[origin.view(-1)], token.unsqueeze(1)], dim=1)
            done = done[origin.view(-1)] | (token == EOS)
            if bool(done.all()):
                break
        best = scores.argmax(-1) + torch.arange(batch, device=device) * beam_size
        return ids[best, 1:]

    @torch.no_grad()
    def generate(
        self,
        src: torch.Tensor | str,
        src_lengths: torch.Tensor | None = None,
        method: DecodeName = "greedy",
        beam_size: int | None = None,
        max_new_tokens: int | None = None,
    ) -> torch.Tensor | str:
        """Decode answers: ids ``(B, L)`` (``EOS`` then ``PAD`` after each answer), or text for a text source.

        Args:
            src: source ids ``(B, S)`` or one source as text.
            src_lengths: valid steps per source (``None``: all).
            method: ``"greedy"`` or ``"beam"`` (the most likely complete answer among ``beam_size`` beams).
            beam_size: beams (default: the ``beam_size`` hyperparameter).
            max_new_tokens: the longest answer, ``EOS`` included (default ``max_length + 1``).
        """
        text = isinstance(src, str)
        if text:
            src = self.encode_text(src).unsqueeze(0).to(self.device)
        src_lengths = self.check_input(src, src_lengths)
        was_training = self.training
        self.eval()
        memory = self.encode(src, src_lengths)
        limit = max_new_tokens or self.max_length + 1
        if method == "beam":
            ids = self._beam(memory, src.shape[0], limit, beam_size or self.hparams.beam_size)
        elif method == "greedy":
            ids = self._greedy(memory, src.shape[0], limit)[0]
        else:
            raise ValueError(f"Unknown decoding {method!r}; choose 'greedy' or 'beam'.")
        self.train(was_training)
        return self.decode_ids(ids[0]) if text else ids

    def sequence_log_prob(self, src: torch.Tensor, src_lengths: torch.Tensor | None, tgt: torch.Tensor) -> torch.Tensor:
        """Log-probability ``(B,)`` of each target answer (through its ``EOS``; ``PAD`` not counted)."""
        logits = self(src, src_lengths, self.decoder_inputs(tgt)).float()
        logp = logits.log_softmax(-1).gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (logp * (tgt != PAD)).sum(-1)

    # --- training logic ----------------------------------------------------------------------------------
    decoder_inputs = staticmethod(shift_right)

    def build_metrics(self) -> MetricCollection:
        return MetricCollection(
            {
                "token_acc": MulticlassAccuracy(
                    self.vocab_size, average="micro", ignore_index=PAD, validate_args=False
                ),
                "exact_match": MeanMetric(),
                "bleu": BLEUScore(n_gram=4, smooth=True),
            },
            compute_groups=False,
        )

    def step(self, batch: Any, batch_idx: int, split: Split) -> StepOutput:
        """The teacher-forced loss; in evaluation also the decoded answers (``hparams.decoding``)."""
        src, tgt, src_lengths = batch
        logits = self(src, src_lengths, self.decoder_inputs(tgt))
        loss = F.cross_entropy(
            logits.flatten(0, 1), tgt.flatten(), ignore_index=PAD, label_smoothing=self.hparams.label_smoothing
        )
        size = (tgt != PAD).sum()
        if split == "train":
            return StepOutput(loss, size)
        hp = self.hparams
        answer = self.generate(src, src_lengths, method=hp.decoding, beam_size=hp.beam_size)
        return StepOutput(loss, size, {"logits": logits, "answer": answer, "tgt": tgt})

    def update_metrics(
        self, metrics: MetricCollection, logits: torch.Tensor, answer: torch.Tensor, tgt: torch.Tensor
    ) -> None:
        """Token accuracy of the teacher-forced logits; exact match and BLEU of the decoded answers."""
        metrics["token_acc"].update(logits.argmax(-1).flatten(), tgt.flatten())
        width = max(answer.shape[1], tgt.shape[1])
        same = F.pad(answer, (0, width - answer.shape[1]), value=PAD) == F.pad(tgt, (0, width - tgt.shape[1]))
        metrics["exact_match"].update(same.all(-1).float())
        predictions = [" ".join(self.decode_ids(row)) for row in answer]
        references = [[" ".join(self.decode_ids(row))] for row in tgt]
        metrics["bleu"].update(predictions, references)

    def preprocessing(self) -> dict[str, Any]:
        return {"input": "text", "vocab": self.vocab, "max_length": self.max_length}

    def predict_tensors(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The greedy answers' ids ``(B, max_length + 1)`` (``answer``: ``EOS`` then ``PAD`` after each) to sources
        ``(B, S)`` taken at full length; always ``max_length + 1`` steps, so an exported graph has one length."""
        lengths = self.check_input(x)
        return {"answer": self._greedy(self.encode(x, lengths), x.shape[0], self.max_length + 1, stop_early=False)[0]}

    @classmethod
    def answers(
        cls, outputs: Mapping[str, torch.Tensor], preprocessing: Mapping[str, Any], top_k: int = 5
    ) -> list[dict[str, Any]]:
        """Each answer as text (``output``)."""
        return [{"output": cls.ids_to_text(row, preprocessing)} for row in outputs["answer"]]

    def predict_batch(self, batch: Any) -> list[str]:
        """The decoded answers as text."""
        src, src_lengths = (
            (batch[0], batch[2]) if isinstance(batch, (tuple, list)) and len(batch) == 3 else (batch, None)
        )
        answer = self.generate(src, src_lengths, method=self.hparams.decoding)
        return [self.decode_ids(row) for row in answer]

    # --- the registry test's hooks -------------------------------------------------------------------------
    def example_batch(self, batch_size: int = 8, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Random sources of varied lengths and their reversal as targets."""
        steps = min(self.max_length, 8)
        src = torch.randint(NUM_SPECIAL, self.vocab_size, (batch_size, steps), generator=generator)
        lengths = torch.randint(max(1, steps // 2), steps + 1, (batch_size,), generator=generator)
        lengths[0] = steps
        tgt = torch.full((batch_size, steps + 1), PAD, dtype=torch.long)
        for row, length in enumerate(lengths.tolist()):
            src[row, length:] = PAD
            tgt[row, :length] = src[row, :length].flip(0)
            tgt[row, length] = EOS
        return src, tgt, lengths
