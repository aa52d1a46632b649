"""Fine-tune an ImageNet-pretrained timm ResNet-18 on any image folder: the head first, then the backbone (gradual).

Weights come from the local Hugging Face cache (``~/.cache/huggingface/hub``) or ``weights_path``; the run never
downloads them. Folder layouts: see ``datamodules/image_folder.py``.

    python -m recipes.finetune_imagefolder fit --data.data_dir data/flowers  # data/flowers/train/<class>/*.jpg
    python -m recipes.finetune_imagefolder fit --data.data_dir data/flowers --model.init_args.weights_path r18.pt
    python -m recipes.finetune_imagefolder fit --data.data_dir data/flowers --trainer.accelerator gpu \
        --trainer.devices 1 --trainer.precision bf16-mixed
    python -m recipes.finetune_imagefolder fit --data.data_dir data/flowers --trainer.strategy ddp --trainer.devices 2
    python -m recipes.finetune_imagefolder test --data.data_dir data/flowers \
        --ckpt_path logs/finetune_imagefolder/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

from collections.abc import Sequence

from recipes.cli import ZooCLI, run_recipe


def main(args: Sequence[str] | None = None) -> ZooCLI:
    """Run the recipe; ``args`` as on the command line (``None`` reads ``sys.argv``)."""
    return run_recipe(__file__, args)


if __name__ == "__main__":
    main()
