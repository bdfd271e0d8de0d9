"""Fine-tuning a causal-LM teacher on human grades: every weight (for machines with a GPU) or
low-rank adapters (LoRA, which a CPU can train).

The loss is the cross-entropy between the human grade and the softmax over the grade digits'
next-token logits, the very logits the teacher is read from; the tuned model is saved (with its
tokenizer) as a Hugging Face directory, atomically, and is then a teacher like any other local
model directory (its zero-shot grades are the tuned ones, and a head can still be adapted on
top). Full fine-tuning is slow on a CPU even for a 135M model. With ``lora_rank > 0`` the base
weights stay frozen and only rank-``r`` adapters on every attention and MLP projection learn
(Hu et al., *LoRA: Low-Rank Adaptation of Large Language Models*, ICLR 2022, through Hugging
Face ``peft``): about 2% of SmolLM2-135M's weights at rank 8, which is what the paper's "LLM
adapted to relevance grades" needs on a 2-core machine, between the head on frozen hidden
states (:mod:`prectr.encoder.teachers.adapt`) and full fine-tuning. The adapters are merged
into the weights before saving, so the saved teacher loads and runs as fast as the base model.
The teacher passed in is trained in place; load the saved directory to use the tuned teacher
(the last epoch's weights).

The epochs run on the training engine (:class:`prectr.train.engine.Engine`) in a run directory
(default ``OUT.run`` beside the tuned model): its settings, the train log with a validation
after each epoch, TensorBoard scalars and the ``last`` and ``best`` (lowest validation
cross-entropy) checkpoints, written at each epoch's end, so a killed fine-tuning resumes there
and ends with the same weights. Under ``torchrun`` (one GPU per process) each process trains on
its share of every batch, the engine averages the gradients, and the main process saves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ConfigDict, Field
from torch import nn

from prectr.encoder.pairs import VALIDATION_SPLIT, validation_queries
from prectr.encoder.teachers.base import N_GRADES
from prectr.encoder.teachers.llm import CausalLMTeacher, forget_gguf
from prectr.io import atomic_dir, claim_run_dir
from prectr.section import Section
from prectr.train.distributed import join
from prectr.train.engine import TRAIN_LOG, Engine
from prectr.train.stages import Stage, Stopping, shuffled_steps
from prectr.words import count


class FinetuneConfig(Section):
    """How a language-model teacher is fine-tuned (a run's ``config.json`` holds it)."""

    model_config = ConfigDict(frozen=True)

    epochs: int = Field(2, ge=1)
    """Passes over the training pairs."""
    lr: float = Field(2e-5, ge=0)
    """AdamW's learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW's weight decay."""
    batch_size: int = Field(16, ge=1)
    """Pairs per step, over all processes."""
    valid_share: float = Field(0.1, gt=0, lt=1)
    """Share of the queries whose pairs validate: the top of the query hash range
    (:func:`prectr.encoder.pairs.validation_queries`), so at a share at least the student's
    SFT ``valid_share`` (0.1 by default) the teacher never trains on the student's validation
    pairs."""
    seed: int = 0
    """Seed of the batches' order."""
    device: str = "cuda"
    """Where the model trains: cuda (every weight needs a GPU) or cpu."""
    lora_rank: int = Field(0, ge=0)
    """0: every weight trains; r > 0: rank-r adapters only (LoRA), CPU-friendly."""
    lora_alpha: float = Field(16.0, gt=0)
    """The adapters' output is scaled by lora_alpha / lora_rank."""
    lora_targets: tuple[str, ...] = (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    )  # fmt: skip
    """The projections that get adapters (Llama's names: SmolLM2, the tiny test model)."""


def _batch(teacher: CausalLMTeacher, pairs: list[list[int]], device: str) -> dict[str, Any]:
    """Whole prompts (instruction + pair), left-padded, with positions that skip the padding."""
    rows = [teacher.prefix_ids + p for p in pairs]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), teacher.pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "position_ids": positions.to(device)}  # fmt: skip


def _chunks(rows: np.ndarray, size: int) -> list[np.ndarray]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def _grade_logits(
    teacher: CausalLMTeacher, pairs: list[list[int]], rows: np.ndarray, device: str
) -> torch.Tensor:
    batch = _batch(teacher, [pairs[i] for i in rows], device)
    last = teacher.model.get_decoder()(**batch).last_hidden_state[:, -1]
    head = teacher.model.get_output_embeddings()
    logits = last @ head.weight[teacher.grade_ids].T
    bias = getattr(head, "bias", None)
    return logits if bias is None else logits + bias[teacher.grade_ids]


