"""A Transformer study: baselines, ablations on two tasks, a checkpoint ensemble, distillation and an error analysis.

    python benchmarks/transformer_study.py                  # 2 seeds, every part: CPU minutes
    python benchmarks/transformer_study.py --seeds 0,1,2 --cls_steps 600 --lm_steps 600
    python benchmarks/transformer_study.py --quick --out /tmp/study.json --analysis_dir /tmp/study  # seconds

Two tasks, each at a fixed step budget and the same seeds for every configuration:

- **speakers**: which of eight Shakespeare characters speaks a speech
  (:class:`datamodules.ShakespeareSpeakersDataModule`, embedded, words as tokens); test accuracy.
- **char LM**: next-character prediction on Tiny Shakespeare (``--lm_text``, the usual 1.1 MB file); validation bits
  per character over the same ``--lm_eval_batches`` windows.

Parts, each a table of mean and spread (sample standard deviation) over ``--seeds``:

1. **baselines** on speakers: the Transformer against an LSTM and a bag of embeddings, each with its recipe's settings
   (``recipes/speakers_*.yaml``; float32 here), same steps, batches and split.
2. **ablations** around one base configuration per task (width fixed): heads 1/2/4/8, depth 1/2/4, positions
   none/sinusoidal/learned/rotary, pre-norm against post-norm.
3. **ensemble**: the base Transformer's checkpoints of every seed averaged (:class:`zoo.CheckpointEnsemble`), against
   their mean single-model accuracy.
4. **distillation**: a one-block student trained on the hard labels alone, and with the seed-0 base Transformer as
   teacher (``teacher_checkpoint``, temperature ``--temperature``, weight ``--distill_weight``).
5. **analysis** of the seed-0 base Transformer, written to ``--analysis_dir``: each head's attention on a few test
   speeches (``attention_heads.png``), the confusion matrix (``confusion_matrix.png``), and ``analysis.md`` with the
   hardest test speeches (lowest probability of the true speaker) and accuracy by speech length.

Writes ``benchmarks/results/transformer_study.json``: every run's numbers, the tables, the settings, the machine, and
one results row per part for docs/results.md.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import yaml
from _timing import RESULTS, machine, result_row, write_json

import zoo
from datamodules import CharTextDataModule, ShakespeareSpeakersDataModule
from datamodules.text import DEFAULT_TEXT

#: The ablations: name -> the arguments that differ from the base, per task (width is the same everywhere).
ABLATIONS: dict[str, dict[str, Any]] = {
    "base": {},
    "heads=1": {"heads": 1},
    "heads=2": {"heads": 2},
    "heads=8": {"heads": 8},
    "depth=1": {"depth": 1},
    "depth=4": {"depth": 4},
    "position=none": {"position": "none"},
    "position=sinusoidal": {"position": "sinusoidal"},
    "position=learned": {"position": "learned"},
    "position=rotary": {"position": "rotary"},
    "post-norm": {"norm_first": False},
}
#: The speakers models and the recipes whose settings they train with (model arguments and gradient clipping).
BASELINES = {"transformer": "speakers_transformer", "lstm": "speakers_lstm", "bag of embeddings": "speakers_bag"}
REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "lightning", "torchmetrics")
LENGTH_BUCKETS = ((1, 10), (11, 20), (21, 40), (41, 80), (81, 10_000))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds of every configuration")
    parser.add_argument("--parts", default="baselines,ablations,ensemble,distillation,analysis")
    parser.add_argument("--tasks", default="speakers,lm", help="the tasks of the ablations")
    parser.add_argument("--ablations", default=",".join(ABLATIONS))
    parser.add_argument("--width", type=int, default=64, help="model width of every ablation")
    parser.add_argument("--cls_steps", type=int, default=400, help="training steps of each speakers run")
    parser.add_argument("--lm_steps", type=int, default=300, help="training steps of each char LM run")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--lm_text", default=DEFAULT_TEXT, help="the char LM's text file (Tiny Shakespeare)")
    parser.add_argument("--lm_block", type=int, default=64, help="the char LM's context")
    parser.add_argument("--lm_eval_batches", type=int, default=20, help="validation batches of the char LM")
    parser.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    parser.add_argument("--distill_weight", type=float, default=0.5)
    parser.add_argument("--examples", type=int, default=3, help="test speeches drawn in the attention figure")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="one seed, 3 ablations, a few steps: the test")
    parser.add_argument("--out", default=str(RESULTS / "transformer_study.json"))
    parser.add_argument("--analysis_dir", default="docs/transformer_study")
    if parser.parse_known_args(argv)[0].quick:  # the quick sizes, unless given explicitly
        parser.set_defaults(seeds="0", ablations="base,heads=1,post-norm", cls_steps=4, lm_steps=4)
        parser.set_defaults(lm_eval_batches=2, width=32, examples=2)
    args = parser.parse_args(argv)
    args.seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    for name in ("parts", "tasks", "ablations"):
        setattr(args, name, [item for item in getattr(args, name).split(",") if item])
    unknown = sorted(set(args.ablations) - set(ABLATIONS))
    if unknown:
        parser.error(f"unknown ablations {unknown}; choose from {', '.join(ABLATIONS)}")
    return args


# --- the two tasks --------------------------------------------------------------------------------------------------
def classifier_args(ablation: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The speakers Transformer: its recipe's settings at ``--width``, with the ablation's changes."""
    config = {"heads": 4, "depth": 2, "position": "sinusoidal", "norm_first": True, **ablation}
    return dict(
        embed_dim=args.width,
        num_heads=config["heads"],
        depth=config["depth"],
        position=config["position"],
        norm_first=config["norm_first"],
    )


