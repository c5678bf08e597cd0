"""The public API: `import embedcsp`, the README's snippet as written, `python -m embedcsp`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import embedcsp

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_snippets_run_as_written(tmp_path):
    blocks = python_blocks()
    assert len(blocks) >= 2
    for code in blocks:
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "gemm-bundle" / "manifest.json").is_file()


def test_every_public_name_exists_and_says_what_it_is():
    for name in embedcsp.__all__:
        obj = getattr(embedcsp, name)
        if name != "__version__":
            assert (obj.__doc__ or "").strip(), f"embedcsp.{name} has no docstring"


def test_run_returns_outputs_for_the_users_tensors():
    compiled = embedcsp.compile_operator(embedcsp.conv2d(1, 3, 9, 9, 20, 3, 3, 1, 1, 2, 2),
                                         embedcsp.load_accelerator(),
                                         embedcsp.Options(epilogue=embedcsp.Epilogue("requant", 6)))
    rng = np.random.default_rng(3)
    data = rng.integers(-128, 128, size=(1, 3, 9, 9), dtype=np.int8)
    weight = rng.integers(-128, 128, size=(20, 3, 3, 3), dtype=np.int8)
    result = embedcsp.run(compiled, {"data": data, "weight": weight})
    # Independent ground truth: explicit loops over the definition, Python ints.
    padded = np.pad(data.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((1, 20, 5, 5), np.int64)
    for p in range(5):
        for q in range(5):
            window = padded[0, :, 2 * p:2 * p + 3, 2 * q:2 * q + 3]
            want[0, :, p, q] = np.tensordot(weight.astype(np.int64), window, axes=3)
    want = np.clip(want >> 6, -128, 127).astype(np.int8)
    assert result.verification.ok
    assert np.array_equal(result.outputs["out"], want)


def test_run_refuses_tensors_of_the_wrong_shape():
    compiled = embedcsp.compile_operator(embedcsp.gemm(5, 6, 7), embedcsp.load_accelerator())
    with pytest.raises(embedcsp.BadInput, match="A"):
        embedcsp.run(compiled, {"A": np.zeros((7, 5), np.int8), "B": np.zeros((7, 6), np.int8)})


def test_python_dash_m_and_version():
    r = subprocess.run([sys.executable, "-m", "embedcsp", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"embedcsp {embedcsp.__version__}"
