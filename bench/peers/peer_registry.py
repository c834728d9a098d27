"""Every renderer in the comparison, ours first; compare.py and test_peers.py read this list."""
from __future__ import annotations

from peer_mitsuba import Mitsuba
from peer_moderngl import ModernGL
from peer_nl3dmm import Ours, Reference
from peer_open3d import Open3D
from peer_pytorch3d import PyTorch3D
from peer_scene import Peer

OURS = Ours
PEERS: list[type[Peer]] = [Mitsuba, ModernGL, Open3D, PyTorch3D, Reference]
BY_NAME: dict[str, type[Peer]] = {p.name: p for p in [OURS, *PEERS]}

# (batch, image size) of the table, and the ops timed at each
SIZES = [(1, 224), (8, 224), (1, 512)]
OPS = ["rasterize", "textured", "forward_backward"]


def supports(peer: type[Peer], op: str) -> bool:
    return op != "forward_backward" or peer.backward


def run_op(peer: Peer, op: str) -> object:
    """One call of `op` on an adapter: what is timed."""
    return getattr(peer, op)()
