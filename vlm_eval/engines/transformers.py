"""The transformers engine: batched next-token scoring with Hugging Face models.

One forward pass per batch of prompts (left-padded), logits at the last position
only, log-softmax, then log-sum-exp over each option's single-token spellings.
Works on CPU and GPU; the reference implementation the vLLM engine is checked
against. torch and transformers are imported when the engine is built.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterator, Mapping

from vlm_eval.engines.base import ScoreRequest, ScoreResult, error_text
from vlm_eval.engines.model_paths import localize
from vlm_eval.engines.prompting import (AnswerIds, all_scored, check_processor, prepare_each, render_prompt,
                                        result_from_vector, score_chunk)
from vlm_eval.errors import EngineError, MissingDependencyError, UserError

KNOWN_OPTIONS = ("dtype", "device", "max_batch_size", "attn_implementation", "cpu_threads")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


class TransformersEngine:
    """Scores requests with ``AutoModelForImageTextToText`` (+ ``AutoProcessor``).

    Built from a job's model entry: ``{"name", "engine", "path", "revision",
    "lora", "options"}``. Options: ``dtype`` (auto | float32 | bfloat16 |
    float16), ``device`` (auto = cuda if available else cpu), ``max_batch_size``
    (prompts per forward pass, default 16), ``attn_implementation``, ``cpu_threads``
    (torch.set_num_threads for this process; 1 is much faster for tiny models on a
    busy machine, where torch's spinning thread pool can slow a forward 10-100x).
    """

    def __init__(self, model: Mapping[str, Any]):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        name = model.get("name", "model")
        opts = dict(model.get("options") or {})
        unknown = sorted(set(opts) - set(KNOWN_OPTIONS))
        if unknown:
            raise UserError(f"model {name!r}: unknown transformers engine option(s) {unknown}; "
                            f"known: {list(KNOWN_OPTIONS)}")
        dtype = str(opts.get("dtype", "auto"))
        if dtype not in _DTYPES:
            raise UserError(f"model {name!r}: options.dtype must be one of {list(_DTYPES)}, not {dtype!r}")
        device = str(opts.get("device", "auto"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.max_batch_size = int(opts.get("max_batch_size", 16))
        if self.max_batch_size < 1:
            raise UserError(f"model {name!r}: options.max_batch_size must be >= 1")
        if not model.get("path"):
            raise UserError(f"model {name!r}: the transformers engine needs 'path' (a model folder or URL)")

        if opts.get("cpu_threads"):
            torch.set_num_threads(int(opts["cpu_threads"]))
        local = localize(str(model["path"]), f"model {name!r}")
        load_kwargs: dict[str, Any] = {"dtype": dtype if dtype == "auto" else getattr(torch, dtype)}
        if opts.get("attn_implementation"):
            load_kwargs["attn_implementation"] = opts["attn_implementation"]
        try:
            self.processor = AutoProcessor.from_pretrained(local)
            net = AutoModelForImageTextToText.from_pretrained(local, **load_kwargs)
        except (OSError, ValueError, KeyError) as exc:
            raise EngineError(f"model {name!r}: cannot load {model['path']!r} with transformers: "
                              f"{error_text(exc)}") from exc
        check_processor(self.processor)
        if model.get("lora"):
            net = _with_lora(net, localize(str(model["lora"]), f"model {name!r} lora"))
        self.model = net.to(device).eval()
        self.device = torch.device(device)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.tokenizer.padding_side = "left"  # so the answer position is the last one for every row
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        params = inspect.signature(self.model.forward).parameters
        # Only the last position's logits: full-vocab logits for every token would
        # cost batch x length x vocab memory (vocab is 262k for Gemma 3).
        self._logits_to_keep = "logits_to_keep" in params
        # Models with multimodal rotary positions (Qwen2/2.5-VL's mrope, get_rope_index)
        # derive 3-D positions from the attention mask themselves; 1-D ones would be wrong.
        own_positions = any(hasattr(m, "get_rope_index") for m in (self.model, getattr(self.model, "model", None)))
        self._pass_positions = "position_ids" in params and not own_positions
        self._answer_ids = AnswerIds(self.tokenizer)

    # ---- public -------------------------------------------------------------
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Score each request; a request that fails alone becomes an error result."""
        import torch

        prepared, results = prepare_each(self._prepare, requests)
        with torch.inference_mode():
            for chunk in self._chunks(list(prepared), requests):
                self._score_chunk(chunk, requests, prepared, results)
        return all_scored(results)

    def generate(self, requests: list[ScoreRequest], max_tokens: int) -> list[str]:
        """Greedy continuations (``do_sample=False``), at most ``max_tokens`` new tokens each,
        decoded without special tokens; one string per request, in order (see base.GeneratingEngine)."""
        import torch

        texts = [render_prompt(self.processor, req) for req in requests]
        out = [""] * len(requests)
        with torch.inference_mode():
            for chunk in self._chunks(list(range(len(requests))), requests):
                inputs = self._inputs([texts[i] for i in chunk], [requests[i].image for i in chunk])
                ids = self.model.generate(**inputs, max_new_tokens=int(max_tokens), do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
                new = ids[:, inputs["input_ids"].shape[1]:]
                for i, text in zip(chunk, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                    out[i] = text.strip()
        return out

    def _chunks(self, indices: list[int], requests) -> Iterator[list[int]]:
        """Batches of at most max_batch_size: image prompts, then text-only ones (processors
        treat the two differently, so they never share a batch)."""
        for image in (True, False):
            group = [i for i in indices if (requests[i].image is not None) == image]
            for start in range(0, len(group), self.max_batch_size):
                yield group[start:start + self.max_batch_size]

    # ---- internals ----------------------------------------------------------
    def _prepare(self, req: ScoreRequest) -> tuple[str, dict[str, list[int]]]:
        return render_prompt(self.processor, req), self._answer_ids.for_request(req)

    def _score_chunk(self, chunk, requests, prepared, results) -> None:
        score_chunk(lambda idx: self._score_rows(idx, requests, prepared), chunk, requests, results)

    def _score_rows(self, chunk, requests, prepared) -> list[ScoreResult]:
        """One forward pass over ``chunk`` (request indices); raises if the pass fails."""
        logprobs = self._forward([prepared[i][0] for i in chunk], [requests[i].image for i in chunk])
        return [result_from_vector(logprobs[row], prepared[i][1], self.tokenizer) for row, i in enumerate(chunk)]

    def _inputs(self, texts: list[str], images: list[Any]) -> dict[str, Any]:
        """Processor tensors of one batch (left-padded), on the model's device and dtype."""
        import torch

        bos = getattr(self.tokenizer, "bos_token", None)
        # Templates that start with BOS already carry it (same rule as transformers).
        add_special = not (bos and all(t.startswith(bos) for t in texts))
        kwargs: dict[str, Any] = {"text": texts, "return_tensors": "pt", "padding": True,
                                  "add_special_tokens": add_special}
        if images[0] is not None:
            kwargs["images"] = [[img] for img in images]  # one image per prompt
        inputs = self.processor(**kwargs)
        dtype = self.model.dtype
        return {k: (v.to(self.device, dtype) if torch.is_floating_point(v) else v.to(self.device))
                for k, v in inputs.items() if isinstance(v, torch.Tensor)}

    def _forward(self, texts: list[str], images: list[Any]) -> Any:
        """Log-softmax of the next-token logits at the last position: (len(texts), vocab) on CPU."""
        import torch

        inputs = self._inputs(texts, images)
        extra: dict[str, Any] = {}
        if self._logits_to_keep:
            extra["logits_to_keep"] = 1
        if self._pass_positions and "attention_mask" in inputs:
            # Positions count real tokens only, so a left-padded row sees the same
            # positions as when scored alone.
            extra["position_ids"] = (inputs["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        logits = self.model(**inputs, **extra).logits[:, -1, :]
        return torch.log_softmax(logits.float(), dim=-1).cpu()


def _with_lora(net: Any, adapter: str) -> Any:
    """Wrap ``net`` with a PEFT LoRA adapter (peft is optional)."""
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise MissingDependencyError("peft (needed for 'lora')", "pip install peft") from exc
    return PeftModel.from_pretrained(net, adapter)
