"""The same zero-shot numbers through lm-evaluation-harness (``lm_eval``), fully offline.

- ``SparsedepthLM``: an ``lm_eval`` model (registered as ``"sparsedepth"``) for our models and tokenizers;
  ``loglikelihood`` goes through lm-eval's own request encoding and our batched scorer
  (``zero_shot.score_tokens``). Once this module is imported, ``lm_eval.simple_evaluate(model="sparsedepth",
  model_args="run_dir=RUN_DIR", ...)`` loads a run directory.
- ``write_task_configs(dest)``: local task yaml files that ``include`` lm-eval's own task configs (so the
  prompts are lm-eval's) and point them at the packaged data (``dataset_path: json`` with
  ``dataset_kwargs.data_files``); load them with ``TaskManager(include_path=dest, include_defaults=False)``.
- ``lm_eval_zero_shot(model, tokenizer, ...)``: runs both and returns ``zero_shot``'s result schema.

Offline: the hub switches are set before ``datasets`` / ``lm_eval`` are imported, and the configs read
only local files.
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

import yaml  # noqa: E402
from lm_eval.api.model import TemplateLM  # noqa: E402
from lm_eval.api.registry import register_model  # noqa: E402

from .tasks import TASKS, EvalError, check_tasks, data_file  # noqa: E402
from .zero_shot import get_encoder, score_tokens, summarize  # noqa: E402

# Our task name -> lm-eval's own task config (path inside the installed lm_eval/tasks folder).
LM_EVAL_CONFIGS = {
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "piqa": "piqa/piqa.yaml",
    "sciq": "sciq/sciq.yaml",
    "winogrande": "winogrande/default.yaml",
    "openbookqa": "openbookqa/openbookqa.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "copa": "super_glue/copa/default.yaml",
    "social_iqa": "siqa/siqa.yaml",
    "commonsense_qa": "commonsense_qa/default.yaml",
}
TAG = "sparsedepth_zero_shot"


@register_model("sparsedepth")
class SparsedepthLM(TemplateLM):
    """lm-eval model over a ``sparsedepth`` Transformer and its tokenizer (TokenData or tokenizers.Tokenizer).

    Build from objects (``SparsedepthLM(model=m, tokenizer=data)``) or from a run directory
    (``run_dir=...``, loaded with ``sparsedepth.train.load_run``). Only log-likelihood requests are
    supported (multiple-choice and perplexity tasks)."""

    def __init__(self, model: Any = None, tokenizer: Any = None, run_dir: str | None = None,
                 batch_size: int | str = 32, device: str = "auto", max_length: int | None = None,
                 progress: bool = True, **_: Any):
        super().__init__()
        if model is None:
            if run_dir is None:
                raise ValueError("SparsedepthLM needs model= and tokenizer=, or run_dir=")
            from ..train import load_run  # lazy: the trainer is only needed for run directories

            model, _cfg, tokenizer = load_run(run_dir, device=device)
        if tokenizer is None:
            raise ValueError("SparsedepthLM needs the tokenizer (TokenData or tokenizers.Tokenizer) of the model")
        self.model = model
        self._encode, self._eos = get_encoder(tokenizer)
        self._decoder = getattr(tokenizer, "tokenizer", tokenizer)  # TokenData wraps a tokenizers.Tokenizer
        self.batch_size = 32 if batch_size in (None, "auto") else int(batch_size)  # no auto-sizing: fixed batches
        self._max_length = max_length or model.cfg.max_seq_len
        self.progress = progress

    @property
    def eot_token_id(self) -> int:
        if self._eos is None:
            raise ValueError("the tokenizer has no <|endoftext|> token for empty contexts")
        return self._eos

    @property
    def max_length(self) -> int:
        return self._max_length

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return self._encode([string])[0]

    def tok_decode(self, tokens: Sequence[int], **kwargs: Any) -> str:
        return self._decoder.decode([int(t) for t in tokens])

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        pairs = [(ctx, cont) for _, ctx, cont in requests]
        out = score_tokens(self.model, pairs, batch_size=self.batch_size, max_len=self._max_length,
                           progress=self.progress and not disable_tqdm)
        for (key, _, _), res in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", key, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Whole-document log-likelihood in disjoint windows of ``max_length`` (lm-eval's rolling scheme)."""
        from lm_eval import utils

        out = []
        for (text,) in [req.args for req in requests]:
            windows = map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.eot_token_id,
                max_seq_len=self.max_length, context_len=1))
            scores = score_tokens(self.model, list(windows), batch_size=self.batch_size, max_len=self._max_length)
            out.append(sum(ll for ll, _ in scores))
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        # Deliberately unsupported: every task the paper reports is multiple choice (log-likelihood).
        raise EvalError("SparsedepthLM scores log-likelihoods only; choose multiple-choice or perplexity tasks "
                        f"(for example {', '.join(TASKS[:3])}), not generation tasks")


