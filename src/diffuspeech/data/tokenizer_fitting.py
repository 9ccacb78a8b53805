"""The fit-tokenizer command: fit a speech tokenizer's centroids on a corpus and write them to a file."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from diffuspeech.data.features import fit_speech_tokenizer
from diffuspeech.data.manifest import read_manifest
from diffuspeech.errors import RecipeError
from diffuspeech.recipe import apply_overrides, build_component, component_args

log = logging.getLogger(__name__)


def fit_tokenizer_file(recipe: DictConfig, output: Path | None, force: bool) -> Path:
    """Fit the recipe's speech tokenizer on ``data_dir``'s training split and write its centroids.

    The file is ``output``, or else the recipe's ``speech_tokenizer.args.centroids_path``.
    Up to ``training.speech_tokenizer_fit_files`` audio files are used, drawn with
    the recipe's seed. The tokenizer must take ``centroids_path`` and have
    ``save_centroids(path)``, as ``hubert_kmeans`` does. Raises ``RecipeError``
    when no file is named, when the file exists and ``force`` is False, or when
    the tokenizer cannot save centroids.
    """
    arguments = component_args(recipe, "speech_tokenizer")
    name = OmegaConf.select(recipe, "speech_tokenizer.name", default=None)
    if "centroids_path" not in arguments:
        raise RecipeError(
            f"speech_tokenizer.name: {name} takes no centroids_path, so there is no centroid file to fit; "
            "fit-tokenizer works with tokenizers such as hubert_kmeans (mel_kmeans fits itself during train)"
        )
    target = output or (Path(str(arguments["centroids_path"])) if arguments["centroids_path"] else None)
    if target is None:
        raise RecipeError("speech_tokenizer.args.centroids_path is null; set it or pass --output FILE")
    if target.exists() and not force:
        raise RecipeError(f"centroid file {target} already exists; pass --force to overwrite it")

    # Build the tokenizer without centroids so that it starts unfitted.
    unfitted = apply_overrides(recipe.copy(), ["speech_tokenizer.args.centroids_path=null"])
    tokenizer = build_component(unfitted, "speech_tokenizer", "speech_tokenizer")
    save = getattr(tokenizer, "save_centroids", None)
    if not callable(save):
        raise RecipeError(f"speech_tokenizer.name: {name} cannot write a centroid file (it has no save_centroids)")

    rows = read_manifest(Path(str(recipe.data_dir)) / "manifests" / "train.jsonl")
    fit_files = int(OmegaConf.select(recipe, "training.speech_tokenizer_fit_files", default=1500))
    try:
        fit_speech_tokenizer(tokenizer, rows, fit_files, int(recipe.seed))
    except ValueError as error:
        raise RecipeError(f"speech_tokenizer: fitting failed: {error}") from error
    save(target)
    log.info("wrote %d centroids to %s", tokenizer.num_units, target)
    return target
