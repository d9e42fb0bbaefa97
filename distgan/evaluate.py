"""The evaluator: a classifier distgan trains itself, and the metrics computed in its feature space.

    python -m distgan.evaluate fit --dataset mnist              # train (or find) it; prints test accuracy
    python -m distgan.evaluate --checkpoint runs/NAME           # FID / IS / coverage / precision / recall
    python -m distgan.evaluate --samples samples.npz            # the same for saved uint8 images

The classifier (``distgan.models.classifier``) is fitted on the training set from a fixed recipe and seed
with a fixed thread count, so it is reproducible, and cached as ``ROOT/evaluators/<dataset>-<hash>``
(safetensors) where the hash covers the recipe, the architecture and the data files' sha256: change any
of them and a new evaluator is made, never a stale one used. The real images' features and Gaussian
(the test split) are cached next to it. Every metric takes uint8 images, so real and generated images
pass through the same quantisation.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from distgan import data, metrics
from distgan.dist import on_main
from distgan.errors import DistganError, EvaluatorError
from distgan.files import write_atomic
from distgan.images import generate
from distgan.models.classifier import Classifier
from distgan.rng import stream_seed

ARCH = "classifier-v1"  # bump when models/classifier.py changes: old caches then stop matching


@dataclass(frozen=True)
class Recipe:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    width: int = 32
    features: int = 128
    dropout: float = 0.25
    threads: int = 2
    """Fitting always uses this many CPU threads: the same weights on every machine with this torch."""


RECIPES = {
    "mnist": Recipe(),
    "fashion_mnist": Recipe(epochs=6),
    "synthetic": Recipe(epochs=4, batch_size=64),
}


def identity(dataset: str, recipe: Recipe) -> dict:
    """Everything that decides the evaluator's weights."""
    files = (
        {name: spec.sha256 for name, spec in data.DATASETS[dataset].files.items()}
        if dataset in data.DATASETS
        else {"generator": f"synthetic-{data.SYNTHETIC_SIZES}"}
    )
    return {"arch": ARCH, "dataset": dataset, "recipe": dataclasses.asdict(recipe), "data": files}


def cache_path(root: str | Path, dataset: str, recipe: Recipe | None = None) -> Path:
    ident = identity(dataset, recipe or RECIPES[dataset])
    digest = hashlib.blake2b(json.dumps(ident, sort_keys=True).encode(), digest_size=6).hexdigest()
    return Path(root) / "evaluators" / f"{dataset}-{digest}.safetensors"


def _scale(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [-1, 1]."""
    return images.unsqueeze(1).float().div(127.5).sub(1.0)


class Evaluator:
    def __init__(self, net: Classifier, info: dict, path: Path):
        self.net, self.info, self.path = net.eval().requires_grad_(False), info, path
        self.dataset = info["identity"]["dataset"]

    @torch.no_grad()
    def run(self, images: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, 28, 28) -> (features (N, F), logits (N, classes)), float32, on images' device."""
        device = next(self.net.parameters()).device
        outs = [self.net(_scale(chunk.to(device))) for chunk in images.split(batch)]
        return torch.cat([f for f, _ in outs]).float(), torch.cat([lg for _, lg in outs]).float()

    def to(self, device: torch.device | str) -> Evaluator:
        self.net.to(device)
        return self


def accuracy(net: Classifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    was = net.training
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(_scale(x))[1] for x in images.split(1000)])
    net.train(was)
    return float((logits.argmax(1) == labels.long()).double().mean())


