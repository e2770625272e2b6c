"""Progress bars over an attack's optimisation steps, off unless a caller turns them on.

The attacks' loops run their steps through `steps(n, desc)`: a plain `range(n)` by default
(a sweep shows its own bars over cells; tests stay quiet), a tqdm bar (elapsed, rate and
time left) inside `shown()`, which `nopeek attack` uses around the one attack it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from tqdm.auto import tqdm

_SHOWN = [False]


@contextlib.contextmanager
def shown(on: bool = True) -> Iterator[None]:
    """Within the block, `steps` draws a bar (with `on`; nested blocks restore the outer setting)."""
    before = _SHOWN[0]
    _SHOWN[0] = on
    try:
        yield
    finally:
        _SHOWN[0] = before


def steps(n: int, desc: str) -> Iterable[int]:
    """range(n), with a bar named `desc` when progress is shown (`shown`)."""
    if not _SHOWN[0]:
        return range(n)
    return tqdm(range(n), desc=desc, leave=False, unit="step")
