"""The formats `sever export` writes and `predict --exported` runs, by file name:

- `.onnx`: an ONNX graph, run with onnxruntime (sever[export]); no PyTorch needed.
- `.pt2`: torch.export's ExportedProgram (`torch.export.save`), run with
  `torch.export.load(path).module()`: PyTorch alone, no sever or SMP code.
- `.pt2` with `aot`: an AOTInductor package (`torch._inductor.aoti_compile_and_package`),
  compiled for this machine's CPU (or GPU) with its C++ compiler, run with
  `torch._inductor.aoti_load_package` (or from C++); minutes to compile.

Each takes raw grey pixels (N, 1, H, W) float32 and returns the probabilities (N, C, H, W)
and, when a model gives it, the presence (N, C), as numpy arrays.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.export import Dim

from sever.errors import DataError, OptionError, SeverError

OPSET = 17
# raw pixels (N, 1, H, W) float32 -> [probabilities (N, C, H, W), presence (N, C)?]
Runner = Callable[[NDArray[np.float32]], list[NDArray[np.float32]]]
RUNTIMES = {".onnx": "onnxruntime", ".pt2": "torch.export"}
LOADERS = ("onnxruntime", "torch.export", "aoti")
# the runtimes a file of each suffix is for
LOADED_FROM = {".onnx": ("onnxruntime",), ".pt2": ("torch.export", "aoti")}


def runtime_of(out: Path, aot: bool) -> str:
    """onnxruntime, torch.export or aoti, by the file name (and --aot).

    Raises:
        OptionError: another suffix, or --aot with .onnx.
    """
    runtime = RUNTIMES.get(out.suffix)
    if runtime is None:
        raise OptionError(f"--out {out}: expected a .onnx or a .pt2 file name")
    if aot and runtime != "torch.export":
        raise OptionError(f"--out {out}: --aot compiles a .pt2; give a .pt2 file name")
    if aot and shutil.which("c++") is None and shutil.which("g++") is None:
        raise SeverError("--aot compiles C++: install a C++ compiler (g++), or drop --aot")
    if runtime == "onnxruntime":
        need_onnxruntime()
    return "aoti" if aot else runtime


def need_onnxruntime() -> None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise SeverError(
            "ONNX models need onnx and onnxruntime: pip install 'sever[export]'"
        ) from None


def write(runtime: str, module: nn.Module, sample: torch.Tensor, path: Path, stride: int) -> None:
    """Write `module` (raw pixels in) for `runtime` at `path`, batch, height and width
    dynamic (height and width multiples of `stride`).

    A `.pt2` is built in memory and then written: torch's zip writer that fails on a full
    disk fails again in its destructor, which aborts the process (std::terminate); a
    plain write fails with the OSError alone."""
    if runtime == "onnxruntime":
        write_onnx(module, sample, path)
        return
    program = export_program(module, sample, stride)
    if runtime == "aoti":
        # (a private module: torch's documented entry point for AOTInductor packages)
        from torch._inductor import aoti_compile_and_package

        package = io.BytesIO()
        aoti_compile_and_package(program, package_path=package)
    else:
        package = io.BytesIO()
        torch.export.save(program, package)
    path.write_bytes(package.getbuffer())


def write_onnx(module: nn.Module, sample: torch.Tensor, path: Path) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        outputs = ["probs", "presence"][: len(module(sample))]
    with warnings.catch_warnings():  # the TorchScript exporter says it is the legacy one
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (sample,),
            str(path),
            input_names=["pixels"],
            output_names=outputs,
            dynamic_axes={"pixels": axes, "probs": axes, "presence": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def export_program(module: nn.Module, sample: torch.Tensor, stride: int) -> Any:
    """torch.export's program of `module` with a dynamic batch, height and width."""
    batch = Dim("batch", min=1, max=4096)
    if stride > 1:
        height = stride * Dim("height_blocks", min=1, max=2**16 // stride)
        width = stride * Dim("width_blocks", min=1, max=2**20 // stride)
    else:
        height, width = Dim("height", min=2, max=2**16), Dim("width", min=2, max=2**20)
    shapes = {"pixels": {0: batch, 2: height, 3: width}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(module, (sample,), dynamic_shapes=shapes)


def load(path: Path, runtime: str) -> Runner:
    """A runner of an export written for `runtime` (CUDA for onnxruntime when it has it).

    Raises:
        DataError: the file does not load in that runtime (another torch version, another
            machine's AOTInductor package, a damaged file).
    """
    quiet = logging.getLogger("torch.export")  # it logs a traceback before giving up
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return loaded(path, runtime)
    except SeverError:
        raise
    except Exception as exc:  # each runtime has its own errors for a file it cannot load
        raise DataError(
            f"{path}: does not load as {runtime} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no message'}); export it again "
            "on this machine with this version of PyTorch"
        ) from exc
    finally:
        quiet.setLevel(level)


def loaded(path: Path, runtime: str) -> Runner:
    if runtime == "onnxruntime":
        need_onnxruntime()
        import onnxruntime  # (optional: sever[export])

        providers = [
            p
            for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
            if p in onnxruntime.get_available_providers()
        ]
        session = onnxruntime.InferenceSession(str(path), providers=providers)
        return lambda pixels: list(session.run(None, {"pixels": pixels}))
    module: Callable[[torch.Tensor], Any]
    if runtime == "aoti":
        # (a private module: torch's documented entry point for AOTInductor packages)
        from torch._inductor import aoti_load_package

        with tempfile.TemporaryDirectory() as folder:  # it wants a name ending in .pt2
            package = Path(folder) / "model.pt2"
            shutil.copyfile(path, package)
            module = aoti_load_package(str(package))
    else:
        module = torch.export.load(str(path)).module()

    def run(pixels: NDArray[np.float32]) -> list[NDArray[np.float32]]:
        with torch.no_grad():
            found = module(torch.from_numpy(np.ascontiguousarray(pixels)))
        return [t.float().cpu().numpy() for t in found]

    return run


def versions(runtime: str) -> dict[str, str]:
    """The versions an export for `runtime` depends on, for its manifest."""
    if runtime != "onnxruntime":
        return {"torch": torch.__version__}
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
