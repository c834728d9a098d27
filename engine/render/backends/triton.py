"""The Triton backend (kernels/). Its kernels are issue 4; until then it reports why not."""
from __future__ import annotations

from typing import Optional

from .base import Backend


class TritonBackend(Backend):
    name = "triton"

    def unavailable_reason(self) -> Optional[str]:
        return "the Triton rendering kernels are not implemented yet (issue 4); use backend='cpu'"
