"""Build the embedded default (corpus, tokenizer, tiny Qwen3 LM, JumpReLU SAE, latent index).

    python scripts/build_demo.py                 # into $LATENT_LAB_DEMO_DIR or data/demo
    python scripts/build_demo.py --out /tmp/demo --force
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from simple_parsing import ArgumentParser

from sae_lib import constants
from sae_lib.demo.build import SMALL_DEMO, DemoConfig, build_demo, ensure_demo, is_built
from sae_lib.errors import LatentLabError


@dataclass
class BuildDemoArgs:
    """Build the embedded demo model, SAE and latent index (about 3 minutes on 2 CPU cores)."""

    out: Path | None = None
    """Output folder (default: $LATENT_LAB_DEMO_DIR, else data/demo in the repository)."""
    force: bool = False
    """Rebuild even when a complete build with the same config is already there."""
    small: bool = False
    """A seconds-long build with tiny sizes: checks the pipeline, learns little. For tests."""


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_arguments(BuildDemoArgs, dest="args")
    args: BuildDemoArgs = parser.parse_args(argv).args
    out = args.out or constants.demo_dir()
    cfg: DemoConfig = SMALL_DEMO if args.small else DemoConfig()
    try:
        if args.force or not is_built(out, cfg):
            paths = build_demo(out, cfg) if args.force else ensure_demo(out, cfg)
        else:
            paths = ensure_demo(out, cfg)
            print(f"The demo in {out} is up to date (use --force to rebuild).")
    except LatentLabError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"model: {paths.model}\nsae:   {paths.sae}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
