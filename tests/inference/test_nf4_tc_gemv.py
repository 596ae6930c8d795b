"""The CUDA C tensor-core GEMV's pure parts (inference/kernels/nf4_tc_gemv.py, nvrtc.py): which
products it takes, its source per shape, and NVRTC refusing a CPU. On a GPU its results are
checked in test_fast_step_gpu.py."""

from __future__ import annotations

import pytest
import torch

from inference.kernels import nf4_tc_gemv
from inference.kernels.nvrtc import NVRTCError, compile_module

NF4 = (-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0, 0.0796, 0.1609, 0.2461,
       0.3379, 0.4407, 0.5626, 0.7230, 1.0)


@pytest.mark.parametrize(("m", "n", "k", "qblock", "dtype", "takes"), [
    (1, 6144, 2560, 64, torch.bfloat16, True),
    (4, 2560, 9728, 64, torch.bfloat16, True),
    (5, 2560, 9728, 64, torch.bfloat16, False),  # B's 8 columns hold 4 rows' 2 blocks
    (0, 2560, 9728, 64, torch.bfloat16, False),
    (1, 2560, 9728, 128, torch.bfloat16, False),  # 64-weight blocks only
    (1, 2560, 2500, 64, torch.bfloat16, False),  # K in groups of 128
    (1, 2568, 2560, 64, torch.bfloat16, False),  # N in tiles of 16
    (1, 6144, 2560, 64, torch.float16, False),
])
def test_which_products_it_takes(m, n, k, qblock, dtype, takes):
    assert nf4_tc_gemv.fits(m, n, k, qblock, dtype) is takes


def test_the_source_holds_the_shape_and_the_code_table():
    nested = nf4_tc_gemv.source(NF4, 9728, 16, True, 256)
    plain = nf4_tc_gemv.source(NF4, 2560, 4, False, 1)
    for text in (nested, plain):
        assert "$" not in text and 'extern "C" __global__' in text
    assert "#define K 9728" in nested and "#define WARPS 16" in nested and "#if 1" in nested
    assert "#define K 2560" in plain and "#if 0" in plain and "#define SPLIT 1" in plain
    assert "#define SPLIT 3" in nf4_tc_gemv.source(NF4, 2560, 4, False, 1, split=3)
    assert nf4_tc_gemv.source(NF4[::-1], 2560, 4, False, 1) != plain  # the table is baked in


def test_nvrtc_kernels_need_a_cuda_device():
    with pytest.raises(NVRTCError):
        compile_module('extern "C" __global__ void f() {}', "f", torch.device("cpu"))


def test_its_config_is_told_apart_from_the_others():
    pytest.importorskip("triton")
    from inference.kernels.nf4 import DEQUANTIZE, gemv_config, tc_gemm_config, tc_gemv_config

    for config in (tc_gemv_config(8), tc_gemm_config(8)):
        assert config.compiled and not config.dequantizes and not config.tensor_cores
    assert tc_gemv_config(8) != tc_gemm_config(8)
    assert DEQUANTIZE.dequantizes and not DEQUANTIZE.compiled
    assert not gemv_config(6144, 2560, 64).compiled