def lm_args(ablation: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The character GPT: learned positions by default (GPT-2), with the ablation's changes."""
    config = {"heads": 4, "depth": 2, "position": "learned", "norm_first": True, **ablation}
    return dict(
        n_embd=args.width,
        n_head=config["heads"],
        n_layer=config["depth"],
        position=config["position"],
        norm_first=config["norm_first"],
        block_size=args.lm_block,
        dropout=0.0,
    )


def trainer(steps: int, **kwargs: Any) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        max_steps=steps,
        max_epochs=-1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return L.Trainer(**{**defaults, **kwargs})


def fit_classifier(
    model: L.LightningModule,
    data: ShakespeareSpeakersDataModule,
    steps: int,
    seed: int,
    save: Path | None = None,
    **trainer_args: Any,
) -> dict[str, Any]:
    """Train ``model`` for ``steps`` and test it; optionally save its checkpoint to ``save``."""
    run = trainer(steps, **trainer_args)
    start = time.perf_counter()
    run.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    if save is not None:
        run.save_checkpoint(save)
    metrics = run.test(model, datamodule=data, verbose=False)[0]
    return {"acc": float(metrics["test/acc"]), "loss": float(metrics["test/loss"]), "train_s": seconds}


def recipe_settings(recipe: str) -> tuple[type, dict[str, Any], dict[str, Any]]:
    """The model class, its init arguments and the gradient clipping of ``recipes/<recipe>.yaml``."""
    config = yaml.safe_load((REPO / "recipes" / f"{recipe}.yaml").read_text())
    model_class = getattr(zoo, config["model"]["class_path"].rpartition(".")[2])
    clipping = {key: value for key, value in config.get("trainer", {}).items() if key == "gradient_clip_val"}
    return model_class, dict(config["model"].get("init_args", {})), clipping


def speakers_run(recipe: str, overrides: dict[str, Any], data, args, seed: int, save: Path | None = None) -> dict:
    """A speakers model of ``recipe``'s settings with ``overrides``, sized by the data as the CLI links it."""
    model_class, init_args, clipping = recipe_settings(recipe)
    if "warmup_epochs" in init_args:  # a run of steps counts its warmup in steps
        epochs = init_args.pop("warmup_epochs")
        init_args["warmup_steps"] = round(epochs * len(data.train_dataloader()))
    L.seed_everything(seed, verbose=False)
    sizes = dict(num_classes=data.num_classes, vocab_size=data.vocab_size, max_length=data.max_length)
    model = model_class(**{**init_args, **overrides, **sizes})
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, **fit_classifier(model, data, args.cls_steps, seed, save, **clipping)}