def lm_eval_tasks_dir() -> Path:
    """The folder of lm-eval's built-in task configs."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).resolve().parent


def write_task_configs(dest: str | os.PathLike, tasks: Sequence[str] | str = TASKS,
                       cache_dir: str | os.PathLike | None = None) -> Path:
    """Write ``dest/<task>.yaml`` for each task: lm-eval's own config, re-pointed at the packaged data.

    Overridden keys only: data source (local json, validation split only), the tag, and the metrics
    (acc and acc_norm; WinoGrande keeps lm-eval's acc only, see ``tasks``). ``cache_dir`` is where
    ``datasets`` caches the converted json (default: its usual cache)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    base = lm_eval_tasks_dir()
    for name in check_tasks(tasks):
        official = base / LM_EVAL_CONFIGS[name]
        if not official.is_file():
            raise FileNotFoundError(f"lm-eval's config for {name} is missing at {official}; install lm_eval==0.4.13")
        metrics = ["acc"] if name == "winogrande" else ["acc", "acc_norm"]
        kwargs: dict[str, Any] = {"data_files": {"validation": str(data_file(name))}}
        if cache_dir is not None:
            kwargs["cache_dir"] = str(cache_dir)
        cfg = {
            "include": str(official),
            "task": name,
            "tag": [TAG],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": kwargs,
            "training_split": None,
            "validation_split": "validation",
            "test_split": None,
            "fewshot_split": None,
            "num_fewshot": 0,
            "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in metrics],
        }
        (dest / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return dest


def lm_eval_zero_shot(model: Any, tokenizer: Any, tasks: Sequence[str] | str = TASKS, limit: int | None = None,
                      batch_size: int = 32, progress: bool = False) -> dict[str, Any]:
    """Zero-shot accuracy through ``lm_eval.simple_evaluate`` on the packaged data, in ``zero_shot``'s
    schema (WinoGrande's acc_norm = acc as there). Extra key ``"lm_eval"``: the harness's raw results.
    Note that ``simple_evaluate`` reseeds python, numpy and torch (lm-eval's default seeds)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    names = check_tasks(tasks)
    lm = SparsedepthLM(model=model, tokenizer=tokenizer, batch_size=batch_size, progress=progress)
    with tempfile.TemporaryDirectory(prefix="sparsedepth-lm-eval-") as tmp:
        cfg_dir = write_task_configs(Path(tmp) / "tasks", names, cache_dir=Path(tmp) / "hf_datasets")
        res = lm_eval.simple_evaluate(
            model=lm, tasks=names, task_manager=TaskManager(include_path=str(cfg_dir), include_defaults=False),
            num_fewshot=0, limit=limit, bootstrap_iters=0, log_samples=False, batch_size=batch_size)
    per_task = {}
    for name in names:
        r = res["results"][name]
        acc = float(r["acc,none"])
        per_task[name] = {"acc": acc, "acc_norm": float(r.get("acc_norm,none", acc)),
                          "n": int(res["n-samples"][name]["effective"])}
    out = summarize(per_task)
    out["lm_eval"] = {k: res["results"][k] for k in names}
    return out
