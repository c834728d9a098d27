"""The kernels never follow an index that the Python validation cache wrongly trusts
(issue 12 item 3): writes through `.numpy()` or `.data` do not bump torch's version counter,
so a validated `tri` or raster can change behind the cache's back. The CPU kernels check every
index they follow and the backend raises a ValueError naming the problem.

Each reproducer runs in a child process, so that a segfault fails the test instead of
killing pytest.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SETUP = """
import torch, nl3dmm
pos = torch.tensor([[[-1, -1, 0, 1], [1, -1, 0, 1], [-1, 1, 0, 1.0]]])
tri = torch.tensor([[0, 1, 2]], dtype=torch.int32)
"""
REPRODUCERS = {
    "tri-after-rasterize": """
nl3dmm.rasterize(pos, tri, (8, 8))
tri.numpy()[0, 0] = 10 ** 9
nl3dmm.rasterize(pos, tri, (8, 8))
""",
    "rast-ids-before-interpolate": """
rast = nl3dmm.rasterize(pos, tri, (8, 8))
rast.numpy()[..., 3] = 1e9
nl3dmm.interpolate(torch.rand(3, 2), rast, tri)
""",
    "tri-before-interpolate": """
rast = nl3dmm.rasterize(pos, tri, (8, 8))
nl3dmm.interpolate(torch.rand(3, 2), rast, tri)
tri.numpy()[0, 2] = -7
nl3dmm.interpolate(torch.rand(3, 2), rast, tri)
""",
    "tri-before-backward": """
p = pos.clone().requires_grad_(True)
rast = nl3dmm.rasterize(p, tri, (8, 8))
tri.numpy()[0, 1] = 10 ** 6
rast.sum().backward()
""",
}
EXPECTED = {
    "tri-after-rasterize": "rasterize_forward: tri holds a vertex index outside 0..V-1",
    "rast-ids-before-interpolate": "interpolate_forward: rast[..., 3] holds a value that is not a triangle id",
    "tri-before-interpolate": "interpolate_forward: tri holds a vertex index outside 0..V-1",
    "tri-before-backward": "rasterize_backward: tri holds a vertex index outside 0..V-1",
}


@pytest.mark.parametrize("name", sorted(REPRODUCERS))
def test_bypassed_validation_gives_a_clear_error(name):
    script = SETUP + textwrap.dedent(f"""
try:
{textwrap.indent(REPRODUCERS[name].strip(), "    ")}
except ValueError as exc:
    print("ValueError:", exc)
else:
    print("no error")
""")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"child died with {done.returncode}: {done.stderr[-2000:]}"
    assert EXPECTED[name] in done.stdout, done.stdout + done.stderr
