"""Train a JumpReLU SAE with SAELens: a preset plus any overrides, resumable, evals at the end.

    python scripts/train_sae.py --preset demo --out runs/demo                 # ~1 minute on CPU
    python scripts/train_sae.py --preset qwen3-8b --out runs/qwen3 --wandb-project my-saes
    python scripts/train_sae.py --preset qwen3-8b --out runs/qwen3 --resume  # after a kill / preemption
    python scripts/train_sae.py --preset qwen3-8b --help                     # every setting, this preset's values

Every field of SAELens's LanguageModelSAERunnerConfig is a flag (``--lr 1e-4``), the SAE's fields are
``--sae.<field>`` and W&B's are ``--logger.<field>``; values are plain text, ``none``, ``true``/``false``
or JSON for dicts and tuples. Ctrl-C or SIGTERM saves a checkpoint at the next step; ``--resume``
continues from the latest complete checkpoint with the run's saved settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from sae_lib.errors import LatentLabError  # noqa: E402
from sae_lib.training import (  # noqa: E402
    PRESETS,
    TrainingInterrupted,
    TrainJob,
    config_fields,
    get_preset,
    parse_field_value,
    train,
)

_JOB_HELP = {f.name: (f.metadata.get("help") or "") for f in dataclasses.fields(TrainJob)}


def _field_type(tp):
    def convert(text: str):
        try:
            return parse_field_value(tp, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{text!r}: {err}") from None
    convert.__name__ = getattr(tp, "__name__", str(tp))  # argparse names the type in its errors
    return convert


def build_parser(preset_name: str) -> argparse.ArgumentParser:
    """The full parser, with ``preset_name``'s values shown as the defaults."""
    preset = get_preset(preset_name)
    parser = argparse.ArgumentParser(
        prog="train_sae.py",
        usage="%(prog)s [--preset NAME] --out DIR [--resume] [--FIELD VALUE ...]",
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job = parser.add_argument_group("run")
    job.add_argument("--preset", default=preset_name, choices=sorted(PRESETS),
                     help="Starting settings: " + "; ".join(f"{p.name}: {p.summary}" for p in PRESETS.values())
                     + " (default: demo)")
    job.add_argument("--out", type=Path, help="Output folder: the SAE in SAELens's layout, evals.json, checkpoints/. Required.")
    job.add_argument("--model", default=None,
                     help="Model to load with sae_lib.model.load_model (a TransformerLens/Hub name or a local "
                          f"Hugging Face folder). Default: {preset.model or 'the embedded demo model (built if missing)'}.")
    job.add_argument("--model-dtype", default=None, help="Model weights dtype (default: the loader's, bfloat16 on GPU, float32 on CPU).")
    job.add_argument("--wandb-project", default=None, help="Log to this Weights & Biases project (default: no W&B).")
    job.add_argument("--resume", action="store_true", help="Continue the unfinished run in --out from its latest complete checkpoint.")
    job.add_argument("--overwrite", action="store_true", help="Replace a finished SAE or unfinished run already in --out.")
    job.add_argument("--no-evals", action="store_true", help="Skip SAELens's evals at the end (default: run them, save evals.json).")
    job.add_argument("--eval-batches", type=int, default=4, help="Batches of store_batch_size_prompts prompts for the final evals (default: 4).")
    job.add_argument("--demo-stories", type=int, default=6000, help="demo preset: training stories generated for the corpus (default: 6000).")
    job.add_argument("--progress-every", type=float, default=10.0, help="Seconds between progress lines (default: 10).")

    titles = {
        "runner": "training run (SAELens LanguageModelSAERunnerConfig)",
        "sae": "SAE (SAELens JumpReLUTrainingSAEConfig)",
        "logger": "W&B logging (SAELens LoggingConfig; only with --wandb-project)",
    }
    groups = {g: parser.add_argument_group(t) for g, t in titles.items()}
    for f in config_fields(preset):
        default = "required" if f.default is dataclasses.MISSING else repr(f.default)
        groups[f.group].add_argument(
            f"--{f.flag}", dest=f"cfg:{f.flag}", type=_field_type(f.type), default=argparse.SUPPRESS,
            metavar="V", help=f"{f.help} (default: {default})".replace("%", "%%"),
        )
    return parser


def parse_args(argv: list[str] | None) -> TrainJob:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default="demo")
    known, _ = pre.parse_known_args(argv)
    parser = build_parser(known.preset)
    ns = vars(parser.parse_args(argv))
    if ns["out"] is None:
        parser.error("--out is required: the folder to write the SAE into.")
    overrides = {key.removeprefix("cfg:"): value for key, value in ns.items() if key.startswith("cfg:")}
    return TrainJob(
        preset=ns["preset"], out=ns["out"], overrides=overrides, model=ns["model"], model_dtype=ns["model_dtype"],
        wandb_project=ns["wandb_project"], resume=ns["resume"], overwrite=ns["overwrite"], evals=not ns["no_evals"],
        eval_batches=ns["eval_batches"], demo_stories=ns["demo_stories"], progress_every_s=ns["progress_every"],
    )


def main(argv: list[str] | None = None) -> int:
    try:
        job = parse_args(argv)
        result = train(job, log=lambda line: print(line, flush=True))
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
