"""The `distgem` command: subcommands dispatch to the module that owns each job."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from distgem.errors import UserError

# subcommand -> (module with add_arguments(parser) and run(args) -> int, help)
COMMANDS = {
    "world": ("distgem.world.synthetic", "write the synthetic multilingual world (deterministic)"),
    "pretrain": ("distgem.world.pretrain", "pre-train the tiny multilingual backbone on a world"),
    "train": ("distgem.train.command", "train one run (DeepSpeed; any launcher)"),
    "export": ("distgem.tagger.export", "a Hugging Face token-classification directory from a run's checkpoint"),
    "predict": ("distgem.tagger.predict", "tag a CoNLL-U, CoNLL or text file with an exported model"),
    "report": ("distgem.report.command", "the paper's tables, t-tests and plots from a directory of runs"),
    "compare": ("distgem.report.compare", "two methods side by side on every metric, over seeds (Welch t-tests)"),
    "sweep": ("distgem.sweep", "inspect a sweep grid (list, size, resolve an array element)"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; user errors print one line and exit with code 2."""
    parser = argparse.ArgumentParser(prog="distgem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = sub.add_parser("data", help="check and prepare corpora").add_subparsers(dest="data_command", required=True)
    check = data.add_parser(
        "check", help="validate a corpus file (or parallel pair, or hf:NAME[/CONFIG]) and summarise it"
    )
    check.add_argument("path", help="a file, or hf:NAME[/CONFIG] / hf:DIR (a Hugging Face dataset)")
    check.add_argument("path2", nargs="?", help="the second file of a parallel pair")
    check.add_argument("--format", default="auto", choices=("auto", "conllu", "conll", "text", "parallel"))
    check.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    check.set_defaults(handler=_data_check)
    prepare = data.add_parser("prepare", help="tokenise and cache every corpus a config needs (before a sweep)")
    _module("distgem.data.prepare").add_arguments(prepare)
    prepare.set_defaults(handler=lambda args: _module("distgem.data.prepare").run(args))
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(module=module)
        if name == chosen:  # import only the module that runs: the others may pull in torch
            _module(module).add_arguments(command)
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "handler"):
            return args.handler(args)
        return _module(args.module).run(args)
    except UserError as err:
        print(f"distgem: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("distgem: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `distgem sweep list ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0


def _module(name: str):
    return importlib.import_module(name)


def _data_check(args) -> int:
    from distgem.data.readers import format_summary, summarise

    summary = summarise(args.path, args.path2, args.format)
    print(json.dumps(summary, ensure_ascii=False) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
