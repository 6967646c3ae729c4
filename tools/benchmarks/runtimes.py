"""The other inference runtimes a user could pick instead of kd_pyserini: ONNX Runtime and OpenVINO (issue #20, item 2).

Both run the same model folder as everything else in the benchmarks (TAS-B architecture, CLS vector), exported once
to ONNX with torch's own exporter (``torch.onnx.export(..., dynamo=True)``: dynamic batch and length; the older
TorchScript exporter gives wrong vectors for transformers 5's DistilBERT, cosine ~0.9 to torch, so it is not used),
and checked against torch on three shapes before any timing (cosine >= 0.9999, else :class:`Skip`).

* **ONNX Runtime** "with its own optimisations on": ``onnxruntime.transformers.optimizer.optimize_model``
  (``model_type="bert"``: fuses the embeddings + layer norm, bias + GELU and the residual layer norms; its fused
  ``Attention`` pattern does not match the exported graph, recorded as ``OrtEncoder.fusions``) and then
  ``GraphOptimizationLevel.ORT_ENABLE_ALL`` in the session; int8: ``onnxruntime.quantization.quantize_dynamic``
  (int8 weights, activations quantised per call: ONNX Runtime's CPU int8 recipe) of the optimised model.
* **OpenVINO** (the ``openvino`` wheel from PyPI): ``Core.read_model`` on the same ONNX file, compiled for the CPU with
  ``INFERENCE_PRECISION_HINT`` ``f32`` or ``bf16`` (its default on CPUs with native bf16 is bf16); passages with
  the ``THROUGHPUT`` hint and an ``AsyncInferQueue`` (one request per stream: how OpenVINO asks to be used for
  throughput), single queries with the ``LATENCY`` hint and a synchronous request.

Every encoder here sorts the texts by length and pads each batch to its longest (as sentence-transformers and
kd_pyserini do), tokenises with the model folder's fast tokenizer and returns float32 CLS vectors in input order.
Missing packages raise :class:`Skip` with the install line, so the rest of a run goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .common import Skip

ORT = "ONNX Runtime"
OV = "OpenVINO"
INSTALL = "pip install onnxruntime onnx onnxscript openvino  (or: pip install -e '.[bench]')"


def _key(model: str | Path) -> str:
    p = Path(model).resolve()
    h = hashlib.sha1(str(p).encode())
    cfg = p / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
        h.update(str(cfg.stat().st_mtime_ns).encode())
    return f"{p.name}-{h.hexdigest()[:10]}"


def _cos_min(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def export_onnx(model: str | Path, cache_dir: str | Path) -> Path:
    """The model folder as ONNX (inputs ``input_ids``, ``attention_mask``; output ``cls``), cached; checked against
    torch on three shapes (a padded batch, one long text, two tokens)."""
    out = Path(cache_dir) / "onnx" / _key(model) / "model.onnx"
    if out.is_file():
        return out
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
        import torch
    except ImportError as e:
        raise Skip(f"ONNX export needs onnx and onnxscript ({e}): {INSTALL}") from e
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model))
    hf = AutoModel.from_pretrained(str(model)).eval()

    class _Cls(torch.nn.Module):
        def __init__(self, m: Any) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]

    wrapped = _Cls(hf)
    ex = tok(["an example passage to trace the graph with", "a second one"], padding=True, return_tensors="pt")
    b, s = torch.export.Dim("batch"), torch.export.Dim("length", max=512)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"model.tmp{os.getpid()}.onnx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(wrapped, (ex["input_ids"], ex["attention_mask"]),
                                 input_names=["input_ids", "attention_mask"], output_names=["cls"],
                                 dynamic_shapes=({0: b, 1: s}, {0: b, 1: s}), dynamo=True, optimize=True)
        prog.save(str(tmp), external_data=False)
    try:
        import onnxruntime as ort
    except ImportError as e:
        tmp.unlink(missing_ok=True)
        raise Skip(f"checking the ONNX export needs onnxruntime: {INSTALL}") from e

    sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
    for texts in (["what is the capital of france", "a much longer passage " * 20, "x"], ["a " * 150], ["hi"]):
        e = tok(texts, padding=True, truncation=True, max_length=200, return_tensors="pt")
        with torch.inference_mode():
            ref = wrapped(e["input_ids"], e["attention_mask"]).numpy()
        got = sess.run(None, {"input_ids": e["input_ids"].numpy(), "attention_mask": e["attention_mask"].numpy()})[0]
        if _cos_min(got, ref) < 0.9999:
            tmp.unlink(missing_ok=True)
            raise Skip(f"the ONNX export of {model} disagrees with torch (cosine {_cos_min(got, ref):.4f})")
    tmp.replace(out)
    return out


class _Sorted:
    """Length-sorted batching around a ``run(ids, mask) -> cls`` callable; tokenises with the folder's tokenizer."""

    def __init__(self, model: str | Path, max_length: int) -> None:
        from transformers import AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(str(model))
        self.max_length = max_length

    def _feeds(self, texts: list[str], batch_size: int) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
        enc = self.tok(texts, truncation=True, max_length=self.max_length)["input_ids"]
        order = np.argsort([-len(x) for x in enc], kind="stable")
        feeds = []
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            L = max(len(enc[j]) for j in idx)
            ids = np.zeros((len(idx), L), dtype=np.int64)
            mask = np.zeros((len(idx), L), dtype=np.int64)
            for r, j in enumerate(idx):
                ids[r, :len(enc[j])] = enc[j]
                mask[r, :len(enc[j])] = 1
            feeds.append({"input_ids": ids, "attention_mask": mask})
        return feeds, order

    def _one(self, text: str) -> dict[str, np.ndarray]:
        e = self.tok([text], truncation=True, max_length=self.max_length, return_tensors="np")
        return {"input_ids": e["input_ids"].astype(np.int64), "attention_mask": e["attention_mask"].astype(np.int64)}

    @staticmethod
    def _unsort(parts: list[np.ndarray], order: np.ndarray) -> np.ndarray:
        out = np.empty((len(order), parts[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(parts).astype(np.float32)
        return out


class OrtEncoder(_Sorted):
    """ONNX Runtime, CPU execution provider, its transformer optimiser + ``ORT_ENABLE_ALL``; fp32 or dynamic int8."""

    def __init__(self, model: str | Path, cache_dir: str | Path, max_length: int, precision: str = "fp32",
                 threads: int | None = None, spinning: bool = True) -> None:
        try:
            import onnxruntime as ort
            from onnxruntime.transformers import optimizer
        except ImportError as e:
            raise Skip(f"onnxruntime is not installed: {INSTALL}") from e
        super().__init__(model, max_length)
        src = export_onnx(model, cache_dir)
        opt = src.with_name("model.ort-opt.onnx")
        if not opt.is_file():
            m = optimizer.optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
            fused = {k: v for k, v in m.get_fused_operator_statistics().items() if v}
            tmp = opt.with_name(f"model.ort-opt.tmp{os.getpid()}.onnx")
            m.save_model_to_file(str(tmp))
            opt.with_name("model.ort-opt.fusions.json").write_text(json.dumps(fused))
            tmp.replace(opt)
        self.fusions = json.loads(opt.with_name("model.ort-opt.fusions.json").read_text())
        path = opt
        if precision == "int8":
            path = src.with_name("model.ort-int8.onnx")
            if not path.is_file():
                from onnxruntime.quantization import QuantType, quantize_dynamic

                tmp = path.with_name(f"model.ort-int8.tmp{os.getpid()}.onnx")
                quantize_dynamic(str(opt), str(tmp), weight_type=QuantType.QInt8)
                tmp.replace(path)
        elif precision != "fp32":
            raise ValueError(f"ONNX Runtime's CPU provider runs fp32 or int8 here, not {precision}")
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is None:
            import torch

            threads = torch.get_num_threads()
        so.intra_op_num_threads = threads
        if not spinning:  # no busy-waiting threads between calls: interleaved, they would take the next encoder's cores
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.precision = precision

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        feeds, order = self._feeds(list(texts), batch_size)
        return self._unsort([self.session.run(None, f)[0] for f in feeds], order)

    def encode_one(self, text: str) -> np.ndarray:
        return self.session.run(None, self._one(text))[0][0].astype(np.float32)


class OvEncoder(_Sorted):
    """OpenVINO on the CPU: f32 or bf16 inference precision; THROUGHPUT hint + async queue for batches, LATENCY for
    single texts."""

    def __init__(self, model: str | Path, cache_dir: str | Path, max_length: int, precision: str = "fp32",
                 mode: str = "throughput", threads: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise Skip(f"openvino is not installed: {INSTALL}") from e
        super().__init__(model, max_length)
        core = ov.Core()
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"OpenVINO runs fp32 or bf16 here (int8 needs NNCF's weight compression), not {precision}")
        cfg = {"INFERENCE_PRECISION_HINT": "f32" if precision == "fp32" else "bf16",
               "PERFORMANCE_HINT": mode.upper()}
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = str(threads)
        self.compiled = core.compile_model(core.read_model(str(export_onnx(model, cache_dir))), "CPU", cfg)
        self.precision, self.mode = precision, mode
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        self._req = self.compiled.create_infer_request()
        self._parts: list[np.ndarray | None] = []
        self._queue = None
        if mode == "throughput" and self.streams > 1:  # one request per stream, made once
            self._queue = ov.AsyncInferQueue(self.compiled, self.streams)

            def done(req: Any, i: int) -> None:
                self._parts[i] = req.get_output_tensor(0).data.copy()

            self._queue.set_callback(done)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        feeds, order = self._feeds(list(texts), batch_size)
        if self._queue is None:
            return self._unsort([self._req.infer(f)[0].copy() for f in feeds], order)
        self._parts = [None] * len(feeds)
        for i, f in enumerate(feeds):
            self._queue.start_async(f, userdata=i)
        self._queue.wait_all()
        return self._unsort(self._parts, order)  # type: ignore[arg-type]

    def encode_one(self, text: str) -> np.ndarray:
        return np.asarray(self._req.infer(self._one(text))[0][0], dtype=np.float32).copy()