def fit(dataset: str, root: str | Path, recipe: Recipe | None = None, log=print) -> Evaluator:
    """Train the classifier from its recipe, check it on the test split, cache it atomically."""
    recipe = recipe or RECIPES[dataset]
    data.prepare(dataset, root, log=log)
    x_train, y_train = data.load_split(dataset, root, train=True)
    x_test, y_test = data.load_split(dataset, root, train=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG state is left as it was
        try:
            t0 = time.perf_counter()
            torch.manual_seed(stream_seed("evaluator", dataset, recipe.seed))
            net = Classifier(recipe.width, recipe.features, dropout=recipe.dropout)
            opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
            steps = recipe.epochs * (len(x_train) // recipe.batch_size)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)  # linear decay to 0
            order = torch.Generator().manual_seed(stream_seed("evaluator-order", dataset, recipe.seed))
            net.train()
            for epoch in range(recipe.epochs):
                perm = torch.randperm(len(x_train), generator=order)
                for i in range(len(x_train) // recipe.batch_size):
                    idx = perm[i * recipe.batch_size : (i + 1) * recipe.batch_size]
                    loss = torch.nn.functional.cross_entropy(net(_scale(x_train[idx]))[1], y_train[idx].long())
                    opt.zero_grad(set_to_none=True)
                    loss.backward()  # a plain one-process CPU loop: no launcher, no precision policy, no DDP
                    opt.step()
                    sched.step()
                log(f"evaluator {dataset}: epoch {epoch + 1}/{recipe.epochs}, loss {loss.item():.4f}")
            seconds = time.perf_counter() - t0
            test_acc = accuracy(net, x_test, y_test)
        finally:
            torch.set_num_threads(threads)
    path = cache_path(root, dataset, recipe)
    info = {
        "identity": identity(dataset, recipe),
        "test_accuracy": test_acc,
        "fit_seconds": round(seconds, 1),
        "torch": torch.__version__,
    }
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    write_atomic(path, save(tensors, metadata={"info": json.dumps(info)}))
    log(f"evaluator {dataset}: test accuracy {100 * test_acc:.2f}% after {seconds:.0f} s; cached at {path}")
    return Evaluator(net, info, path)


def load(dataset: str, root: str | Path, fit_if_missing: bool = False, log=print) -> Evaluator:
    """The cached evaluator of ``dataset`` (fitted first when asked and missing)."""
    recipe = RECIPES[dataset]
    path = cache_path(root, dataset, recipe)
    if not path.is_file():
        if fit_if_missing:
            log(
                f"evaluator {dataset}: none cached at {path}; fitting it now, once (about 2.5 minutes on 2 CPU cores), "
                "then every evaluation reuses it"
            )
            return fit(dataset, root, recipe, log)
        raise EvaluatorError(
            f"no evaluator for {dataset} at {path}: run python -m distgan.evaluate fit --dataset "
            f"{dataset} --root {root}"
        )
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {})["info"])
        tensors = load_file(str(path))
        net = Classifier(recipe.width, recipe.features, dropout=recipe.dropout)
        net.load_state_dict(tensors)
    except Exception as e:  # noqa: BLE001 (truncated file, foreign file, missing metadata: all mean refit)
        raise EvaluatorError(
            f"{path} is not a usable evaluator ({e}); delete it and run "
            f"python -m distgan.evaluate fit --dataset {dataset}"
        ) from None
    return Evaluator(net, info, path)


# --------------------------------------------------------------------------- real-data reference


@dataclass
class Reference:
    """The real test images in feature space: features for precision/recall, their Gaussian for FID."""

    features: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor

    def to(self, device) -> Reference:
        return Reference(self.features.to(device), self.mu, self.sigma)


def reference(evaluator: Evaluator, root: str | Path) -> Reference:
    """The test split's features and Gaussian, cached next to the evaluator."""
    path = evaluator.path.with_name(evaluator.path.stem + "-test.safetensors")
    if path.is_file():
        try:
            t = load_file(str(path))
            return Reference(t["features"], t["mu"], t["sigma"])
        except Exception:  # noqa: BLE001 (a damaged cache is recomputed)
            path.unlink(missing_ok=True)
    x_test, _ = data.load_split(evaluator.dataset, root, train=False)
    features, _ = evaluator.run(x_test)
    features = features.cpu()
    mu, sigma = metrics.gaussian(features)
    write_atomic(path, save({"features": features.contiguous(), "mu": mu, "sigma": sigma}))
    return Reference(features, mu, sigma)


def score(evaluator: Evaluator, ref: Reference, images: torch.Tensor, k: int = 3) -> dict:
    """All metrics of uint8 images (N, 28, 28) against the real test split."""
    features, logits = evaluator.run(images)
    return metrics.all_metrics(ref.features, (ref.mu, ref.sigma), features.cpu(), logits.cpu(), k)


def floor(evaluator: Evaluator, root: str | Path, n: int = 10_000) -> dict:
    """The metrics of n real training images against the test split: the best a generator can hope for."""
    x_train, _ = data.load_split(evaluator.dataset, root, train=True)
    return score(evaluator, reference(evaluator, root), x_train[:n])


# --------------------------------------------------------------------------- generated samples


def for_training(cfg, accelerator) -> tuple[Evaluator | None, Reference | None]:
    """A run's evaluator (fitted once and cached by the main process; every rank scores its share of the
    samples) and, on the main process, the real data's statistics. (None, None) for a run that never
    evaluates. Collective."""
    if not cfg.eval.every_epochs:
        return None, None
    dataset, root = cfg.data.dataset, cfg.data.root

    def find_evaluator() -> None:
        reference(load(dataset, root, fit_if_missing=True, log=accelerator.print), root)  # caches both

    on_main(accelerator, find_evaluator)
    with accelerator.local_main_process_first():  # several machines without a shared data.root
        evaluator = load(dataset, root, fit_if_missing=True, log=accelerator.print)
    evaluator.to(accelerator.device)
    ref = reference(evaluator, root).to(accelerator.device) if accelerator.is_main_process else None
    return evaluator, ref


def eval_noise(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """The evaluation noise: one fixed set per (n, z_dim, seed), drawn on the CPU (world-size independent)."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(stream_seed("eval_z", seed)))


def score_generator(
    G, z_dim: int, evaluator: Evaluator, ref: Reference, n: int, seed: int, k: int = 3, accelerator=None
) -> dict | None:
    """Metrics of n samples of G. Under accelerate each rank generates and classifies its share of the
    fixed noise and the main process gathers them (collective: call on every rank); returns the metrics
    on the main process, None elsewhere."""
    t0 = time.perf_counter()
    z = eval_noise(n, z_dim, seed)
    world = accelerator.num_processes if accelerator is not None else 1
    rank = accelerator.process_index if accelerator is not None else 0
    per_rank = math.ceil(n / world)
    mine = z[rank * per_rank : (rank + 1) * per_rank]
    features, logits = evaluator.run(generate(G, mine).to(next(evaluator.net.parameters()).device))
    if accelerator is not None and world > 1:
        pad = per_rank - len(mine)  # the last rank may hold fewer: pad, gather, drop the padding
        features = torch.nn.functional.pad(features, (0, 0, 0, pad))
        logits = torch.nn.functional.pad(logits, (0, 0, 0, pad))
        features, logits = accelerator.gather(features)[:n], accelerator.gather(logits)[:n]
        if not accelerator.is_main_process:
            return None
    result = metrics.all_metrics(ref.features, (ref.mu, ref.sigma), features.cpu(), logits.cpu(), k)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


# --------------------------------------------------------------------------- command line


def format_metrics(m: dict) -> str:
    shares = " ".join(f"{100 * s:.1f}" for s in m["class_shares"])
    return (
        f"FID {m['fid']:.3f}  KID {m['kid']:.4f} ± {m['kid_std']:.4f}  IS {m['is']:.3f}  classes covered {m['classes_covered']}/{len(m['class_shares'])}  "
        f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  (n={m['samples']})\n"
        f"class shares %: {shares}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fit"]:
        p = argparse.ArgumentParser(
            prog="python -m distgan.evaluate fit",
            description="Fit (or find) the evaluator: the classifier behind FID / IS / coverage / precision / recall. "
            "The first call trains it (about 2.5 minutes on 2 CPU cores) and writes it to ROOT/evaluators/; "
            "later calls find it in a second. Prints its test accuracy and the real data's own scores.",
        )
        p.add_argument("--dataset", choices=data.NAMES, default="mnist")
        p.add_argument("--root", default="data")
        p.add_argument("--force", action="store_true", help="refit even if a cached evaluator matches")
        args = p.parse_args(argv[1:])
        try:
            ev = fit(args.dataset, args.root) if args.force else load(args.dataset, args.root, fit_if_missing=True)
        except DistganError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        print(f"evaluator {ev.path}: test accuracy {100 * ev.info['test_accuracy']:.2f}%")
        print("real-data floor (10k training images against the test split):")
        print(format_metrics(floor(ev, args.root)))
        return 0

    p = argparse.ArgumentParser(
        prog="python -m distgan.evaluate",
        description="Score a checkpoint's G or saved images: FID, KID, IS, classes covered, precision / recall. "
        "Prints them; writes them as JSON with --out, nothing else. Needs the evaluator: `python -m distgan.evaluate fit` makes it (the first "
        "scoring does so itself: about 2.5 minutes on 2 CPU cores, once); then a 10k-sample score takes seconds.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="run folder, checkpoint folder or model.safetensors")
    src.add_argument("--samples", help=".npz with key 'images': uint8 (N, 28, 28)")
    p.add_argument("--dataset", choices=data.NAMES, help="with --samples (default mnist); a checkpoint knows its own")
    p.add_argument("--root", help="data root (default: the run's data.root, or data)")
    p.add_argument("--num", type=int, default=10_000, help="samples to generate from a checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation noise")
    p.add_argument("--no-ema", action="store_true", help="score the raw G even where the run kept an EMA")
    p.add_argument("--k", type=int, default=3, help="neighbours of the precision/recall manifolds")
    p.add_argument("--out", help="also write the metrics as JSON here")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    from distgan import cli
    from distgan.sample import load_generator

    try:
        if args.k < 1:
            raise cli.InputError(f"--k must be >= 1 (neighbours of the precision/recall manifolds), got {args.k}")
        if args.checkpoint:
            cli.count(args.num, least=args.k + 1)
        out = cli.output(args.out, (".json",)) if args.out else None
        dev = cli.device(args.device)
        if args.checkpoint:
            G, cfg = load_generator(args.checkpoint, dev, use_ema=not args.no_ema)
            dataset, root = cfg.data.dataset, args.root or cfg.data.root
            if cfg.train.threads:
                torch.set_num_threads(cfg.train.threads)
        else:
            dataset, root = args.dataset or "mnist", args.root or "data"
            images = torch.from_numpy(cli.read_images(args.samples, least=args.k + 1))
        ev = load(dataset, root, fit_if_missing=True).to(dev)
        ref = reference(ev, root)
        if args.checkpoint:
            result = score_generator(G, cfg.model.z_dim, ev, ref, args.num, args.seed, args.k)
        else:
            result = score(ev, ref, images, args.k)
    except DistganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_metrics(result))
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(out, json.dumps(result, indent=2) + "\n")
        except OSError as e:
            print(f"error: cannot write {out} ({e.strerror or e}); choose another --out", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
