"""nl3dmm.constants (the Python source of the renderer's constants) equals csrc/render_math.h,
which the C++ and CUDA kernels compile in: the test reads the header's `constexpr`s and its
BoundaryMode enum as text, so changing either side alone fails here."""
from __future__ import annotations

import ast
import operator
import re
from pathlib import Path

import pytest

from nl3dmm import constants

HEADER = Path(__file__).resolve().parents[1] / "csrc" / "render_math.h"

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.USub: operator.neg}


def _evaluate(expression: str) -> float:
    """A C constant expression of literals, + - * << >> and parentheses (suffixes dropped)."""
    python = re.sub(r"(?<=[0-9.])(ull|ll|u|f)\b", "", expression, flags=re.IGNORECASE)

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ValueError(f"cannot evaluate {expression!r} from render_math.h")

    return walk(ast.parse(python, mode="eval").body)


def header_constants(text: str) -> dict[str, float]:
    """name -> value of every `constexpr <type> kName = <expr>;` that evaluates."""
    found = {}
    for name, expression in re.findall(r"constexpr\s+[\w:]+\s+(k\w+)\s*=\s*([^;]+);", text):
        try:
            found[name] = _evaluate(expression.strip())
        except (ValueError, SyntaxError):
            continue  # e.g. kEmptyKey = ~0ull: not a value Python restates
    return found


def header_enum(text: str, name: str) -> dict[str, int]:
    body = re.search(rf"enum\s+{name}\s*(?::\s*\w+)?\s*\{{([^}}]*)\}}", text)
    assert body, f"enum {name} not found in {HEADER.name}"
    return {k: int(v) for k, v in re.findall(r"(k\w+)\s*=\s*(\d+)", body.group(1))}


def test_parser_reads_the_forms_the_header_uses():
    text = ("constexpr int kA = 8;\nconstexpr double kB = 256.0;  // x\n"
            "constexpr int64_t kC = (1ll << 24) - 1;\nconstexpr uint64_t kD = ~0ull;\n"
            "enum Mode : int { kX = 0, kY = 2 };")
    assert header_constants(text) == {"kA": 8, "kB": 256.0, "kC": (1 << 24) - 1}
    assert header_enum(text, "Mode") == {"kX": 0, "kY": 2}
    with pytest.raises(ValueError):
        _evaluate("sqrt(2)")


def test_python_constants_equal_the_header():
    text = HEADER.read_text()
    values = header_constants(text)
    expected = {
        "kSubpixelBits": constants.SUBPIXEL_BITS,
        "kSubpixelScale": constants.SUBPIXEL_SCALE,
        "kGuardBandPixels": constants.GUARD_BAND_PIXELS,
        "kMaxTriangles": constants.MAX_TRIANGLES,
        "kMinW": constants.MIN_W,
        "kAntialiasSlack": constants.ANTIALIAS_SLACK,
        "kClipPlanes": constants.CLIP_PLANES,
        "kMaxClipVertices": constants.MAX_CLIP_VERTICES,
    }
    for name, value in expected.items():
        assert name in values, f"{name} is no longer a constexpr in {HEADER.name}"
        assert values[name] == value, f"{HEADER.name} {name} = {values[name]}, Python has {value}"
    assert constants.SUBPIXEL_SCALE == 1 << constants.SUBPIXEL_BITS


def test_boundary_codes_equal_the_header_enum():
    enum = header_enum(HEADER.read_text(), "BoundaryMode")
    assert enum == {"k" + mode.capitalize(): code for mode, code in constants.BOUNDARY_MODES.items()}


def test_no_other_python_module_restates_them():
    """The old restatements (a dict or tuple of the mode names, the numbers) are gone."""
    root = HEADER.parents[1]
    pattern = re.compile(r"\{\s*\"clamp\"\s*:\s*0|\(\s*\"clamp\"\s*,\s*\"zero\"|1048576|"
                         r"1 << 20\b|\(1 << 24\) - 1")
    offenders = [str(path.relative_to(root)) for folder in ("engine", "kernels")
                 for path in sorted((root / folder).rglob("*.py"))
                 if path.name != "constants.py" and pattern.search(path.read_text())]
    assert not offenders, f"constants restated outside nl3dmm.constants: {offenders}"
