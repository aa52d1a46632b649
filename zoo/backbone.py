"""Transfer learning: any timm or torchvision model as a feature extractor under a new linear head.

``backbone`` names a timm model (``"resnet18"``, built with ``num_classes=0``) or a torchvision model with the
``tv:`` prefix (``"tv:resnet18"``, built with ``weights=None`` and its last ``nn.Linear`` replaced by Identity).
Either way ``self.backbone`` maps images to pooled features ``(B, num_features)`` and ``self.head`` is a fresh
``nn.Linear``.

Stages (what ``partial`` and ``discriminative`` count) are derived generically, stem first:

- timm models: ``model.group_matcher(coarse=True)`` through ``timm.models.group_parameters`` (a ResNet gives
  stem, layer1..layer4; a ViT gives embeddings, one group per block, final norm);
- anything else (torchvision): the backbone's top-level children that own parameters, in registration order
  (torchvision's ResNet gives conv1, bn1, layer1..layer4).

The head is never a stage; it always trains. Strategies:

- ``full``: everything trains at ``lr``.
- ``linear_probe``: the backbone is frozen; only the head trains.
- ``partial``: the last ``unfreeze_last`` stages and the head train.
- ``discriminative``: everything trains; stage ``k`` of ``n`` gets ``lr * lr_decay ** (n - k)`` (the head is at
  distance 0, the last stage at 1, the stem at ``n``), on the task base's schedule. ``--optimizer`` from the CLI
  replaces ``configure_optimizers`` and with it these groups.
- ``gradual``: Lightning's :class:`~lightning.pytorch.callbacks.BackboneFinetuning`, returned by
  :meth:`Backbone.configure_callbacks`: the backbone (BatchNorm included) is frozen until epoch
  ``unfreeze_at_epoch``, then added as a param group starting at 0.1x the head's lr and growing x1.5 per epoch
  up to it. A finetuning callback already in the Trainer's callbacks takes precedence over this one (Lightning
  #18784: ``configure_callbacks`` would otherwise silently replace Trainer callbacks of the same type).

BatchNorm layers whose parameters are all frozen are kept in eval mode during training, so their running
statistics (the pretrained ones) do not drift to the new data.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import timm
import torch
from lightning.pytorch.callbacks import BackboneFinetuning, BaseFinetuning, Callback
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.lr_scheduler import LambdaLR

from zoo.checkpoint import load_file
from zoo.registry import register_model
from zoo.tasks import ImageClassifier

Strategy = Literal["full", "linear_probe", "partial", "discriminative", "gradual"]
STRATEGIES: tuple[str, ...] = ("full", "linear_probe", "partial", "discriminative", "gradual")
TV_PREFIX = "tv:"


def _constant(step: int) -> float:
    return 1.0


class _GradualUnfreeze(BackboneFinetuning):
    """BackboneFinetuning that also freezes BatchNorm before the unfreeze epoch and keeps LambdaLR schedules valid.

    The added backbone param group gets a constant factor in every LambdaLR of the optimizer (torch zips groups
    and factors strictly), so its lr stays the one BackboneFinetuning sets each epoch.
    """

    def freeze_before_training(self, pl_module: Any) -> None:
        self.freeze(pl_module.backbone, train_bn=False)

    def finetune_function(self, pl_module: Any, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        super().finetune_function(pl_module, epoch, optimizer)
        if epoch >= self.unfreeze_backbone_at_epoch:
            self._match_schedulers(pl_module.trainer, optimizer, set_base_lr=True)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        # On resume past the unfreeze epoch the parent re-adds the backbone's param group but leaves its parameters
        # frozen (as `setup` froze them), and the restored LambdaLR needs a factor for that group.
        super().on_fit_start(trainer, pl_module)
        backbone = {id(p) for p in pl_module.backbone.parameters()}
        restored = any(id(p) in backbone for opt in trainer.optimizers for g in opt.param_groups for p in g["params"])
        if restored:
            self.make_trainable(pl_module.backbone)
        for optimizer in trainer.optimizers:
            self._match_schedulers(trainer, optimizer, set_base_lr=False)

    @staticmethod
    def _match_schedulers(trainer: Any, optimizer: torch.optim.Optimizer, set_base_lr: bool) -> None:
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            if isinstance(scheduler, LambdaLR) and scheduler.optimizer is optimizer:
                while len(scheduler.lr_lambdas) < len(optimizer.param_groups):
                    scheduler.lr_lambdas.append(_constant)
                while len(scheduler.base_lrs) < len(optimizer.param_groups):
                    scheduler.base_lrs.append(optimizer.param_groups[len(scheduler.base_lrs)]["lr"])
                if set_base_lr:
                    scheduler.base_lrs[-1] = optimizer.param_groups[-1]["lr"]


def _missing_weights(name: str, filename: str, cache_dir: str) -> RuntimeError:
    return RuntimeError(
        f"No pretrained weights for {name!r} on this machine and no network to fetch them. Download {filename} "
        f"and pass weights_path=<file>, or place it in the cache dir {cache_dir}."
    )


def timm_from_cache(name: str, in_channels: int) -> nn.Module:
    """A timm model with weights from the local Hugging Face (or torch hub) cache only; never the network."""
    from huggingface_hub import constants, hf_hub_download

    cfg = timm.create_model(name, pretrained=False, num_classes=0).pretrained_cfg
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    path = None
    if hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            try:
                path = hf_hub_download(hub_id, filename, local_files_only=True)
                break
            except Exception:  # LocalEntryNotFoundError and friends: not cached
                continue
    elif url:
        candidate = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
        path = candidate if os.path.isfile(candidate) else None
    if path is None:
        where = f"model.safetensors from https://huggingface.co/{hub_id}" if hub_id else (url or "the model's source")
        cache = torch.hub.get_dir()
        if hub_id:
            cache = os.path.join(constants.HF_HUB_CACHE, "models--" + hub_id.replace("/", "--"))
        raise _missing_weights(name, where, cache)
    overlay = {"file": path}
    return timm.create_model(name, pretrained=True, num_classes=0, in_chans=in_channels, pretrained_cfg_overlay=overlay)


def torchvision_model(name: str, pretrained: bool) -> nn.Module:
    """A torchvision model; pretrained weights only from the torch hub cache."""
    from torchvision.models import get_model, get_model_weights

    weights = None
    if pretrained:
        weights = get_model_weights(name).DEFAULT
        filename = os.path.basename(weights.url)
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        path = os.path.join(cache, filename)
        if not os.path.isfile(path):
            raise _missing_weights(TV_PREFIX + name, weights.url, cache)
        # torchvision loads the cached file with weights_only=False, and torch hub checks its hash only on download.
        # A file that loads with weights_only=True holds nothing but tensors and containers, so loading it either
        # way runs no code.
        load_file(path, "plain state dict", f"Delete it and put the file from {weights.url} there.")
    return get_model(name, weights=weights)


def _strip_last_linear(model: nn.Module) -> int:
    """Replace the last ``nn.Linear`` (the classifier) by Identity; returns its input features."""
    linears = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    name, last = linears[-1]
    model.set_submodule(name, nn.Identity())
    return last.in_features


def load_weights_file(model: nn.Module, weights_path: str) -> None:
    state = load_file(weights_path, "weights file")
    state = state.get("state_dict", state)
    missing, _ = model.load_state_dict(state, strict=False)  # the old classifier's keys are expected extras
    if missing:
        raise ValueError(f"{weights_path} lacks {len(missing)} backbone tensors, e.g. {missing[:3]}")


class Backbone(ImageClassifier):
    """A timm or torchvision model with a new linear head, trained by one of five transfer strategies.

    Args:
        num_classes: number of output classes.
        in_channels: image channels (torchvision backbones need 3).
        img_size: nominal input size (for summaries and export); any size the backbone accepts works.
        backbone: timm model name, or ``"tv:<name>"`` for torchvision.
        pretrained: load pretrained weights (``weights_path`` or the local cache; never the network).
        weights_path: a ``torch.save``-d state dict of the backbone (optionally under ``"state_dict"``).
        strategy: ``"full"``, ``"linear_probe"``, ``"partial"``, ``"discriminative"`` or ``"gradual"``.
        unfreeze_last: stages that train with ``partial``.
        lr_decay: lr factor per stage away from the head with ``discriminative``.
        unfreeze_at_epoch: epoch at which ``gradual`` unfreezes the backbone.
        **task_args: loss, optimizer and schedule, see :class:`~zoo.tasks.ImageClassifier`.

    >>> model = Backbone(num_classes=3, backbone="resnet18", strategy="linear_probe")
    >>> model(torch.zeros(1, 3, 32, 32)).shape, len(model.stage_names)
    (torch.Size([1, 3]), 5)
    """

    fixed_input_size = False

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 224,
        backbone: str = "resnet18",
        pretrained: bool = False,
        weights_path: str | None = None,
        strategy: Strategy = "full",
        unfreeze_last: int = 1,
        lr_decay: float = 0.5,
        unfreeze_at_epoch: int = 1,
        **task_args: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, img_size=img_size, **task_args)
        if strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
        if not 0 < lr_decay <= 1 or unfreeze_last < 0 or unfreeze_at_epoch < 0:
            raise ValueError("lr_decay must be in (0, 1], unfreeze_last and unfreeze_at_epoch >= 0")
        from_cache = pretrained and weights_path is None
        if backbone.startswith(TV_PREFIX):
            if in_channels != 3:
                raise ValueError(f"torchvision backbones take 3 channels, got in_channels={in_channels}")
            self.backbone = torchvision_model(backbone[len(TV_PREFIX) :], from_cache)
            self.num_features = _strip_last_linear(self.backbone)
        elif from_cache:
            self.backbone = timm_from_cache(backbone, in_channels)
            self.num_features = self.backbone.num_features
        else:
            self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_channels)
            self.num_features = self.backbone.num_features
        if pretrained and weights_path is not None:
            load_weights_file(self.backbone, weights_path)
        self.head = nn.Linear(self.num_features, num_classes)
        #: Parameter names (``backbone.``-prefixed) of each stage, stem first; the head is not a stage.
        self.stage_names = self._find_stages()
        if strategy == "partial" and unfreeze_last > len(self.stage_names):
            raise ValueError(f"unfreeze_last={unfreeze_last} but {backbone} has {len(self.stage_names)} stages")
        if strategy == "linear_probe":
            self.backbone.requires_grad_(False)
        elif strategy == "partial":
            self.backbone.requires_grad_(False)
            frozen = len(self.stage_names) - unfreeze_last
            trainable = {name for stage in self.stage_names[frozen:] for name in stage}
            for name, param in self.named_parameters():
                if name in trainable:
                    param.requires_grad_(True)
        self.train(self.training)  # frozen BatchNorm layers start in eval mode

    def _find_stages(self) -> list[list[str]]:
        if hasattr(self.backbone, "group_matcher"):
            from timm.models import group_parameters

            groups = group_parameters(self.backbone, self.backbone.group_matcher(coarse=True))
            stages = [groups[key] for key in sorted(groups)]
        else:
            stages = [
                [f"{child}.{name}" for name, _ in module.named_parameters()]
                for child, module in self.backbone.named_children()
                if any(True for _ in module.parameters())
            ]
        return [[f"backbone.{name}" for name in stage] for stage in stages if stage]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)  # (B, C, H, W) -> (B, num_features), pooled by the backbone

    def train(self, mode: bool = True) -> Backbone:
        """Set the training mode; BatchNorm layers whose parameters are all frozen stay in eval mode."""
        super().train(mode)
        if mode:
            for module in self.backbone.modules():
                params = list(module.parameters(recurse=False))
                if isinstance(module, _BatchNorm) and params and not any(p.requires_grad for p in params):
                    module.eval()
        return self

    def on_train_epoch_start(self) -> None:
        # Runs after the callbacks' hook of the same name: re-applies the BatchNorm modes once `gradual` unfreezes.
        self.train(True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        # The checkpoint holds every weight, so rebuilding it (load_from_checkpoint, or a CLI `test --ckpt_path`,
        # which reads these hyperparameters) must not need the pretrained file or cache it came from.
        checkpoint["hyper_parameters"] = {**checkpoint["hyper_parameters"], "pretrained": False, "weights_path": None}

    def configure_callbacks(self) -> list[Callback]:
        if self.hparams.strategy != "gradual":
            return []
        trainer = self._trainer
        if trainer is not None and any(isinstance(cb, BaseFinetuning) for cb in trainer.callbacks):
            return []  # the user's finetuning callback wins
        return [_GradualUnfreeze(unfreeze_backbone_at_epoch=self.hparams.unfreeze_at_epoch)]

    def no_weight_decay(self) -> set[str]:
        """The backbone's own no-weight-decay names (e.g. a ViT's ``pos_embed``), as this module names them."""
        names = self.backbone.no_weight_decay() if hasattr(self.backbone, "no_weight_decay") else ()
        return {f"backbone.{name}" for name in names}

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """With ``discriminative``: groups with ``lr = lr * lr_decay ** distance`` from the head, split by weight
        decay (the task base's schedule then scales each group's own lr); otherwise the task base's groups."""
        hp = self.hparams
        if hp.strategy != "discriminative":
            return super().optimizer_param_groups()
        skip = self.no_weight_decay()
        distance = {name: len(self.stage_names) - k for k, stage in enumerate(self.stage_names) for name in stage}
        buckets: dict[tuple[int, bool], list[nn.Parameter]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            no_decay = param.ndim <= 1 or name.endswith(".bias") or name in skip
            buckets.setdefault((distance.get(name, 0), no_decay), []).append(param)
        return [
            {"params": params, "lr": hp.lr * hp.lr_decay**dist, "weight_decay": 0.0 if no_decay else hp.weight_decay}
            for (dist, no_decay), params in sorted(buckets.items())
        ]


@register_model(
    Backbone,
    input_size=(3, 224, 224),
    num_params=11_689_512,
    source="timm resnet18 under a new head, discriminative lrs (Howard & Ruder, 2018)",
    tags=("transfer",),
)
def resnet18_finetune() -> dict[str, Any]:
    """timm ResNet-18 backbone with a 1000-class head; every stage trains at lr * 0.5 ** distance from the head."""
    return dict(num_classes=1000, img_size=224, backbone="resnet18", strategy="discriminative", lr_decay=0.5)


@register_model(
    Backbone,
    input_size=(3, 224, 224),
    num_params=11_689_512,
    source="torchvision resnet18 under a new head, last two stages trained",
    tags=("transfer",),
)
def tv_resnet18_finetune() -> dict[str, Any]:
    """torchvision ResNet-18 backbone with a 1000-class head; only layer3, layer4 and the head train."""
    return dict(num_classes=1000, img_size=224, backbone="tv:resnet18", strategy="partial", unfreeze_last=2)
