"""The ``transformer`` pipeline: train and evaluate the Transformer decoder, λ = 0 and λ > 0.

``kedro run --pipeline transformer`` (not part of the default ``kedro run``) trains
``transformer_baseline.model`` and ``transformer_ica.model`` with the train pipeline's node, in
two namespaces whose ``train_overrides`` (conf/base/parameters_transformer.yml) set
``architecture: transformer``, then evaluates them with the evaluation pipeline's nodes. The
reports (``caption_metrics``, ``grounding_metrics``, ``comparison``, the figures) hold their
rows next to the Show-Attend-Tell models' rows when those models have been trained (the latest
``baseline.model`` / ``ica.model`` versions; without them there are no SAT rows). The Transformer
variants also get per-head attention figures (``transformer_head_figures``).
"""

from __future__ import annotations

import warnings

from kedro.pipeline import Node, Pipeline

from ica_captioning.pipelines.detection import create_pipeline as detection_pipeline
from ica_captioning.pipelines.evaluation import create_evaluation_pipeline
from ica_captioning.pipelines.evaluation import nodes as evaluation_nodes
from ica_captioning.pipelines.ingestion import create_pipeline as ingestion_pipeline
from ica_captioning.pipelines.matching import create_pipeline as matching_pipeline
from ica_captioning.pipelines.pretraining import create_pipeline as pretraining_pipeline
from ica_captioning.pipelines.train.pipeline import create_training_pipeline
from ica_captioning.variants import TRANSFORMER_VARIANTS, VARIANTS


def create_transformer_evaluation_pipeline() -> Pipeline:
    """Evaluation of the Transformer variants, and of the SAT variants when they are trained.

    Returns:
        :func:`~ica_captioning.pipelines.evaluation.create_evaluation_pipeline` of the SAT and
        Transformer variants (the SAT ones optional) plus the per-head attention figures of the
        Transformer variants.
    """
    evaluation = create_evaluation_pipeline((*VARIANTS, *TRANSFORMER_VARIANTS), optional=VARIANTS)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        heads = Pipeline(
            [
                Node(
                    evaluation_nodes.plot_head_attention,
                    inputs={
                        "evaluation_images": "evaluation_images",
                        "dataset": "params:dataset",
                        "evaluation": "params:evaluation",
                        **evaluation_nodes.variant_inputs(
                            TRANSFORMER_VARIANTS, model="model", generated="generated_captions"
                        ),
                    },
                    outputs="transformer_head_figures",
                    name="plot_head_attention",
                )
            ],
            tags=["evaluation", "transformer"],
        )
    return evaluation + heads


def create_pipeline(**kwargs) -> Pipeline:
    """The transformer pipeline with the stages it reads from.

    Returns:
        ``ingestion + detection + matching + pretraining`` (as in ``train``; add
        ``--only-missing-outputs`` to skip those whose outputs exist), the two Transformer
        training namespaces and their evaluation.
    """
    upstream = (
        ingestion_pipeline() + detection_pipeline() + matching_pipeline() + pretraining_pipeline()
    )
    training = create_training_pipeline(TRANSFORMER_VARIANTS, tag="transformer")
    return upstream + training + create_transformer_evaluation_pipeline()
