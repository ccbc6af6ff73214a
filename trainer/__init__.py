"""Everything an instructor touches: job config, datasets, the training worker, the job store, publishing."""

import logging

# On CPUs with AVX512-BF16, importing bitsandbytes logs "Failed to load CPU gemm_4bit_forward from kernels-community"
# when the optional `kernels` package (which downloads a kernel from the Hub) is absent. It is harmless: 4-bit matmuls
# on the CPU then use bitsandbytes' own kernel. Quieted here, which the app, the CLI and the worker all import first.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
