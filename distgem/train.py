"""`distgem train` / `launch/train.py`: parse, build, train, close."""
from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="run config (repeatable; later files win; each may `include:` others)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                        help="override one config value, parsed to the field's type (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(config files, overrides) of a launch/train.py command line (slurm/train.sbatch reads the run dir)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    args, _ = parser.parse_known_args(argv)
    return args.config, args.overrides


def run(args: argparse.Namespace) -> int:
    from distgem import distributed
    from distgem.config import load_run_config
    from distgem.engine import Preempted, Trainer
    from distgem.yamlconf import dump_yaml

    config = load_run_config(args.config, args.overrides)
    if args.local_rank is not None:  # the deepspeed launcher passes --local_rank=N
        os.environ.setdefault("LOCAL_RANK", str(args.local_rank))
    world = distributed.init()
    code = 0
    try:
        if world.rank == 0:
            os.makedirs(config.output.run_dir, exist_ok=True)
            dump_yaml(config, os.path.join(config.output.run_dir, "config.yaml"))
        try:
            results = Trainer(config, world).train(resume=args.resume)
        except Preempted as stop:
            code = stop.exit_code
        if code == 0 and world.rank == 0:
            print(f"test average ({config.task.name}, targets): {results['test']['average']:.2f}  "
                  f"-> {config.output.run_dir}/results.json", file=sys.stderr)
    except BaseException as error:
        lost = distributed.lost_peer(error)
        distributed.shutdown(wait=False)
        if lost is None:
            raise
        # a rank died or a node was lost: one line, and no wait (the job is requeued and resumes)
        print(f"distgem: error: rank {world.rank}: a collective failed, a peer rank died or stopped answering "
              f"(timeout {distributed.collective_timeout().total_seconds():.0f} s): {lost}", file=sys.stderr)
        distributed.exit_process(1)
    distributed.shutdown()
    distributed.exit_process(code)
