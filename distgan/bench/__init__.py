"""Speed, side by side on one machine: ``python -m distgan.bench`` (``make bench``).

(a) batches/s of distgan's loader (uint8 images on the device, a seeded permutation cut into shards)
    against torchvision's MNIST + ToTensor + DataLoader pipeline;
(b) training img/s per config: distgan (``python -m distgan.train`` itself, whose loop calls the trainer's
    step function ``GANSteps.step``) against a plain PyTorch loop of the same models, losses and optimisers
    on the same tensors (the framework's overhead) and against the classic tutorial loop (DataLoader
    batches, two D forwards, ``.item()`` every step);
(c) distgan on 1 against 2 processes (same global batch; gloo on a CPU, NCCL on GPUs);
(d) peak memory of every process (max RSS; peak CUDA allocation on a GPU).

Every measurement runs in a fresh subprocess (clean memory figures, no warm caches shared between rivals);
rivals alternate, and each figure is the best of ``--repeats``. distgan is timed on its second epoch of a
``data.limit`` subset (the first is the warm-up, compilation included), from its own metrics.jsonl: the
same loop a user runs, epoch-end flush included. Writes ``bench.json`` and ``BENCHMARKS.md`` to ``--out``.

Layout: ``rivals`` (the loops and loaders timed: the deliberate second implementation of the GAN update
lives there, outside the library), ``measure`` (one measurement per fresh process, best of N), ``report``
(the machine and the Markdown tables), ``__main__`` (the command line and its phases).
"""
