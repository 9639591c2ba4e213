"""The ``ingestion`` pipeline: embedded dataset -> tables, vocabulary and encoded captions."""

from kedro.pipeline import Node, Pipeline

from ica_captioning.pipelines.ingestion import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Generate (if selected), read, validate, tokenise, build the vocabulary and encode.

    Returns:
        The pipeline; outputs ``images``, ``captions``, ``quarantine``, ``vocabulary`` and
        ``encoded_captions`` (docs/contracts.md).
    """
    return Pipeline(
        [
            Node(
                nodes.prepare_raw_dataset,
                inputs=["params:dataset", "params:ingestion.synthetic", "params:seed"],
                outputs="raw_dataset",
                name="prepare_raw_dataset",
            ),
            Node(
                nodes.read_annotations,
                inputs=["raw_dataset", "params:dataset", "params:ingestion"],
                outputs=["raw_images", "raw_captions", "annotation_quarantine"],
                name="read_annotations",
            ),
            Node(
                nodes.validate_images,
                inputs=["raw_images", "params:dataset", "params:ingestion"],
                outputs=["images", "image_quarantine"],
                name="validate_images",
            ),
            Node(
                nodes.select_captions,
                inputs=["raw_captions", "images"],
                outputs="captions",
                name="select_captions",
            ),
            Node(
                nodes.merge_quarantine,
                inputs=["annotation_quarantine", "image_quarantine"],
                outputs="quarantine",
                name="merge_quarantine",
            ),
            Node(
                nodes.build_vocabulary,
                inputs=["captions", "params:ingestion"],
                outputs="vocabulary",
                name="build_vocabulary",
            ),
            Node(
                nodes.encode_captions,
                inputs=["captions", "vocabulary"],
                outputs="encoded_captions",
                name="encode_captions",
            ),
        ],
        tags=["ingestion"],
    )
