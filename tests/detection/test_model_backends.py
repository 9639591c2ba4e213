"""torchvision end to end on CPU with test-made weights; detectron2 absent; image checks."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from coco_toys import SIZES
from project_conf import section

from ica_captioning.detection import (
    DetectionConfigError,
    decode_masks,
    image_records,
    make_backend,
    merge_shards,
    run_sharded,
)
from ica_captioning.detection.detectron2_backend import (
    Detectron2Backend,
    Detectron2ImportFailed,
    Detectron2Unavailable,
    import_detectron2,
)
from ica_captioning.detection.images import read_detection_image
from ica_captioning.detection.torchvision_backend import TorchvisionBackend, coco_categories
from ica_captioning.params import DatasetParams, DetectionParams

INSTALL = (
    "pip install 'setuptools<81' && "
    "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
)


def detection_params(**overrides) -> DetectionParams:
    """conf/base's ``detection`` section with single keys overridden, parsed."""
    return DetectionParams.parse(section("detection", **overrides), "detection")


def torchvision_backend(weights, **overrides) -> TorchvisionBackend:
    """The torchvision backend of conf/base's settings for ``weights``."""
    return TorchvisionBackend.from_params(detection_params(weights=weights, **overrides))


def test_image_checks(toy):
    recs = image_records(toy.images, toy.root)
    pixels, bad = read_detection_image(recs[0])
    assert bad is None and pixels.shape == (32, 48, 3) and pixels.dtype == np.uint8
    (toy.root / "images" / "000002.png").write_bytes(b"\x89PNG not really")
    _, bad = read_detection_image(recs[1])
    assert bad["image_id"] == 2 and bad["reason"].startswith("image fails to decode")
    assert bad["source"] == "detection" and bad["file"].endswith("000002.png")
    (toy.root / "images" / "000003.png").unlink()
    assert read_detection_image(recs[2])[1]["reason"] == "image file not found"
    wrong = recs[0].__class__(1, "x", recs[0].path, 47, 32)
    reason = read_detection_image(wrong)[1]["reason"]
    assert "48x32 (WxH) but the images table says 47x32" in reason


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """A randomly initialised torchvision Mask R-CNN, saved as a user's state_dict file."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    path = tmp_path_factory.mktemp("weights") / "maskrcnn_random.pth"
    torch.save(model.state_dict(), path)
    return path


# Small images, few proposals: random weights give near-uniform scores, and without these limits
# NMS over ~90k boxes dominates the CPU time.
OPTIONS = {"rpn_pre_nms_top_n_test": 50, "rpn_post_nms_top_n_test": 20}
TV = {"min_size": 64, "max_size": 96, "options": OPTIONS}


@pytest.mark.slow
def test_torchvision_end_to_end_on_cpu(toy, tmp_path, weights_file):
    params = detection_params(
        backend="torchvision",
        weights=str(weights_file),
        device="cpu",
        score_threshold=0.0,  # random weights: keep whatever comes out
        max_detections=5,
        batch_size=2,
        torchvision=TV,
    )
    backend = make_backend(params, DatasetParams.parse(section("dataset"), "dataset"), toy.images)
    assert isinstance(backend, TorchvisionBackend) and backend.categories == coco_categories()
    # Image 3 is broken: quarantined, the others are detected.
    (toy.root / "images" / "000003.png").write_bytes(b"junk")
    records = image_records(toy.images, toy.root)
    report = run_sharded(
        backend, records, tmp_path / "s", shard_size=2, shard_index=0, num_shards=1, progress=False
    )
    detections, quarantine = merge_shards(report["run_dir"].iat[0], records, 2)
    assert quarantine["image_id"].tolist() == [3]
    assert set(detections["image_id"]) == {1, 2}
    assert (detections["status"] == "ok").any()  # the comparison below is not vacuous

    # Independent reference: the same weights through torchvision's own builder, on the same
    # batch (images 1 and 2 form the first batch of the first shard).
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    ref = maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        box_score_thresh=0.0,
        box_detections_per_img=5,
        min_size=64,
        max_size=96,
        **OPTIONS,
    )
    ref.load_state_dict(torch.load(weights_file, weights_only=True))
    ref.eval()
    pixels = [read_detection_image(r)[0] for r in records[:2]]
    with torch.inference_mode():
        outs = ref([torch.from_numpy(p.copy()).permute(2, 0, 1).float() / 255 for p in pixels])
    cats = coco_categories()
    for iid, out in zip((1, 2), outs):
        h, w = SIZES[iid]
        names = [cats[i] for i in out["labels"].tolist()]
        keep = [k for k, n in enumerate(names) if n != "N/A"]
        rows = detections[detections["image_id"] == iid]
        if not keep:
            assert rows["status"].tolist() == ["no_detections"]
            continue
        assert rows["class_name"].tolist() == [names[k] for k in keep]
        assert rows["instance_id"].tolist() == list(range(len(keep)))
        np.testing.assert_allclose(rows["score"], out["scores"][keep].numpy(), rtol=1e-4)
        np.testing.assert_allclose(np.stack(rows["box"]), out["boxes"][keep].numpy(), atol=1e-3)
        dense = decode_masks(rows["rle_counts"].tolist(), h, w)
        expected = (out["masks"][keep, 0] >= 0.5).numpy()
        assert dense.shape == (len(keep), h, w)
        # Masks equal up to pixels whose probability is within float noise of the threshold.
        near = np.abs(out["masks"][keep, 0].numpy() - 0.5) < 1e-4
        assert ((dense.astype(bool) != expected) & ~near).sum() == 0
        assert (rows["height"] == h).all() and (rows["width"] == w).all()
    assert isinstance(detections["rle_counts"].dropna().iat[0], str)


@pytest.mark.slow
def test_torchvision_loads_training_checkpoints_and_rejects_bad_files(tmp_path, weights_file):
    state = torch.load(weights_file, weights_only=True)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, ckpt)
    torchvision_backend(str(ckpt))  # DDP prefix and the {"model": ...} wrapper are handled
    broken = tmp_path / "broken.pth"
    torch.save({k: v for k, v in state.items() if "mask_head" not in k}, broken)
    with pytest.raises(DetectionConfigError, match="does not fit maskrcnn_resnet50_fpn"):
        torchvision_backend(str(broken))
    with pytest.raises(DetectionConfigError, match="category names"):
        torchvision_backend(str(weights_file), torchvision={"categories": ["a", "b"]})


def test_torchvision_configuration_errors(tmp_path):
    with pytest.raises(DetectionConfigError, match="detection.weights is not set"):
        torchvision_backend(None)
    with pytest.raises(FileNotFoundError, match="neither an existing file nor one of"):
        torchvision_backend(str(tmp_path / "missing.pth"))
    # The schema only admits known models; the constructor checks direct callers too.
    with pytest.raises(DetectionConfigError, match="is not one of"):
        TorchvisionBackend(
            "DEFAULT",
            model="maskrcnn_resnet152",
            device="cpu",
            score_threshold=0.5,
            max_detections=100,
            mask_threshold=0.5,
            batch_size=1,
            min_size=800,
            max_size=1333,
            categories=None,
            options=None,
        )
    junk = tmp_path / "junk.pth"
    torch.save({"a": torch.zeros(1)}, junk)
    with pytest.raises(DetectionConfigError, match="not a Mask R-CNN state dict"):
        torchvision_backend(str(junk))
    if not torch.cuda.is_available():
        with pytest.raises(DetectionConfigError, match="CUDA is not available"):
            torchvision_backend(str(junk), device="cuda")


def test_detectron2_absent_fails_at_once_with_install_command(monkeypatch, toy):
    # None in sys.modules makes `import detectron2` raise ImportError even where it is installed.
    monkeypatch.setitem(sys.modules, "detectron2", None)
    params = detection_params(backend="detectron2", weights=None)
    with pytest.raises(Detectron2Unavailable) as err:
        Detectron2Backend.from_params(params)
    assert INSTALL in str(err.value)
    with pytest.raises(ImportError, match="pip install --no-build-isolation"):
        make_backend(params, DatasetParams.parse(section("dataset"), "dataset"), toy.images)


@pytest.fixture
def no_detectron2(monkeypatch):
    """Hide any real detectron2 (and its submodules) for the test; drop what the test imported."""
    for name in [m for m in sys.modules if m == "detectron2" or m.startswith("detectron2.")]:
        monkeypatch.delitem(sys.modules, name)
    yield
    for name in [m for m in sys.modules if m == "detectron2" or m.startswith("detectron2.")]:
        del sys.modules[name]


def fake_detectron2(root, files: dict[str, str]) -> None:
    """A ``detectron2`` package under ``root``: relative path -> source."""
    for rel, source in files.items():
        path = root / "detectron2" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)


def test_detectron2_not_installed_names_the_install_command(monkeypatch, tmp_path, no_detectron2):
    # An empty folder first on sys.path and no detectron2 module cached: where detectron2 is
    # really installed this still finds it, so only assert when it is absent.
    monkeypatch.syspath_prepend(str(tmp_path))
    if importlib.util.find_spec("detectron2") is not None:
        pytest.skip("detectron2 is installed here")
    with pytest.raises(Detectron2Unavailable) as err:
        import_detectron2()
    assert not isinstance(err.value, Detectron2ImportFailed)
    text = str(err.value)
    assert "detectron2 is not installed" in text and INSTALL in text
    assert "failed to import" not in text


def test_detectron2_installed_without_pkg_resources_names_the_setuptools_fix(
    monkeypatch, tmp_path, no_detectron2
):
    # What detectron2's model_zoo does on setuptools >= 81: `import pkg_resources` fails.
    fake_detectron2(
        tmp_path,
        {
            "__init__.py": "",
            "model_zoo/__init__.py": (
                "raise ModuleNotFoundError(\"No module named 'pkg_resources'\", "
                "name='pkg_resources')\n"
            ),
            **{f"{m}/__init__.py": "" for m in ("data", "checkpoint", "config", "modeling")},
            "data/transforms.py": "",
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Detectron2ImportFailed) as err:
        import_detectron2()
    text = str(err.value)
    assert "detectron2 is installed but failed to import" in text
    assert "No module named 'pkg_resources'" in text  # the original error
    assert "setuptools ≥ 81 removed pkg_resources: pip install 'setuptools<81'" in text
    assert "is not installed" not in text
    assert isinstance(err.value.__cause__, ModuleNotFoundError)
    # The backend and the factory fail the same way, before anything else.
    params = detection_params(backend="detectron2", weights=None)
    with pytest.raises(Detectron2ImportFailed, match="setuptools<81"):
        Detectron2Backend.from_params(params)


def test_detectron2_installed_but_broken_otherwise_shows_the_error_and_reinstall(
    monkeypatch, tmp_path, no_detectron2
):
    # A package whose own import fails for another reason (no message-specific fix): the
    # original error and the reinstall command; a missing compiled extension is named as such.
    fake_detectron2(tmp_path, {"__init__.py": "raise ImportError('libcudart.so.12: cannot open')"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(Detectron2ImportFailed) as err:
        import_detectron2()
    text = str(err.value)
    assert "installed but failed to import: ImportError: libcudart.so.12: cannot open" in text
    assert f"reinstall it: {INSTALL}" in text
    fake_detectron2(tmp_path, {"__init__.py": "from detectron2 import _C\n"})
    for name in [m for m in sys.modules if m.startswith("detectron2")]:
        del sys.modules[name]
    with pytest.raises(Detectron2ImportFailed, match=r"compiled extension \(detectron2._C\)"):
        import_detectron2()


def test_detectron2_real_if_installed(toy, tmp_path):
    """Runs only where detectron2 is installed: random weights through the same loading path."""
    pytest.importorskip("detectron2")
    from detectron2 import model_zoo
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    config = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config))
    cfg.MODEL.DEVICE = "cpu"
    DetectionCheckpointer(build_model(cfg), save_dir=str(tmp_path)).save("random")
    backend = Detectron2Backend.from_params(
        detection_params(
            backend="detectron2",
            weights=str(tmp_path / "random.pth"),
            device="cpu",
            score_threshold=0.0,
            detectron2={"config": config},
        )
    )
    records = image_records(toy.images, toy.root)
    results, bad = backend.detect(records)
    assert bad == [] and [r.image_id for r in results] == [1, 2, 3]
    for r in results:
        assert decode_masks(r.rle_counts, r.height, r.width).shape[1:] == (r.height, r.width)
