"""``distgan.train`` in float64: python -m tests.float64_train ARGS (or under accelerate launch -m).

Float32 rounding differs between 1 and N processes (a sum over 64 rows is not two sums over 32), and some
configs amplify it chaotically (v5: 1 vs 2 threads of one process end 1.5e-3 apart after 20 steps). In
float64 that rounding is 1e-16, so what remains of a 1-process vs N-process difference is the design's own.
"""

import sys

import torch

torch.set_default_dtype(torch.float64)

from distgan.train import main  # noqa: E402  (after the default dtype, so every tensor the run makes is float64)

if __name__ == "__main__":
    sys.exit(main())
