"""Numeric precision of the network: ``auto | fp32 | bf16 | fp16`` resolved for one device.

    >>> import torch
    >>> from segcli.precision import resolve_precision
    >>> choice = resolve_precision("auto", "cpu")
    >>> choice.describe()   # on a CPU without bf16 instructions:
    'fp32 (auto: this CPU has no bfloat16 instructions (AVX512-BF16, AMX or ARM BF16))'
    >>> with choice.autocast():
    ...     logits = torch.nn.Conv2d(1, 2, 3)(torch.randn(1, 1, 8, 8))  # in choice.dtype

Only the network runs in reduced precision, under ``torch.autocast``: the convolutions and
matrix products take bf16/fp16 inputs and autocast decides the rest op by op.  Everything
after the network stays float32: the callers cast the logits with :func:`float32_output`
before the loss, the softmax/sigmoid, the metrics and the sliding-window accumulator, and
the weights, gradients and optimiser state are float32 throughout.

``auto`` picks, for the device the work runs on:

- CUDA: ``bf16`` where the GPU computes bfloat16 natively (Ampere and newer), else ``fp16``
  with a gradient scaler (fp16's narrow exponent range underflows small gradients).
- CPU: ``bf16`` where the processor has bfloat16 instructions (x86 AVX512-BF16 or AMX-BF16,
  ARM BF16), which oneDNN uses for convolutions; else ``fp32`` — a CPU without them would
  emulate bf16 and lose time, so ``auto`` loses nothing there.
- anything else (MPS, ...): ``fp32``.

An explicit ``bf16`` or ``fp16`` runs on any device (emulated, and slow, where the hardware
lacks it); the reason then says so.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "PRECISIONS",
    "PrecisionChoice",
    "cpu_bf16_supported",
    "cuda_bf16_supported",
    "float32_output",
    "inference_autocast",
    "memory_format",
    "resolve_precision",
]

#: Every value of ``train.precision`` / ``inference.precision``.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: /proc/cpuinfo flags of native bfloat16 arithmetic (x86 AVX512-BF16 / AMX-BF16, ARM BF16).
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision one run uses on one device, and why.

    Attributes:
        name: ``fp32``, ``bf16`` or ``fp16`` (never ``auto``).
        requested: what the spec asked for (``auto`` or one of the above).
        device_type: ``cpu``, ``cuda``, ``mps``, ... (autocast's device type).
        reason: one sentence on why ``name`` was chosen (for the console and the run folder).
    """

    name: str
    requested: str
    device_type: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of the network's convolutions (float32 for ``fp32``)."""
        return _DTYPES[self.name]

    @property
    def reduced(self) -> bool:
        """True for bf16 and fp16 (autocast on)."""
        return self.name != "fp32"

    @property
    def needs_grad_scaler(self) -> bool:
        """True for fp16: its 5-bit exponent underflows small gradients without loss scaling."""
        return self.name == "fp16"

    def autocast(self) -> AbstractContextManager[object]:
        """A context that runs the network in :attr:`dtype` (a no-op context for fp32)."""
        if not self.reduced:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for fp16 only (bf16 has float32's exponent range).

        A disabled scaler passes ``scale``, ``unscale_``, ``step`` and ``update`` through, so
        the training step is the same code for every precision.
        """
        device = self.device_type if self.device_type in ("cuda", "cpu") else "cpu"
        return torch.amp.GradScaler(device, enabled=self.needs_grad_scaler)

    def as_dict(self) -> dict[str, str]:
        """The choice as a JSON-ready record (the run folder's ``precision.json``)."""
        return {
            "precision": self.name,
            "requested": self.requested,
            "device": self.device_type,
            "reason": self.reason,
        }

    def describe(self) -> str:
        """``bf16 (auto: ...)`` — the console and run-folder line."""
        return f"{self.name} ({self.reason})"


def resolve_precision(
    requested: str,
    device: str | torch.device,
    *,
    cpu_bf16: Callable[[], bool] | None = None,
    cuda_bf16: Callable[[torch.device], bool] | None = None,
) -> PrecisionChoice:
    """Resolve ``requested`` (``auto``, ``fp32``, ``bf16``, ``fp16``) for ``device``.

    Args:
        requested: the spec's ``train.precision`` or ``inference.precision``.
        device: where the network runs (``cpu``, ``cuda``, ``cuda:1``, ``mps``, a
            ``torch.device``).
        cpu_bf16: capability probe for the CPU (default :func:`cpu_bf16_supported`); tests
            pass a stub to resolve for a processor they do not have.
        cuda_bf16: capability probe for a CUDA device (default :func:`cuda_bf16_supported`).

    Returns:
        The choice with its reason.  ``auto`` follows the table in the module docstring;
        an explicit choice is taken as given, its reason noting emulation where the device
        lacks the hardware.

    Raises:
        ValueError: ``requested`` is not one of :data:`PRECISIONS`.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    dev = torch.device(device)
    kind = dev.type
    cpu_probe = cpu_bf16 or cpu_bf16_supported
    cuda_probe = cuda_bf16 or cuda_bf16_supported
    if kind == "cuda":
        has_bf16 = cuda_probe(dev)
        hw = "this GPU computes bfloat16 natively" if has_bf16 else "this GPU has no bfloat16"
    elif kind == "cpu":
        has_bf16 = cpu_probe()
        hw = (
            "this CPU has bfloat16 instructions (AVX512-BF16, AMX or ARM BF16)"
            if has_bf16
            else "this CPU has no bfloat16 instructions (AVX512-BF16, AMX or ARM BF16)"
        )
    else:
        has_bf16, hw = False, f"no reduced-precision rule for {kind} devices"

    if requested == "auto":
        if kind == "cuda":
            if has_bf16:
                return PrecisionChoice("bf16", requested, kind, f"auto: {hw}")
            reason = f"auto: {hw}, so fp16 with a gradient scaler"
            return PrecisionChoice("fp16", requested, kind, reason)
        if kind == "cpu" and has_bf16:
            return PrecisionChoice("bf16", requested, kind, f"auto: {hw}")
        return PrecisionChoice("fp32", requested, kind, f"auto: {hw}")

    if requested == "fp32":
        return PrecisionChoice("fp32", requested, kind, "set in the spec")
    if requested == "bf16":
        note = "" if has_bf16 else f"; {hw}: emulated, likely slower than fp32"
        return PrecisionChoice("bf16", requested, kind, f"set in the spec{note}")
    note = "; with a gradient scaler"
    if kind == "cpu":
        note += "; CPUs compute fp16 convolutions slowly (bf16 is the CPU format)"
    return PrecisionChoice("fp16", requested, kind, f"set in the spec{note}")


@functools.cache
def cpu_bf16_supported() -> bool:
    """True if this CPU has native bfloat16 arithmetic that torch (oneDNN) uses.

    Native means instructions, not emulation: x86 AVX512-BF16 or AMX
    (``torch.cpu._is_avx512_bf16_supported`` / ``torch.cpu._is_amx_tile_supported``), or the
    ``bf16`` feature of ARMv8.6+ (from /proc/cpuinfo on Linux).  torch's
    ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` (oneDNN can run bf16 at all) is a
    precondition, not the test: it also answers True for AVX-512 processors that only
    emulate bf16, where bf16 is slower than float32.
    """
    try:
        onednn = bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):  # a torch build without these probes
        onednn = False
    probes = []
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, name, None)
        probes.append(bool(check is not None and check()))
    return bf16_native(onednn, any(probes), _cpu_flags())


def bf16_native(onednn_bf16: bool, torch_probe: bool, flags: Iterable[str]) -> bool:
    """The rule of :func:`cpu_bf16_supported` on its inputs: oneDNN runs bf16 at all, and the
    processor has bf16 instructions — torch's own probe (AVX512-BF16, AMX) or one of the
    feature flags ``avx512_bf16``, ``amx_bf16`` (x86) or ``bf16`` (ARMv8.6+)."""
    return onednn_bf16 and (torch_probe or bool(set(flags) & set(_CPU_BF16_FLAGS)))


def _cpu_flags() -> list[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux; empty elsewhere)."""
    if platform.system() != "Linux":
        return []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86, ARM
            return value.split()
    return []


def cuda_bf16_supported(device: torch.device) -> bool:
    """True if the CUDA device computes bfloat16 natively (compute capability 8.0+)."""
    if not torch.cuda.is_available():
        return False
    major, _minor = torch.cuda.get_device_capability(device)
    return major >= 8


def memory_format(dims: int, device: str | torch.device) -> torch.memory_format:
    """The activation layout training and inference use for a ``dims``-D network on ``device``.

    The rule measured by ``make bench-precision`` (docs/benchmarks.md, "Precision and layout",
    which checks it against every row it measures): on CPU, 3D networks run channels-last
    (``channels_last_3d``: oneDNN's 3-D convolutions are faster in that layout, training
    steps and inference, fp32 and bf16), while 2D U-Nets run faster in the contiguous layout
    (instance norm and the transposed convolutions lose more in channels-last than the
    convolutions gain).  On other devices the contiguous layout is kept: no GPU has been
    measured here.
    """
    if torch.device(device).type != "cpu" or dims != 3:
        return torch.contiguous_format
    return torch.channels_last_3d


def inference_autocast(
    device: torch.device, precision: str | None
) -> AbstractContextManager[object]:
    """The autocast context of the inference functions' ``precision`` keyword.

    ``None``: on CUDA the rule of the spec's ``auto`` (:func:`resolve_precision`: bf16 on
    Ampere and newer, fp16 before), so a library call and ``segcli predict`` run alike;
    float32 elsewhere (library calls on the CPU stay exact).  A name is resolved for
    ``device`` by :func:`resolve_precision`.
    """
    if precision is None:
        if device.type != "cuda":
            return nullcontext()
        precision = "auto"
    return resolve_precision(precision, device).autocast()


def float32_output(output: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """The network's logits (or deep-supervision list of logits) as float32.

    Called on the output of a forward pass under :meth:`PrecisionChoice.autocast`, before
    the loss, softmax or metrics: they are computed in float32 whatever the network ran in.
    """
    if isinstance(output, list | tuple):
        return [o.float() for o in output]
    return output.float()
