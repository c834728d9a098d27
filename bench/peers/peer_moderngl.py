"""Mesa's llvmpipe (software OpenGL 4.5) through moderngl, headless on EGL: the rasterizer a
GL pipeline would use on a machine without a GPU.

Our clip space is GL's: gl_Position is our `pos` unchanged, GL's window y = 0 is the bottom
row and glReadPixels returns that row first, which is our row 0 (clip y = -1); GL samples
pixel centres, depth-tests the smaller depth (our z/w in [-1, 1] maps to [0, 1]) and clips
depth outside [-1, 1] as we drop it. Its texture row 0 is at t = 0 and texel centres at
(j + 0.5)/W, as ours; float32 texture, GL_LINEAR without mipmaps, GL_CLAMP_TO_EDGE.

ids: gl_PrimitiveID + 1 into a 32-bit integer target (0 = empty). Textured: the uv
interpolated by GL and looked up by texture() into a float32 target. Every image of every call
uploads its positions and reads its result back, as in a fitting loop. No backward pass.
"""
from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch

from peer_scene import Peer, PeerScene

_VERTEX_IDS = """
#version 330
in vec4 in_pos;
void main() { gl_Position = in_pos; }
"""
_FRAGMENT_IDS = """
#version 330
out int id;
void main() { id = gl_PrimitiveID + 1; }
"""
_VERTEX_UV = """
#version 330
in vec4 in_pos;
in vec2 in_uv;
out vec2 uv;
void main() { gl_Position = in_pos; uv = in_uv; }
"""
_FRAGMENT_TEXTURE = """
#version 330
uniform sampler2D tex;
in vec2 uv;
out vec4 colour;
void main() { colour = vec4(texture(tex, uv).rgb, 1.0); }
"""


class ModernGL(Peer):
    name = "moderngl"
    title = "Mesa llvmpipe via moderngl"
    install = ("pip install moderngl, and Mesa's EGL + llvmpipe: "
               "apt-get install -y libegl1 libegl-mesa0 libgl1-mesa-dri")
    backward = False

    @classmethod
    def missing(cls) -> Optional[str]:
        return _probe()[0]

    @classmethod
    def version(cls) -> str:
        import moderngl
        return f"moderngl {moderngl.__version__}, {_probe()[1]}"

    def __init__(self, scene: PeerScene):
        super().__init__(scene)
        import moderngl
        ctx = self.ctx = moderngl.create_standalone_context(backend="egl")
        size = (scene.size, scene.size)
        self.positions = ctx.buffer(reserve=scene.pos.shape[1] * 16)
        uv = ctx.buffer(scene.uv.numpy().astype(np.float32).tobytes())
        index = ctx.buffer(scene.tri.numpy().astype(np.uint32).tobytes())
        ids = ctx.program(vertex_shader=_VERTEX_IDS, fragment_shader=_FRAGMENT_IDS)
        textured = ctx.program(vertex_shader=_VERTEX_UV, fragment_shader=_FRAGMENT_TEXTURE)
        self.ids_vao = ctx.vertex_array(ids, [(self.positions, "4f", "in_pos")], index, 4)
        self.textured_vao = ctx.vertex_array(
            textured, [(self.positions, "4f", "in_pos"), (uv, "2f", "in_uv")], index, 4)
        tex = scene.tex[0].numpy()
        self.texture = ctx.texture((tex.shape[1], tex.shape[0]), 3, tex.tobytes(), dtype="f4")
        self.texture.filter = (moderngl.LINEAR, moderngl.LINEAR)
        self.texture.repeat_x = self.texture.repeat_y = False
        depth = ctx.depth_renderbuffer(size)
        self.ids_fbo = ctx.framebuffer([ctx.renderbuffer(size, 1, dtype="i4")], depth)
        self.image_fbo = ctx.framebuffer([ctx.renderbuffer(size, 4, dtype="f4")], depth)
        ctx.enable(moderngl.DEPTH_TEST)  # culling stays off

    def _draw(self, fbo, vao, b: int, components: int, dtype: str) -> bytes:
        self.positions.write(self.scene.pos[b].numpy().tobytes())
        fbo.use()
        if vao is self.textured_vao:
            self.texture.use(0)
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        vao.render()
        return fbo.read(components=components, dtype=dtype)

    def rasterize(self) -> np.ndarray:
        size = self.scene.size
        out = np.empty((self.scene.batch, size, size), np.int32)
        with self.ctx:  # current again, whatever GL code (another adapter) ran since
            for b in range(self.scene.batch):
                out[b] = np.frombuffer(self._draw(self.ids_fbo, self.ids_vao, b, 1, "i4"),
                                       np.int32).reshape(size, size)
        return out

    def triangle_ids(self, out: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(out).long() - 1

    def textured(self) -> torch.Tensor:
        size = self.scene.size
        out = np.empty((self.scene.batch, size, size, 3), np.float32)
        with self.ctx:
            for b in range(self.scene.batch):
                out[b] = np.frombuffer(self._draw(self.image_fbo, self.textured_vao, b, 3, "f4"),
                                       np.float32).reshape(size, size, 3)
        return torch.from_numpy(out)


@functools.cache
def _probe() -> tuple[Optional[str], str]:
    """(why not, renderer and GL version), once per process: each probe context, released,
    leaves no context current."""
    try:
        import moderngl
        ctx = moderngl.create_standalone_context(backend="egl")
    except Exception as exc:  # ImportError, or no EGL / Mesa driver
        return f"moderngl with EGL unavailable ({type(exc).__name__}: {exc})", ""
    renderer = f"{ctx.info['GL_RENDERER']}, {ctx.info['GL_VERSION']}"
    ctx.release()
    if "llvmpipe" not in renderer:
        return f"the EGL context is {renderer!r}, not Mesa's llvmpipe", renderer
    return None, renderer
