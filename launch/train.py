#!/usr/bin/env python
"""Train one run: `deepspeed [--num_gpus N] launch/train.py --config C [--set k=v ...]`.

Also `torchrun --nproc_per_node N launch/train.py ...`, `mpirun -n N python launch/train.py ...`,
`srun python launch/train.py ...`, or plain `python launch/train.py ...` (one process).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without install

from distgem.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