def finetune(
    teacher: CausalLMTeacher,
    queries: Sequence[str],
    titles: Sequence[str],
    grades: np.ndarray,
    out: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    overwrite: bool = False,
    run_dir: str | Path | None = None,
    resume: bool = False,
    stop_after: int | None = None,
) -> list[dict[str, float]]:
    """Fine-tune ``teacher`` on (pair, human grade): every weight, or with
    ``config.lora_rank > 0`` low-rank adapters merged into the weights at the end; save it to
    ``out``.

    ``run_dir`` (default ``OUT.run``) records the settings (``config.json``: the config and a
    digest of the pairs), so ``resume`` refuses a run of other settings or data; ``overwrite``
    replaces the run and the tuned model; ``stop_after`` imitates a kill at that step. Returns,
    in the main process, the train log's validation lines: per epoch the mean training loss
    (``train_loss``, of the main process's shares), the validation cross-entropy
    (``logloss``) and ``accuracy``."""
    grades = np.asarray(grades)
    if not np.isin(grades, np.arange(N_GRADES)).all() or grades.shape != (len(queries),):
        raise ValueError(
            f"need one grade 0-3 per pair: {count(len(queries), 'pair')}, {grades.shape}"
        )
    if teacher.dtype == "int8":
        raise ValueError(f"{teacher.source} runs in int8, which cannot be trained: fine-tune "
                         "it in float32 or bfloat16")  # fmt: skip
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            "no CUDA device: fine-tuning every weight needs a GPU (pass device='cpu' to force, "
            "or lora_rank > 0 to train adapters only, which a CPU can)"
        )
    out = Path(out)
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.name + ".run")
    # joined before the model moves: NCCL's join picks this process's GPU
    processes = join("nccl" if config.device.startswith("cuda") else "gloo")
    pairs = teacher.pair_ids(queries, titles)
    valid = validation_queries(queries, config.valid_share)
    valid_rows, train_rows = np.flatnonzero(valid), np.flatnonzero(~valid)
    if valid.all() or not valid.any():
        raise ValueError(f"too few queries to train and validate on "
                         f"({count(len(set(queries)), 'query', 'queries')}, "
                         f"valid_share {config.valid_share}): pass more queries or "
                         "pairs")  # fmt: skip
    model = teacher.model.to(config.device)
    if config.lora_rank:
        model = _with_adapters(model, config)
        teacher.model = model
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.lr,
        weight_decay=config.weight_decay,
    )
    loss_fn, y = nn.CrossEntropyLoss(), torch.from_numpy(grades.astype(np.int64)).to(config.device)
    epoch_losses: list[float] = []  # the main process's, this epoch

    def loss(rows: np.ndarray) -> dict[str, torch.Tensor]:
        value = loss_fn(_grade_logits(teacher, pairs, rows, config.device).float(), y[rows])
        epoch_losses.append(value.item())
        return {"loss": value}

    @torch.no_grad()
    def validate() -> dict[str, float]:
        model.eval()
        logits = torch.cat([_grade_logits(teacher, pairs, rows, config.device).float()
                            for rows in _chunks(valid_rows, config.batch_size)])  # fmt: skip
        target = y[valid_rows]
        metrics = {
            "train_loss": float(np.mean(epoch_losses)),
            "logloss": float(loss_fn(logits, target)),
            "accuracy": float((logits.argmax(1) == target).float().mean()),
        }  # fmt: skip
        epoch_losses.clear()
        return metrics

    data = json.dumps([list(queries), list(titles), grades.tolist()]).encode()
    wanted = {"finetune": config.model_dump(mode="json"),  # as config.json reads back
              "pairs": len(queries), "digest": hashlib.sha256(data).hexdigest()[:16],
              "validation": VALIDATION_SPLIT}  # fmt: skip
    processes.on_main(lambda: claim_run_dir(run_dir, "config.json", wanted, resume,
                                            "the settings differ", overwrite))  # fmt: skip
    engine = Engine({"model": model}, optimizer, directory=run_dir, stopping=Stopping("logloss"),
                    tensorboard=True, stop_after=stop_after, processes=processes)  # fmt: skip
    steps = shuffled_steps(train_rows, config.batch_size, config.seed, processes)
    per_epoch = -(-train_rows.size // config.batch_size)
    engine.fit(Stage("train", config.epochs, steps, loss, validate, steps_per_epoch=per_epoch),
               resume)  # fmt: skip
    if not processes.main:
        return []
    if config.lora_rank:
        model = model.merge_and_unload()
        teacher.model = model
    model.to("cpu")
    forget_gguf(model)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        teacher.tokenizer.save_pretrained(tmp)
    lines = [json.loads(x) for x in (run_dir / TRAIN_LOG).read_text().splitlines()]
    return [x for x in lines if x["split"] == "valid"]


def _with_adapters(model: nn.Module, config: FinetuneConfig) -> nn.Module:
    """``model`` with LoRA adapters of ``config.lora_rank`` on ``config.lora_targets``; every
    other weight frozen. Raises when none of the targets is in the model."""
    from peft import LoraConfig, get_peft_model  # imports accelerate: only when asked for

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.lora_targets if t in present]
    if not targets:
        raise ValueError(
            f"lora_targets {', '.join(config.lora_targets)}: none is a module of this model"
        )
    adapters = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                          target_modules=targets, bias="none")  # fmt: skip
    torch.manual_seed(config.seed)  # the adapters' first weights: a run is a function of its seed
    return get_peft_model(model, adapters)
