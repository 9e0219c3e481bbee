"""Train an SAE with SAELens: a preset plus any overrides, resumable, evals at the end.

    python scripts/train_sae.py --preset demo --out runs/demo                  # ~2 minutes on CPU
    python scripts/train_sae.py --preset qwen3-8b --out runs/qwen3 --logger.log_to_wandb true --logger.wandb_project my-saes
    python scripts/train_sae.py --preset qwen3-8b --out runs/qwen3 --resume   # after a kill / preemption
    python scripts/train_sae.py --preset qwen3-8b --architecture topk --help  # every setting, this preset's values

Every field of SAELens's LanguageModelSAERunnerConfig is a flag (``--lr 1e-4``), the SAE's fields are
``--sae.<field>`` and W&B's ``--logger.<field>``, parsed by simple_parsing from SAELens's own
dataclasses as SAELens's CLI does, so the help texts are SAELens's. Ctrl-C or SIGTERM saves a
checkpoint at the next step; ``--resume`` continues from the latest complete checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from sae_lens import LanguageModelSAERunnerConfig
from simple_parsing import ArgumentGenerationMode, ArgumentParser, DashVariant, NestedMode

from sae_lib.demo.config import DEMO_MODEL_NAME
from sae_lib.errors import InputError, LatentLabError
from sae_lib.training import (
    ARCHITECTURES,
    PRESETS,
    TrainingInterrupted,
    TrainJob,
    preset_config,
    preset_summary,
    saelens_settings,
    train,
)

_SET_BY_THE_JOB = ("output_path", "checkpoint_path", "resume_from_checkpoint")
"""Runner fields that --out and --resume set; giving them as flags is refused."""


class _DocstringHelpParser(ArgumentParser):
    """simple_parsing's parser with SAELens's fields documented only by their class docstrings' ``Args:``,
    not by source comments (as SAELens's CLI, ``sae_lens.llm_sae_training_runner._parse_cfg_args``,
    does: its comments are notes, not help). TrainJob keeps its field docstrings."""

    def _resolve_subgroups(self, wrappers, args, namespace=None):
        resolved, chosen = super()._resolve_subgroups(wrappers, args, namespace)
        for root in resolved:
            for wrapper in [root, *root.descendants]:
                if wrapper.dataclass is TrainJob:
                    continue
                for f in wrapper.fields:
                    f._docstring = dataclasses.replace(f._docstring, comment_above="", comment_inline="", docstring_below="")
        return resolved, chosen


def _config_class(cfg: LanguageModelSAERunnerConfig[Any]) -> type:
    # SAELens types ``sae`` as the abstract TrainingSAEConfig; the parser needs the concrete class to
    # make its fields flags (SAELens's CLI builds the same subclass with make_dataclass).
    config_class = dataclasses.make_dataclass(
        "TrainingRunConfig", [("sae", type(cfg.sae), dataclasses.field(default=None))], bases=(type(cfg),)
    )
    config_class.__doc__ = (f"SAELens's LanguageModelSAERunnerConfig; the SAE is its {type(cfg.sae).__name__} "
                            "(--sae.*), W&B its LoggingConfig (--logger.*). Defaults: the preset's values.")
    return config_class


def build_parser(preset: str, architecture: str | None) -> tuple[ArgumentParser, LanguageModelSAERunnerConfig[Any]]:
    """The parser whose defaults are ``preset``'s config (with ``architecture``'s SAE), and that config."""
    cfg = preset_config(preset, architecture)
    parser = _DocstringHelpParser(
        prog="train_sae.py",
        description=__doc__.split("\n\n")[0],
        epilog="presets: " + "; ".join(f"{name}: {preset_summary(name)}" for name in PRESETS)
        + f". architectures (SAELens's names): {', '.join(ARCHITECTURES)}; SAELens 6.54 trains no transcoders.",
        argument_generation_mode=ArgumentGenerationMode.NESTED,
        nested_mode=NestedMode.WITHOUT_ROOT,
        add_option_string_dash_variants=DashVariant.UNDERSCORE_AND_DASH,
        # parse_args tells a given flag from a default by its spelling (_given): an abbreviation
        # (--llm_dev) would be parsed yet not seen as given, and silently replaced.
        allow_abbrev=False,
    )
    parser.add_arguments(TrainJob, dest="job", default=TrainJob(preset=preset, architecture=architecture))
    config_class = _config_class(cfg)
    default = config_class(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    parser.add_arguments(config_class, dest="cfg", default=default)
    return parser, cfg


def parse_args(argv: list[str] | None) -> tuple[TrainJob, LanguageModelSAERunnerConfig[Any]]:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="demo")
    pre.add_argument("--architecture", default=None)
    known, _ = pre.parse_known_args(argv)
    parser, _ = build_parser(known.preset, known.architecture)
    with saelens_settings():  # SAELens's config checks its settings as simple_parsing builds it
        ns = parser.parse_args(argv)
    job, cfg = ns.job, ns.cfg
    given = [name for name in _SET_BY_THE_JOB if getattr(cfg, name) is not None]
    if given:
        raise InputError(f"--{given[0]} is set by --out (and --resume); pass --out DIR instead.")
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(LanguageModelSAERunnerConfig)}
    # SAELens resolves llm_device / act_store_device to ``device`` when it builds the preset, so the
    # parser's defaults hold the preset's device: unless given on the command line, they follow --device.
    for name in ("llm_device", "act_store_device"):
        if not _given(argv, name):
            values[name] = None
    if not _given(argv, "logger.run_name"):  # likewise the run name SAELens derives from lr and tokens
        values["logger"] = dataclasses.replace(cfg.logger, run_name=None)
    # Back to SAELens's own class (the parser's subclass only existed to type ``sae``).
    with saelens_settings():
        return job, LanguageModelSAERunnerConfig(**values)


def _given(argv: list[str] | None, field_name: str) -> bool:
    flags = {f"--{field_name}", f"--{field_name.replace('_', '-')}"}
    return any(arg.split("=", 1)[0] in flags for arg in (sys.argv[1:] if argv is None else argv))


def load_model_for_training(source: str, device: str | None, dtype: str | None):
    """The job's model loader: the demo's name builds (or finds) the embedded demo, anything else goes
    through ``sae_lib.model.load_model`` (local folder or Hub name, safetensors only)."""
    from sae_lib.model import load_model

    if source == DEMO_MODEL_NAME:
        from sae_lib.demo.build import ensure_demo

        source = str(ensure_demo().model)
    return load_model(source, device=device, dtype=dtype)


def main(argv: list[str] | None = None) -> int:
    try:
        job, cfg = parse_args(argv)
        if job.out is None:
            print("error: --out is required: the folder to write the SAE into.", file=sys.stderr)
            return 2
        result = train(job, cfg, load_model_for_training, log=lambda line: print(line, flush=True))
    except TrainingInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr, flush=True)
        return 130
    except LatentLabError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    print(f"done: {result.sae_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
