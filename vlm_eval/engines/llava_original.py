"""Engine ``llava_original``: LLaVA checkpoints in the original LLaVA code's layout (LLaVA-Rad).

Neither vLLM nor transformers' ``LlavaForConditionalGeneration`` loads that layout, so this
engine assembles the model from its parts (llava_original_parts.py): the open_clip / timm
vision trunk -> hidden states of ``mm_vision_select_layer`` -> the ``mm_projector`` -> image
embeddings spliced where the prompt's ``<image>`` stands -> the Llama language model
(transformers ``LlamaForCausalLM``, the projector attached at ``model.mm_projector`` so the
module tree and weight names are LLaVA's and PEFT adapters address it as in training).
Prompts use LLaVA's conversation template "v1" (LLaVA-Rad's eval scripts).

Scoring is the transformers engine's: next-token log-softmax at the last position,
log-sum-exp over each option's single-token spellings (prompting.answer_token_ids /
option_logprobs). Batches are left-padded; position ids count real tokens only.

Model entry: ``path`` = the LLaVA folder (local or URL); ``lora`` = a PEFT LoRA on the
language model (``layers_to_transform`` honoured by PEFT). Options: ``dtype`` (auto =
float16 on GPU, float32 on CPU), ``device``, ``max_batch_size`` (default 8), ``cpu_threads``,
``model_base`` (the Llama/Vicuna folder, for a LoRA-form release such as LLaVA-Rad's own),
``vision_tower_config`` / ``vision_tower_checkpoint`` (override where those files are),
``trust_vision_checkpoint`` (allow a pickled open_clip checkpoint), ``system`` (``request``:
the job's system prompt replaces v1's, the default; ``template``: always v1's).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from vlm_eval.engines import llava_original_parts as parts
from vlm_eval.engines.base import ScoreRequest, ScoreResult, error_text
from vlm_eval.engines.model_paths import localize
from vlm_eval.engines.prompting import AnswerIds, all_scored, prepare_each, result_from_vector, score_chunk
from vlm_eval.errors import EngineError, InputError, MissingDependencyError, UserError

KNOWN_OPTIONS = ("dtype", "device", "max_batch_size", "cpu_threads", "model_base", "vision_tower_config",
                 "vision_tower_checkpoint", "trust_vision_checkpoint", "system")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


class LlavaOriginalEngine:
    """Scores requests with a LLaVA-layout checkpoint; see the module docstring."""

    def __init__(self, model: Mapping[str, Any]):
        import torch

        name = self.name = str(model.get("name", "model"))
        opts = dict(model.get("options") or {})
        unknown = sorted(set(opts) - set(KNOWN_OPTIONS))
        if unknown:
            raise UserError(f"model {name!r}: unknown llava_original engine option(s) {unknown}; known: {list(KNOWN_OPTIONS)}")
        if not model.get("path"):
            raise UserError(f"model {name!r}: the llava_original engine needs 'path' (a LLaVA-layout model folder)")
        device = str(opts.get("device", "auto"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = str(opts.get("dtype", "auto"))
        if dtype not in _DTYPES:
            raise UserError(f"model {name!r}: options.dtype must be one of {list(_DTYPES)}, not {dtype!r}")
        if dtype == "auto":
            dtype = "float32" if device == "cpu" else "float16"
        self.system_mode = str(opts.get("system", "request"))
        if self.system_mode not in ("request", "template"):
            raise UserError(f"model {name!r}: options.system must be 'request' or 'template', not {self.system_mode!r}")
        self.max_batch_size = int(opts.get("max_batch_size", 8))
        if self.max_batch_size < 1:
            raise UserError(f"model {name!r}: options.max_batch_size must be >= 1")
        if opts.get("cpu_threads"):
            torch.set_num_threads(int(opts["cpu_threads"]))

        folder = localize(str(model["path"]), f"model {name!r}")
        base = localize(str(opts["model_base"]), f"model {name!r} model_base") if opts.get("model_base") else None
        cfg = self.config = parts.read_config(folder, name)
        self.select_layer = int(cfg.get("mm_vision_select_layer", -2))
        self.select_feature = str(cfg.get("mm_vision_select_feature", "patch"))
        self.im_start_end = bool(cfg.get("mm_use_im_start_end", False))
        self.device, self.dtype = torch.device(device), getattr(torch, dtype)

        vt_cfg = parts.find_file(folder, opts.get("vision_tower_config") or cfg.get("mm_vision_tower_config"),
                                 ("biomedclipcxr_518.json",), "open_clip config", name)
        vt_ckpt = parts.find_file(folder, opts.get("vision_tower_checkpoint") or cfg.get("mm_vision_tower_checkpoint"),
                                  ("biomedclipcxr_518_checkpoint.pt",), "open_clip checkpoint", name)
        trunk, self.preprocess = parts.build_vision(vt_cfg, vt_ckpt, name, bool(opts.get("trust_vision_checkpoint")))
        self.trunk = trunk.to(self.device, self.dtype).eval()

        self.tokenizer = self._tokenizer(folder, base)
        lm = self._language_model(folder, base, cfg)
        if model.get("lora"):
            lm = _with_lora(lm, localize(str(model["lora"]), f"model {name!r} lora"))
        self.lm = lm.to(self.device, self.dtype).eval()
        self.embed = self.lm.get_input_embeddings()
        self.projector = self.lm.get_base_model().model.mm_projector if hasattr(self.lm, "get_base_model") \
            else self.lm.model.mm_projector
        self._answer_ids = AnswerIds(self.tokenizer)

    # ---- loading ----------------------------------------------------------------
    def _tokenizer(self, folder: str, base: str | None):
        from transformers import AutoTokenizer

        src = folder if any(os.path.isfile(os.path.join(folder, f)) for f in
                            ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")) else base
        if src is None:
            raise InputError(f"model {self.name!r}: no tokenizer in {folder!r}; set options.model_base to the "
                             "language model's folder (LLaVA-Rad: lmsys/vicuna-7b-v1.5)")
        try:
            tok = AutoTokenizer.from_pretrained(src)
        except (OSError, ValueError) as exc:
            raise EngineError(f"model {self.name!r}: cannot load the tokenizer from {src!r}: {error_text(exc)}") from exc
        if self.im_start_end:
            tok.add_tokens([parts.IM_START, parts.IM_END], special_tokens=True)
        return tok

    def _language_model(self, folder: str, base: str | None, cfg: dict):
        """LlamaForCausalLM with LLaVA's projector at ``model.mm_projector``, weights from the
        full-model files, or (LoRA form) from ``model_base`` + non_lora_trainables.bin + the folder's adapter."""
        import torch
        from transformers import LlamaForCausalLM

        lcfg = parts.llama_config(cfg)
        files = parts.weight_files(folder)
        src = folder if files else base
        if src is None:
            raise InputError(f"model {self.name!r}: {folder!r} holds no full model weights (model*.safetensors / "
                             "pytorch_model*.bin); for a LoRA-form release (adapter + non_lora_trainables.bin, as "
                             "LLaVA-Rad's) set options.model_base to the base Llama/Vicuna folder")
        try:
            lm = LlamaForCausalLM.from_pretrained(src, config=lcfg, dtype=torch.float32 if self.device.type == "cpu"
                                                  else self.dtype)
        except (OSError, ValueError) as exc:
            raise EngineError(f"model {self.name!r}: cannot load the Llama weights from {src!r}: {error_text(exc)}") from exc
        if lm.get_input_embeddings().weight.shape[0] < len(self.tokenizer):
            lm.resize_token_embeddings(len(self.tokenizer))
        lm.model.mm_projector = parts.build_projector(str(cfg.get("mm_projector_type", "linear")),
                                                      int(cfg["mm_hidden_size"]), int(lcfg.hidden_size))
        if files:
            extra = {}
            for f in files:
                extra.update(parts.read_tensors(f, lambda k: k.startswith("model.mm_projector.")))
        else:
            path = os.path.join(folder, "non_lora_trainables.bin")
            if not os.path.isfile(path):
                raise InputError(f"model {self.name!r}: {folder!r} has neither full weights nor non_lora_trainables.bin")
            extra = parts.non_lora_trainables(folder)
        proj = {k[len("model.mm_projector."):]: v for k, v in extra.items() if k.startswith("model.mm_projector.")}
        missing = sorted(set(lm.model.mm_projector.state_dict()) - set(proj))
        if missing:
            raise InputError(f"model {self.name!r}: projector weights model.mm_projector.{missing[0]} not found in "
                             f"{folder!r} (mm_projector_type {cfg.get('mm_projector_type')!r})")
        lm.model.mm_projector.load_state_dict(proj)
        rest = {k: v for k, v in extra.items() if not k.startswith("model.mm_projector.")}
        if rest:  # e.g. embed_tokens / lm_head trained alongside a LoRA
            lm.load_state_dict(rest, strict=False)
        if not files and os.path.isfile(os.path.join(folder, "adapter_config.json")):
            lm = _with_lora(lm, folder).merge_and_unload()  # the release's own fine-tune, merged as LLaVA does
        return lm

    # ---- scoring ------------------------------------------------------------------
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Score each request; a request that fails alone becomes an error result."""
        import torch

        prepared, results = prepare_each(self._prepare, requests)
        order = list(prepared)
        with torch.inference_mode():
            for start in range(0, len(order), self.max_batch_size):
                score_chunk(lambda idx: self._score_rows(idx, prepared), order[start:start + self.max_batch_size],
                            requests, results)
        return all_scored(results)

    def _prepare(self, req: ScoreRequest):
        ids_by_option = self._answer_ids.for_request(req)  # checks the image type first
        system = req.system if self.system_mode == "request" else None
        prompt = parts.v1_prompt(req.prompt, system, req.image is not None, self.im_start_end)
        chunks = parts.prompt_token_chunks(self.tokenizer, prompt)
        pixels = self.preprocess(req.image.convert("RGB")) if req.image is not None else None
        return chunks, pixels, ids_by_option

    def _score_rows(self, chunk: list[int], prepared) -> list[ScoreResult]:
        logprobs = self.forward([prepared[i][0] for i in chunk], [prepared[i][1] for i in chunk])
        return [result_from_vector(logprobs[row], prepared[i][2], self.tokenizer) for row, i in enumerate(chunk)]

    def image_features(self, pixels):
        """(batch, tokens, hidden) projected image embeddings for (batch, 3, H, W) pixels."""
        feats = parts.tower_features(self.trunk, pixels.to(self.device, self.dtype), self.select_layer, self.select_feature)
        return self.projector(feats)

    def forward(self, chunks_list: list[list[list[int]]], pixels_list: list[Any]):
        """Log-softmax of the next-token logits after each prompt: (batch, vocab), float32 on CPU.

        ``chunks_list[b]``: the prompt's token chunks, with one image's embeddings between
        consecutive chunks (``pixels_list[b]``; None = text only)."""
        import torch

        with_image = [b for b, p in enumerate(pixels_list) if p is not None]
        feats = {}
        if with_image:
            stacked = self.image_features(torch.stack([pixels_list[b] for b in with_image]))
            feats = {b: stacked[k] for k, b in enumerate(with_image)}
        rows = []
        for b, chunks in enumerate(chunks_list):
            if len(chunks) > 2 or (len(chunks) == 2) != (b in feats):
                raise InputError("a prompt must hold exactly one image placeholder when, and only when, an image is given")
            pieces = [self.embed(torch.tensor(chunks[0], dtype=torch.long, device=self.device))]
            if len(chunks) == 2:
                pieces += [feats[b].to(pieces[0].dtype),
                           self.embed(torch.tensor(chunks[1], dtype=torch.long, device=self.device))]
            rows.append(torch.cat(pieces, 0))
        longest = max(r.shape[0] for r in rows)
        hidden = rows[0].shape[1]
        embeds = torch.zeros(len(rows), longest, hidden, dtype=rows[0].dtype, device=self.device)
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=self.device)
        for b, r in enumerate(rows):  # left padding: the answer position is the last one for every row
            embeds[b, longest - r.shape[0]:] = r
            mask[b, longest - r.shape[0]:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, logits_to_keep=1)
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).cpu()


def _with_lora(net: Any, adapter: str) -> Any:
    """Wrap ``net`` with a PEFT LoRA adapter (``layers_to_transform`` and all) from ``adapter``."""
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise MissingDependencyError("peft (needed for 'lora')", "pip install peft") from exc
    if not os.path.isfile(os.path.join(adapter, "adapter_config.json")):
        raise InputError(f"lora folder {adapter!r} has no adapter_config.json (expected a PEFT LoRA adapter)")
    return PeftModel.from_pretrained(net, adapter)
