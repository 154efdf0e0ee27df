"""`distgem train` / `launch/train.py`: parse, build, train, close."""

from __future__ import annotations

import argparse
import os
import sys

from distgem.config import loader

EXAMPLES = """examples:
  distgem train --config configs/tiny.yaml --config configs/methods/gem-both.yaml
  distgem train --config configs/tiny.yaml --config configs/methods/gem-xsr.yaml \\
      --set method.gem.memory_strength=0.5 --set output.run_dir=runs/gem-xsr
  deepspeed --num_gpus 8 launch/train.py --config configs/base.yaml --config configs/backbones/mbert.yaml \\
      --config configs/methods/gem-both.yaml --set train.zero_stage=2 --set data.root=/data/corpora
  distgem train --config runs/gem-xsr/config.yaml --resume        # after a preemption (exit code 75)

every setting: docs/USAGE.md ("Configuration reference"); exit codes: 0 done, 2 bad input, 3 diverged,
75 preempted (requeue)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    loader.add_arguments(parser)
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run's newest intact checkpoint (from the start when there is none)",
    )
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: continue even though the config differs from the checkpoint's",
    )
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(config files, overrides) of a launch/train.py command line (slurm/train.sbatch reads the run dir)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    return args.config, args.overrides


def run(args: argparse.Namespace) -> int:
    from distgem.train.preemption import PREEMPTION, Diverged, Preempted

    PREEMPTION.install()  # first: a signal during the slow imports and start-up still leads to a requeue
    from distgem.config.loader import dump_yaml
    from distgem.config.sections import load_run_config
    from distgem.distributed import world as distributed
    from distgem.train.engine import Trainer

    config = load_run_config(args.config, args.overrides)
    world = distributed.init(args.local_rank)
    code = 0
    try:
        if world.is_main:
            os.makedirs(config.output.run_dir, exist_ok=True)
            written = os.path.join(config.output.run_dir, "config.yaml")
            if not (args.resume and os.path.exists(written)) or args.allow_config_change:
                dump_yaml(config, written)  # a resume keeps the record of what the run was started with
        try:
            results = Trainer(config, world).train(resume=args.resume, allow_config_change=args.allow_config_change)
        except Preempted as stop:
            code = stop.exit_code
        except Diverged as stop:  # results.json says so too; one line, not a traceback
            code = stop.exit_code
            if world.is_main:
                print(f"distgem: error: {stop} -> {config.output.run_dir}/results.json", file=sys.stderr)
        if code == 0 and world.is_main:
            print(
                f"test average ({config.task.name}, targets): {results['test']['average']:.2f}  "
                f"-> {config.output.run_dir}/results.json",
                file=sys.stderr,
            )
    except BaseException as error:
        lost = distributed.lost_peer(error, world)
        distributed.shutdown(wait=False)
        if lost is None:
            raise
        # a rank died or a node was lost: one line, and no wait (the job is requeued and resumes)
        print(f"distgem: error: {lost}", file=sys.stderr)
        distributed.exit_process(1)
    distributed.shutdown()
    distributed.exit_process(code)
