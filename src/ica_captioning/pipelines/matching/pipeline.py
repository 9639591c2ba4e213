"""``matching`` pipeline definition."""

from kedro.pipeline import Node, Pipeline

from ica_captioning.pipelines.matching.nodes import match_captions


def create_pipeline(**kwargs) -> Pipeline:
    """Captions + detections -> ``pseudo_labels`` and ``matching_stats``."""
    return Pipeline(
        [
            Node(
                match_captions,
                inputs=["captions", "detections", "params:matching"],
                outputs=["pseudo_labels", "matching_stats"],
                name="match_captions",
            )
        ]
    )
