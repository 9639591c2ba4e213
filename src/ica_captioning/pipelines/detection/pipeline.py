"""``detection`` pipeline definition."""

from kedro.pipeline import Node, Pipeline

from ica_captioning.pipelines.detection.nodes import detect_shards, merge_detection_shards


def create_pipeline(**kwargs) -> Pipeline:
    """Detect (sharded, resumable), then merge the shards into ``detections``.

    Several machines: run ``kedro run --pipeline detection --nodes detect_shards --params
    detection.shard_index=K,detection.num_shards=N`` on each, then ``kedro run --pipeline
    detection`` once to merge (finished shards are skipped).
    """
    return Pipeline(
        [
            Node(
                detect_shards,
                inputs=["images", "params:dataset", "params:detection"],
                outputs="detection_progress",
                name="detect_shards",
            ),
            Node(
                merge_detection_shards,
                inputs=["images", "detection_progress", "params:dataset", "params:detection"],
                outputs=["detections", "detection_quarantine"],
                name="merge_detection_shards",
            ),
        ]
    )
