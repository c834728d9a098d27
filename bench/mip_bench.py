"""Time (median of 15 after 3 warm-up) of the CPU backend: plain bilinear vs mip-mapped lookup
(pyramid build included, and with prebuilt levels), forward and forward+backward;
224x224 px, B=1, 1024x1024x3 float32 texture, uv over a perspective quad."""
import statistics, sys, time
sys.path.insert(0, "tests")
import torch, nl3dmm
from test_mipmap import _checkerboard_plane
torch.manual_seed(0)
_, uv, uv_da, _ = _checkerboard_plane(224, 4)
tex = torch.rand(1, 1024, 1024, 3)
levels = nl3dmm.mip_levels(tex)
def t(fn, n=15):
    for _ in range(3): fn()
    xs = []
    for _ in range(n):
        s = time.perf_counter(); fn(); xs.append(time.perf_counter() - s)
    return statistics.median(xs) * 1e3, min(xs) * 1e3
def fb(**kw):
    tx = tex.clone().requires_grad_(True); u = uv.clone().requires_grad_(True)
    def run():
        out = nl3dmm.sample_texture(tx, u, **kw); out.sum().backward()
    return run
cases = {
  "plain forward": lambda: nl3dmm.sample_texture(tex, uv),
  "mip forward (builds pyramid)": lambda: nl3dmm.sample_texture(tex, uv, uv_da=uv_da),
  "mip forward (prebuilt levels)": lambda: nl3dmm.sample_texture(tex, uv, uv_da=uv_da, mip=levels),
  "mip_levels only": lambda: nl3dmm.mip_levels(tex),
  "interpolate_derivatives (2 ch)": None,
  "plain fwd+bwd": fb(),
  "mip fwd+bwd (pyramid in graph)": fb(uv_da=uv_da),
}
pos = torch.tensor([[[-1.0, -1.0, 0, 1], [1, -1, 0, 1], [-2.5, 2.5, 0, 2.5], [2.5, 2.5, 0, 2.5]]])
tri = torch.tensor([[0, 1, 3], [0, 3, 2]], dtype=torch.int32)
rast = nl3dmm.rasterize(pos, tri, (224, 224))
attr = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
cases["interpolate_derivatives (2 ch)"] = lambda: nl3dmm.interpolate_derivatives(attr, rast, tri, pos)
print(f"threads={nl3dmm.render.num_threads()}")
for name, fn in cases.items():
    med, best = t(fn)
    print(f"{name:36s} median {med:8.2f} ms  best {best:8.2f} ms")
