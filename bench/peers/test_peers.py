"""Our CPU renderer against other renderers on the same scene (bench/peers/README.md), as a
pytest-benchmark suite. Each case first checks that the peer computes what we do (triangle
ids, then the image or the gradients: peer_checks.py), then times it. A peer that is not
installed is skipped with the line that installs it.

    pytest bench/peers --benchmark-json=bench/results/<name>.json   # time everything
    pytest bench/peers --benchmark-disable                         # check each case once
    python bench/peers/compare.py [--load 2]                       # the interleaved A/B table

Ids read `test_peer[<op>-<peer>-B<batch>-<size>]`; the groups put every peer of one case
side by side. Not part of the default test run (pytest's testpaths is tests/).
"""
from __future__ import annotations

import time

import pytest

from peer_checks import Outputs, agreement
from peer_registry import BY_NAME, OPS, OURS, PEERS, SIZES, run_op, supports
from peer_scene import PeerScene

SLOW_CHECK_SECONDS = 2.0  # a case whose checks (about two calls) take longer gets 3 rounds, not 10

_SCENES: dict[tuple[int, int], PeerScene] = {}
_OUTPUTS: dict[tuple[str, int, int], Outputs] = {}


def _cases():
    for op in OPS:
        for peer in [OURS, *PEERS]:
            if supports(peer, op):
                for batch, size in SIZES:
                    yield pytest.param(op, peer.name, batch, size, id=f"{op}-{peer.name}-B{batch}-{size}")


def _outputs(name: str, batch: int, size: int) -> Outputs:
    key = (name, batch, size)
    if key not in _OUTPUTS:
        scene = _SCENES.setdefault((batch, size), PeerScene(batch, size))
        _OUTPUTS[key] = Outputs(BY_NAME[name](scene))
    return _OUTPUTS[key]


@pytest.mark.parametrize("op, name, batch, size", list(_cases()))
def test_peer(benchmark, op, name, batch, size):
    peer_class = BY_NAME[name]
    why = peer_class.missing()
    if why is not None:
        pytest.skip(f"{peer_class.title}: {why}. Install: {peer_class.install}")
    peer = _outputs(name, batch, size)
    base_name = "reference" if peer_class is OURS else OURS.name
    base = _outputs(base_name, batch, size)
    start = time.perf_counter()
    found = agreement(peer, base, op)
    checked_in = time.perf_counter() - start
    assert not found.failures(), f"{name} vs {base_name}, {op} B={batch} {size}px: {found.failures()}"
    benchmark.group = f"{op} B={batch} {size}x{size}"
    benchmark.extra_info.update(vars(found))
    rounds = 3 if checked_in > SLOW_CHECK_SECONDS else 10
    benchmark.pedantic(run_op, args=(peer.peer, op), rounds=rounds, iterations=1, warmup_rounds=1)
