"""Push a trained SAE folder to the Hugging Face Hub in SAELens's layout (plus evals and latent index).

    python scripts/push_to_hub.py --sae-dir runs/demo --repo me/demo-saes --dry-run /tmp/staged
    HF_TOKEN=hf_... python scripts/push_to_hub.py --sae-dir runs/qwen3 --repo me/qwen3-8b-saes

The repo gets ``<sae_id>/{cfg.json, sae_weights.safetensors, sparsity.safetensors, runner_cfg.json,
evals.json, latent index files}`` and a model card, so ``SAE.from_pretrained("me/repo", "<sae_id>")``
and ``LATENT_LAB_SAE=me/repo:<sae_id>`` load it. The token is read from HF_TOKEN only and never printed.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from simple_parsing import ArgumentParser, DashVariant

from sae_lib.errors import InputError, LatentLabError
from sae_lib.push import check_sae_folder, push_staged, stage_upload, token_from_env


@dataclass
class PushArgs:
    """Upload an SAE folder written by train_sae.py to a Hub model repo."""

    sae_dir: Path
    """The SAE folder (train_sae.py's --out): cfg.json + sae_weights.safetensors, optionally more."""
    repo: str
    """Target Hub repo, user/repo or org/repo (created if missing)."""
    sae_id: str | None = None
    """Folder name inside the repo (default: the SAE's hook name, e.g. blocks.28.hook_mlp_out)."""
    revision: str = "main"
    """Branch to push to (created if missing)."""
    private: bool = False
    """Create the repo as private when it does not exist yet."""
    dry_run: Path | None = None
    """Write exactly what would be uploaded into this folder and upload nothing (no token needed)."""


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0],
                            add_option_string_dash_variants=DashVariant.UNDERSCORE_AND_DASH)
    parser.add_arguments(PushArgs, dest="args")
    args: PushArgs = parser.parse_args(argv).args
    token: str | None = None
    try:
        check_sae_folder(args.sae_dir)
        if args.dry_run is not None:
            if Path(args.dry_run).exists() and not Path(args.dry_run).is_dir():
                raise InputError(f"--dry-run {args.dry_run} is a file: give an empty or new folder to stage the upload in.")
            target = stage_upload(args.sae_dir, args.repo, args.sae_id, args.dry_run)
            print(f"dry run: wrote what would be uploaded to {args.repo} into {args.dry_run}")
            for path in sorted(p for p in Path(args.dry_run).rglob("*") if p.is_file()):
                print(f"  {path.relative_to(args.dry_run)}")
            print(f'load it with: SAE.load_from_disk("{target}")')
            return 0
        token = token_from_env()
        with tempfile.TemporaryDirectory() as tmp:
            target = stage_upload(args.sae_dir, args.repo, args.sae_id, Path(tmp))
            url = push_staged(Path(tmp), args.repo, token, revision=args.revision, private=args.private,
                              sae_id=target.name)
    except LatentLabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a Hub error: say what failed, never the token
        message = f"error: the upload to {args.repo} failed: {type(err).__name__}: {err}"
        print(message.replace(token, "***") if token else message, file=sys.stderr)
        return 1
    print(f"pushed {target.name} to https://huggingface.co/{args.repo} ({url})")
    print(f"load it with: SAE.from_pretrained(\"{args.repo}\", \"{target.name}\") or LATENT_LAB_SAE={args.repo}:{target.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
