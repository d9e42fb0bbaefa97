"""What the model and version tests hold the code to: D returns logits (nothing bounded after its last layer),
and the README's tables (Models; The blog's versions) read back as rows, with their figures at their own precision."""

from __future__ import annotations

import torch
from torch import nn

from tests.conftest import REPO

README = REPO / "README.md"


def readme_table(heading: str) -> list[dict[str, str]]:
    """The first Markdown table under the README's ``## heading``, one dict per row keyed by the header."""
    text = README.read_text()
    start = text.index(f"\n## {heading}\n")
    lines = text[start:].splitlines()[2:]
    section = lines[: next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))]
    rows = [line for line in section if line.startswith("|")]
    assert len(rows) > 2, f"no table under '## {heading}'"
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in rows]
    header, body = cells[0], cells[2:]
    assert all(len(row) == len(header) for row in body), f"a row of '## {heading}' has the wrong number of cells"
    return [dict(zip(header, row, strict=True)) for row in body]


def like(value: float, shown: str) -> str:
    """``value`` at the precision of the README's figure ``shown`` (as many decimals)."""
    decimals = len(shown.partition(".")[2])
    return f"{value:.{decimals}f}"


def size_as_shown(nbytes: int, shown: str) -> str:
    """Bytes in the README's words for ``shown`` ('2.47 MB', '146 KB'): the same unit (decimal, as the blog's
    '5.35 KB' / '~40 MB' are) and the same number of decimals."""
    number, unit = shown.split()
    return f"{like(nbytes / {'KB': 1e3, 'MB': 1e6}[unit], number)} {unit}"


def count_as_shown(count: int, shown: str) -> str:
    """A parameter count in the README's words for ``shown`` ('0.617M'): millions, its number of decimals."""
    assert shown.endswith("M"), shown
    return like(count / 1e6, shown[:-1]) + "M"


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def last_layer(D: nn.Module, x: torch.Tensor) -> nn.Module:
    """The last Linear / conv layer D runs on ``x`` (found by running it, not by registration order)."""
    ran: list[nn.Module] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: ran.append(m))
        for m in D.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Bilinear))
    ]
    try:
        D(x)
    finally:
        for h in hooks:
            h.remove()
    assert ran, f"{type(D).__name__} ran no Linear or conv layer"
    return ran[-1]


def assert_returns_logits(D: nn.Module, scale: float = 1e3) -> None:
    """D's output is its last layer's output, unsquashed: multiplying that layer's output by ``scale``
    multiplies D's output by ``scale`` (a sigmoid, tanh, clamp or any bounded map after it cannot), and the
    outputs then leave [-1, 2] (no probability, no bounded score)."""
    D = D.double().eval()
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    final = last_layer(D, x)
    with torch.no_grad():
        plain = D(x)
        hook = final.register_forward_hook(lambda m, i, o: o * scale)
        try:
            scaled = D(x)
        finally:
            hook.remove()
    assert plain.shape == (16,), plain.shape
    assert plain.std() > 0, "D gives every image the same output"
    torch.testing.assert_close(
        scaled, plain * scale, msg=lambda m: f"D's output is not its last layer's, unsquashed (a logit): {m}"
    )
    assert scaled.min() < -1 or scaled.max() > 2, f"D's outputs stay in [{scaled.min():.3g}, {scaled.max():.3g}]"
