"""The CUDA C tensor-core kernel for up to sixteen rows, its pure parts
(inference/kernels/nf4_tc_gemm.py): which products it takes, its tiles of input rows, its source
per shape. On a GPU its results are checked in test_fast_step_gpu.py."""

from __future__ import annotations

import pytest
import torch

from inference.kernels import nf4_tc_gemm

NF4 = (-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0, 0.0796, 0.1609, 0.2461,
       0.3379, 0.4407, 0.5626, 0.7230, 1.0)


@pytest.mark.parametrize(("m", "n", "k", "qblock", "dtype", "takes"), [
    (1, 6144, 2560, 64, torch.bfloat16, True),
    (15, 6144, 2560, 64, torch.bfloat16, True),  # a follower's prompt chunk
    (16, 2560, 9728, 64, torch.bfloat16, True),
    (17, 2560, 9728, 64, torch.bfloat16, False),  # two tiles of B's 8 columns
    (0, 2560, 9728, 64, torch.bfloat16, False),
    (8, 2560, 9728, 128, torch.bfloat16, False),  # 64-weight blocks only
    (8, 2560, 2500, 64, torch.bfloat16, False),  # K in groups of 128
    (8, 2568, 2560, 64, torch.bfloat16, False),  # N in tiles of 16
    (8, 6144, 2560, 64, torch.float16, False),
])
def test_which_products_it_takes(m, n, k, qblock, dtype, takes):
    assert nf4_tc_gemm.fits(m, n, k, qblock, dtype) is takes


@pytest.mark.parametrize(("m", "tiles"), [(1, 1), (8, 1), (9, 2), (15, 2), (16, 2)])
def test_rows_take_tiles_of_eight(m, tiles):
    assert nf4_tc_gemm.tiles(m) == tiles


def test_the_source_holds_the_shape_the_tiles_and_the_code_table():
    nested = nf4_tc_gemm.source(NF4, 9728, 16, 2, True, 256)
    plain = nf4_tc_gemm.source(NF4, 2560, 4, 1, False, 1)
    for text in (nested, plain):
        assert "$" not in text and 'extern "C" __global__ void' in text and "nf4_tc_gemm(" in text
    assert "#define K 9728" in nested and "#define WARPS 16" in nested
    assert "#define TILES 2" in nested and "#if 1" in nested
    assert "#define TILES 1" in plain and "#if 0" in plain and "#define SPLIT 1" in plain
    assert "#define SPLIT 4" in nf4_tc_gemm.source(NF4, 2560, 4, 1, False, 1, split=4)
    assert nf4_tc_gemm.source(NF4[::-1], 2560, 4, 1, False, 1) != plain  # the table is baked in
