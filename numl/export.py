"""Export a trained network for inference outside Lightning: TorchScript (always) or ONNX (if installed).

    python -m numl.export <run dir> [--format torchscript|onnx] [--checkpoint best|last|<file>] [--out FILE]

The run directory is one written by `python -m numl.train` (its `.hydra/config.yaml` rebuilds the task).
The exported module is the task's `export_module()` if it has one, else its `model`; an example input
comes from a few events of the run's DataModule. Every export is checked to give the same outputs as
the PyTorch module on that input before it is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

from numl.utils.errors import ConfigError

FORMATS = ("torchscript", "onnx")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Identical outputs, with NaN == NaN (flagged events) and bitwise equality elsewhere."""
    return (
        a.shape == b.shape
        and bool(
            torch.equal(
                torch.nan_to_num(a, nan=0.0, posinf=1e30, neginf=-1e30),
                torch.nan_to_num(b, nan=0.0, posinf=1e30, neginf=-1e30),
            )
        )
        and bool(torch.equal(torch.isnan(a), torch.isnan(b)))
    )


def export_torchscript(module: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """Script (not trace: data-dependent checks survive), freeze, save, reload and compare outputs."""
    path = Path(path)
    module = module.eval().cpu()
    scripted = torch.jit.freeze(torch.jit.script(module))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(scripted, str(path))
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        expected, got = module(example), loaded(example)
    if not _same(expected, got):
        raise RuntimeError(f"{path}: TorchScript outputs differ from the PyTorch module's")
    return path


def export_onnx(module: nn.Module, example: torch.Tensor, path: str | Path, atol: float = 1e-5) -> Path:
    """ONNX with a dynamic batch axis, checked with onnxruntime (to float tolerance: other kernels)."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "--format onnx: needs the onnx and onnxruntime packages (pip install onnx onnxruntime)"
        ) from None
    path = Path(path)
    module = module.eval().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        dynamo=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        expected = module(example)
    got = torch.from_numpy(session.run(None, {"input": example.numpy()})[0])
    finite = torch.isfinite(expected)
    if (
        got.shape != expected.shape
        or not torch.equal(finite, torch.isfinite(got))
        or not torch.allclose(expected[finite], got[finite], atol=atol, rtol=1e-5)
    ):
        raise RuntimeError(f"{path}: ONNX outputs differ from the PyTorch module's")
    return path


def export(module: nn.Module, example: torch.Tensor, path: str | Path, fmt: str = "torchscript") -> Path:
    if fmt not in FORMATS:
        raise ConfigError(f"--format={fmt!r}: must be one of {', '.join(FORMATS)}")
    return export_torchscript(module, example, path) if fmt == "torchscript" else export_onnx(module, example, path)


def _checkpoint(run_dir: Path, which: str) -> Path:
    if which in ("best", "last"):
        found = sorted((run_dir / "checkpoints").glob("best-*.ckpt" if which == "best" else "last.ckpt"))
        if not found:
            raise ConfigError(f"--checkpoint={which}: no {which} checkpoint in {run_dir / 'checkpoints'}")
        return found[-1]
    return Path(which)


def export_run(
    run_dir: str | Path,
    fmt: str = "torchscript",
    checkpoint: str = "best",
    out: str | Path | None = None,
    n_example: int = 16,
) -> Path:
    """Rebuild a numl.train run's task from its config and checkpoint, and export its network."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from numl.utils.runtime import check_checkpoint, load_task_from_run, register_resolvers

    register_resolvers()
    run_dir = Path(run_dir)
    config_path = run_dir / ".hydra" / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{run_dir}: not a numl.train run directory (no .hydra/config.yaml)")
    cfg = OmegaConf.load(config_path)
    ckpt = check_checkpoint("--checkpoint", _checkpoint(run_dir, checkpoint))
    task = load_task_from_run(cfg, ckpt).eval()
    data_cfg = OmegaConf.merge(
        cfg.data,
        {"n_train": n_example, "n_val": n_example, "n_test": n_example, "batch_size": n_example, "num_workers": 0},
    )
    datamodule = instantiate(data_cfg, _convert_="all")
    datamodule.setup("test")
    example = next(iter(datamodule.test_dataloader()))[task.input_key]
    module = task.export_module() if hasattr(task, "export_module") else task.model
    suffix = ".pt" if fmt == "torchscript" else ".onnx"
    return export(module, example, out or run_dir / f"exported_model{suffix}", fmt)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m numl.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--format", default="torchscript", choices=FORMATS)
    parser.add_argument("--checkpoint", default="best", help="best, last or a checkpoint file")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    try:
        path = export_run(args.run_dir, args.format, args.checkpoint, args.out)
    except ConfigError as err:
        print(f"numl: error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
