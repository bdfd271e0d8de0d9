"""Loading a trained run: its config, fitted features and a checkpoint's model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prectr import __version__
from prectr.config import ExperimentConfig, saved_experiment
from prectr.data.features import FeatureEncoder
from prectr.models import RankingModel, build_model
from prectr.models.calibration import load_calibrator
from prectr.train.checkpoint import load_checkpoint, load_into


@dataclass
class TrainedRun:
    path: Path
    config: ExperimentConfig
    encoder: FeatureEncoder
    model: RankingModel


def load_trained(run_dir: str | Path, checkpoint: str = "best") -> TrainedRun:
    """Rebuild the model of a run directory from its config, features and a checkpoint, with
    the checkpoint's calibrator (:mod:`prectr.models.calibration`) when it has one.

    A directory that is not a complete run, a checkpoint written by another prectr version,
    or one whose parameters do not fit the model its config builds, is refused with a message
    naming what is missing or different.
    """
    run_dir = Path(run_dir)
    config = saved_experiment(run_dir)
    encoder = FeatureEncoder.load(run_dir / "features")
    checkpoint_path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    state = load_checkpoint(checkpoint_path)
    if state.get("prectr_version") != __version__:
        raise ValueError(
            f"{run_dir}: checkpoint from prectr {state.get('prectr_version')}, "
            f"this is {__version__}; retrain or use the matching version"
        )
    model = build_model(config.model, encoder.specs, encoder.vocab_sizes, config.model_params,
                        config.train.reference_position)  # fmt: skip
    load_into(model, state["model"], checkpoint_path)
    model.calibrator = load_calibrator(checkpoint_path)
    model.eval()
    return TrainedRun(run_dir, config, encoder, model)