def lm_run(overrides: dict[str, Any], data: CharTextDataModule, args: argparse.Namespace, seed: int) -> dict:
    L.seed_everything(seed, verbose=False)
    model = zoo.GPT(vocab="".join(data.vocab), lr=1e-3, warmup_steps=min(50, args.lm_steps // 5), **overrides)
    run = trainer(args.lm_steps)
    start = time.perf_counter()
    run.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    metrics = trainer(0, limit_val_batches=args.lm_eval_batches).validate(model, datamodule=data, verbose=False)[0]
    loss = float(metrics["val/loss"])
    return {"params": sum(p.numel() for p in model.parameters()), "bpc": loss / math.log(2), "train_s": seconds}


# --- tables ---------------------------------------------------------------------------------------------------------
def summarize(runs: list[dict[str, Any]], metric: str) -> dict[str, float]:
    values = [run[metric] for run in runs]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": spread, "n": len(values)}


def format_rows(title: str, rows: dict[str, dict[str, Any]], metric: str, scale: float, unit: str) -> str:
    header = f"{'configuration':<28} {metric + unit:>16} {'params':>10} {'train s':>8}"
    lines = [title, header, "-" * len(header)]
    for name, row in rows.items():
        summary = row[metric]
        value = f"{scale * summary['mean']:.2f} ± {scale * summary['std']:.2f}"
        lines.append(f"{name:<28} {value:>16} {row['params']:>10,} {row['train_s']:>8.1f}")
    return "\n".join(lines)


def table_row(runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    return {
        metric: summarize(runs, metric),
        "params": runs[0]["params"],
        "train_s": statistics.fmean(run["train_s"] for run in runs),
        "runs": runs,
    }


# --- analysis -------------------------------------------------------------------------------------------------------
@torch.no_grad()
def test_predictions(model: L.LightningModule, data: ShakespeareSpeakersDataModule) -> dict[str, torch.Tensor]:
    """Probabilities, targets, lengths and ids of every test speech, in loader order."""
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {"probs": [], "target": [], "lengths": [], "x": []}
    for x, target, lengths in data.test_dataloader():
        parts["probs"].append(F.softmax(model(x, lengths), dim=-1))
        parts["target"].append(target)
        parts["lengths"].append(lengths)
        parts["x"].extend(x[i, : lengths[i]] for i in range(len(x)))
    return {key: (value if key == "x" else torch.cat(value)) for key, value in parts.items()}


def words(ids: torch.Tensor, vocab: Sequence[str]) -> list[str]:
    return [vocab[i] for i in ids.tolist()]


def analyse(model: L.LightningModule, data: ShakespeareSpeakersDataModule, args: argparse.Namespace) -> dict:
    """Attention pictures, the confusion matrix, the hardest speeches and accuracy by length (files and numbers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    out = Path(args.analysis_dir)
    out.mkdir(parents=True, exist_ok=True)
    predicted = test_predictions(model, data)
    probs, target, lengths = predicted["probs"], predicted["target"], predicted["lengths"]
    classes, vocab = data.class_names, data.vocab
    guess = probs.argmax(-1)

    confusion = multiclass_confusion_matrix(guess, target, num_classes=len(classes))
    figure, axis = plt.subplots(figsize=(6.5, 5.5))
    axis.imshow(confusion, cmap="Blues")
    axis.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true")
    axis.set_xticklabels(classes, rotation=45, ha="right", fontsize=8)
    axis.set_yticklabels(classes, fontsize=8)
    for (row, column), count in zip(
        torch.cartesian_prod(torch.arange(len(classes)), torch.arange(len(classes))).tolist(),
        confusion.flatten().tolist(),
        strict=True,
    ):
        axis.text(column, row, str(count), ha="center", va="center", fontsize=7)
    axis.set_title(f"test speeches, accuracy {100 * (guess == target).float().mean():.1f}%")
    figure.tight_layout()
    figure.savefig(out / "confusion_matrix.png", dpi=110)
    plt.close(figure)

    true_probability = probs[torch.arange(len(target)), target]
    hardest = true_probability.argsort()[:8].tolist()
    by_length = []
    for low, high in LENGTH_BUCKETS:
        inside = (lengths >= low) & (lengths <= high)
        if inside.any():
            accuracy = (guess[inside] == target[inside]).float().mean().item()
            by_length.append(
                {"tokens": f"{low}-{high}" if high < 10_000 else f"{low}+", "n": int(inside.sum()), "acc": accuracy}
            )

    # the attention of each head of each block on the first few test speeches of 8 to 16 tokens
    chosen = [i for i, length in enumerate(lengths.tolist()) if 8 <= length <= 16][: args.examples]
    maps = [model.attention_maps(predicted["x"][i].unsqueeze(0)) for i in chosen]
    blocks, heads = len(maps[0]), next(iter(maps[0].values())).shape[1] if maps else (0, 0)
    figure, axes = plt.subplots(
        len(chosen) * blocks, heads, figsize=(2.2 * heads, 2.3 * len(chosen) * blocks), squeeze=False
    )
    for example, (index, attention) in enumerate(zip(chosen, maps, strict=True)):
        tokens = words(predicted["x"][index], vocab)
        for block, weights in enumerate(attention.values()):
            for head in range(heads):
                axis = axes[example * blocks + block, head]
                axis.imshow(weights[0, head], cmap="viridis", vmin=0, vmax=1)
                axis.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=6)
                axis.set_yticks(range(len(tokens)), tokens if head == 0 else [], fontsize=6)
                axis.set_title(f"speech {example + 1}, block {block + 1}, head {head + 1}", fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "attention_heads.png", dpi=90)
    plt.close(figure)

    hardest_rows = [
        {
            "speech": " ".join(words(predicted["x"][i], vocab))[:160],
            "true": classes[target[i]],
            "predicted": classes[guess[i]],
            "p_true": float(true_probability[i]),
            "p_predicted": float(probs[i, guess[i]]),
        }
        for i in hardest
    ]
    lines = [
        "# Transformer study: error analysis of the seed-0 base speakers Transformer",
        "",
        f"Written by `{args.command}`.",
        "",
        "## Accuracy by speech length (tokens)",
        "",
        "| tokens | speeches | accuracy |",
        "| --- | --- | --- |",
        *(f"| {row['tokens']} | {row['n']} | {100 * row['acc']:.1f}% |" for row in by_length),
        "",
        "## The hardest test speeches (lowest probability of the true speaker)",
        "",
        "| speech (tokens as the model reads them) | true | p(true) | predicted | p(predicted) |",
        "| --- | --- | --- | --- | --- |",
        *(
            f"| {row['speech'].replace('|', '/')} | {row['true']} | {row['p_true']:.3f} | {row['predicted']} | "
            f"{row['p_predicted']:.3f} |"
            for row in hardest_rows
        ),
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![attention of each head](attention_heads.png)",
        "",
    ]
    (out / "analysis.md").write_text("\n".join(lines))
    return {
        "confusion_matrix": confusion.tolist(),
        "classes": list(classes),
        "accuracy_by_length": by_length,
        "hardest": hardest_rows,
        "files": sorted(str(path) for path in out.iterdir()),
    }


# --- the study ------------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    args.command = " ".join(["python", "benchmarks/transformer_study.py", *(sys.argv[1:] if argv is None else argv)])
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    speakers = ShakespeareSpeakersDataModule(batch_size=args.batch_size)
    speakers.setup()
    report: dict[str, Any] = {"command": args.command}
    tables: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="transformer_study_"))
    base = classifier_args({}, args)

    base_checkpoints: list[Path] = []
    speakers_rows: dict[str, dict[str, Any]] = {}
    if {"baselines", "ensemble", "distillation", "analysis"} & set(args.parts) or (
        "ablations" in args.parts and "speakers" in args.tasks
    ):
        runs = []
        for seed in args.seeds:
            save = workdir / f"base_seed{seed}.ckpt"
            runs.append(speakers_run("speakers_transformer", base, speakers, args, seed, save))
            base_checkpoints.append(save)
        speakers_rows["base"] = table_row(runs, "acc")

    if "baselines" in args.parts:
        rows = {"transformer": speakers_rows["base"]}
        for name, recipe in list(BASELINES.items())[1:]:
            rows[name] = table_row([speakers_run(recipe, {}, speakers, args, seed) for seed in args.seeds], "acc")
        report["baselines"] = rows
        tables.append(format_rows("baselines, speakers: test accuracy", rows, "acc", 100, " %"))

    if "ablations" in args.parts and "speakers" in args.tasks:
        for name in args.ablations:
            overrides = classifier_args(ABLATIONS[name], args)
            if overrides == base:  # the base itself (its position): the same runs
                speakers_rows[name] = speakers_rows["base"]
                continue
            runs = [speakers_run("speakers_transformer", overrides, speakers, args, seed) for seed in args.seeds]
            speakers_rows[name] = table_row(runs, "acc")
        report["ablations_speakers"] = {name: speakers_rows[name] for name in args.ablations}
        tables.append(format_rows("ablations, speakers: test accuracy", report["ablations_speakers"], "acc", 100, " %"))

    if "ablations" in args.parts and "lm" in args.tasks:
        text = CharTextDataModule(path=args.lm_text, block_size=args.lm_block, batch_size=args.batch_size)
        text.setup()
        rows, by_config = {}, {}
        for name in args.ablations:
            overrides = lm_args(ABLATIONS[name], args)
            key = repr(sorted(overrides.items()))  # the base's own position is the base: run once
            if key not in by_config:
                by_config[key] = table_row([lm_run(overrides, text, args, seed) for seed in args.seeds], "bpc")
            rows[name] = by_config[key]
        report["ablations_lm"] = rows
        tables.append(format_rows("ablations, char LM: validation bits per character", rows, "bpc", 1, ""))

    singles = speakers_rows.get("base")
    if "ensemble" in args.parts and base_checkpoints:
        ensemble = zoo.CheckpointEnsemble([str(path) for path in base_checkpoints])
        metrics = trainer(0).test(ensemble, datamodule=speakers, verbose=False)[0]
        report["ensemble"] = {
            "members": len(base_checkpoints),
            "acc": float(metrics["test/acc"]),
            "single_mean_acc": singles["acc"]["mean"],
            "gain": float(metrics["test/acc"]) - singles["acc"]["mean"],
        }
        tables.append(
            f"ensemble of {len(base_checkpoints)} base Transformers: test accuracy "
            f"{100 * report['ensemble']['acc']:.2f}% against {100 * singles['acc']['mean']:.2f}% for one "
            f"(gain {100 * report['ensemble']['gain']:+.2f} points)"
        )

    if "distillation" in args.parts and base_checkpoints:
        student = classifier_args({"depth": 1}, args)
        teacher = dict(
            teacher_checkpoint=str(base_checkpoints[0]),
            distill_temperature=args.temperature,
            distill_weight=args.distill_weight,
        )
        rows = {
            "student, labels only": table_row(
                [speakers_run("speakers_transformer", student, speakers, args, seed) for seed in args.seeds], "acc"
            ),
            "student, distilled": table_row(
                [
                    speakers_run("speakers_transformer", {**student, **teacher}, speakers, args, seed)
                    for seed in args.seeds
                ],
                "acc",
            ),
        }
        rows["student, distilled"]["gain"] = (
            rows["student, distilled"]["acc"]["mean"] - rows["student, labels only"]["acc"]["mean"]
        )
        report["distillation"] = rows
        tables.append(
            format_rows(
                f"distillation, speakers: a 1-block student of the seed-0 base (T={args.temperature}, "
                f"w={args.distill_weight}): test accuracy",
                rows,
                "acc",
                100,
                " %",
            )
        )

    if "analysis" in args.parts and base_checkpoints:
        model = zoo.load_from_checkpoint(str(base_checkpoints[0]))
        report["analysis"] = analyse(model, speakers, args)

    info = machine()
    report.update(
        machine=info,
        versions={package: version(package) for package in PACKAGES},
        date=date.today().isoformat(),
        settings={key: value for key, value in vars(args).items() if key not in ("out", "command")},
        wall_s=time.perf_counter() - start,
        table="\n\n".join(tables),
        rows=result_rows(report, args, info),
    )
    print(report["table"])
    print(f"study in {report['wall_s']:.0f} s")
    write_json(report, args.out)
    return report


def result_rows(report: dict[str, Any], args: argparse.Namespace, info: dict[str, Any]) -> list[dict[str, Any]]:
    """One results row per part that ran."""
    seeds = f"{len(args.seeds)} seed{'s' * (len(args.seeds) > 1)}"

    def spread(row: dict[str, Any], metric: str, scale: float, unit: str) -> str:
        return f"{scale * row[metric]['mean']:.2f}{unit} ± {scale * row[metric]['std']:.2f}"

    described: list[tuple[str, str]] = []
    if "baselines" in report:
        value = "; ".join(f"{name} {spread(row, 'acc', 100, '%')}" for name, row in report["baselines"].items())
        described.append((f"speakers (8 classes), {args.cls_steps} steps, {seeds}: test accuracy of each model", value))
    for task, metric, scale, unit, what in (
        ("speakers", "acc", 100, "%", f"test accuracy, {args.cls_steps} steps"),
        ("lm", "bpc", 1, "", f"validation bits per character, {args.lm_steps} steps"),
    ):
        rows = report.get(f"ablations_{task}")
        if rows and len(rows) > 1:
            value = "; ".join(f"{name} {spread(row, metric, scale, unit)}" for name, row in rows.items())
            described.append((f"Transformer ablations, {task}, width {args.width}, {seeds}: {what}", value))
    if "ensemble" in report:
        ensemble = report["ensemble"]
        described.append(
            (
                f"checkpoint ensemble of {ensemble['members']} base speakers Transformers: test accuracy",
                f"{100 * ensemble['acc']:.2f}% (one model: {100 * ensemble['single_mean_acc']:.2f}%)",
            )
        )
    if "distillation" in report:
        rows = report["distillation"]
        described.append(
            (
                f"distillation into a 1-block speakers Transformer, {seeds}: test accuracy",
                f"labels only {spread(rows['student, labels only'], 'acc', 100, '%')}; distilled "
                f"{spread(rows['student, distilled'], 'acc', 100, '%')}",
            )
        )
    return [result_row(what, value, args.command, info, PACKAGES) for what, value in described]


if __name__ == "__main__":
    main()
