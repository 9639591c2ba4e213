"""Every stage's parameters: conf parses into its schema, every field is documented in conf/base,
and a wrong key or type stops with the full key name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from project_conf import PROJECT, conf_params, section

from ica_captioning.params import SECTIONS, ParameterError, Params, TrainParams
from ica_captioning.variants import TRANSFORMER_VARIANTS, VARIANTS

CONF = PROJECT / "conf" / "base"


def _fields(schema: type[Params], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a schema, sections and leaves (``("encoder", "backbone")``)."""
    out = []
    for name, info in schema.model_fields.items():
        out.append((*prefix, name))
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, Params):
            out += _fields(sub, (*prefix, name))
    return out


def _yaml_comments(path: Path) -> dict[tuple[str, ...], str]:
    """Key path → the comment text attached to it (inline, or the comment lines right above)."""
    comments: dict[tuple[str, ...], str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("# "))
            continue
        match = re.match(r"^(\s*)([A-Za-z_][\w]*):(.*)$", line)
        if not match:
            above = []
            continue
        indent, key, rest = len(match.group(1)), match.group(2), match.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        inline = rest.split("#", 1)[1] if "#" in rest else ""
        comments[tuple(k for _, k in stack)] = " ".join([*above, inline]).strip()
        above = []
    return comments


def _conf_file(section_name: str) -> Path:
    path = CONF / f"parameters_{section_name}.yml"
    return path if path.exists() else CONF / "parameters.yml"


@pytest.mark.parametrize("name", sorted(SECTIONS))
@pytest.mark.parametrize("env", ["base", "gpu"])
def test_conf_parses_into_the_schema(name, env):
    SECTIONS[name].parse(conf_params(env)[name], name)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_schema_field_is_documented_in_conf_base(name):
    comments = _yaml_comments(_conf_file(name))
    undocumented = []
    for path in _fields(SECTIONS[name]):
        key = (name, *path)
        assert key in comments, f"{'.'.join(key)} is not in {_conf_file(name).name}"
        parent = comments.get(key[:-1], "") if len(key) > 2 else ""
        # A key is documented by its own comment, or by its section's comment naming it.
        if not comments[key] and not re.search(rf"\b{re.escape(key[-1])}\b", parent):
            undocumented.append(".".join(key))
    assert not undocumented, f"undocumented parameters: {undocumented}"


def test_conf_base_has_no_key_outside_the_schemas():
    known = set(SECTIONS) | {"seed", *VARIANTS, *TRANSFORMER_VARIANTS}
    assert set(conf_params("base")) <= known


def test_unknown_keys_and_wrong_types_name_the_full_key():
    with pytest.raises(ParameterError) as err:
        TrainParams.parse(
            section("train", encoder={"backbon": "resnet18"}, epochs="four", device="tpu"),
            "train",
        )
    lines = str(err.value).splitlines()[1:]
    assert "train.encoder.backbon: unknown key" in lines
    assert any(line.startswith("train.epochs: ") and "'four'" in line for line in lines)
    assert any(line.startswith("train.device: ") and "cpu, cuda" in line for line in lines)
    assert len(lines) == 3
    for name, schema in SECTIONS.items():
        raw = conf_params()[name]
        missing = next(iter(raw))
        with pytest.raises(ParameterError, match=rf"{name}\.{missing}: missing"):
            schema.parse({k: v for k, v in raw.items() if k != missing}, name)
        with pytest.raises(ParameterError, match=rf"{name}\.typo_key: unknown key"):
            schema.parse({**raw, "typo_key": 1}, name)


def test_variant_overrides_change_single_keys():
    train, params = section("train"), conf_params()
    base = TrainParams.resolve(train, params["baseline"]["train_overrides"])
    assert base.lambda_aux == 0.0
    assert base.decoder == TrainParams.resolve(train).decoder
    with pytest.raises(ParameterError, match="train.decoder.hidden: unknown key"):
        TrainParams.resolve(train, {"decoder": {"hidden": 3}})


def test_transformer_namespaces_and_the_gpu_transformer():
    params = conf_params()
    base, ica = (
        TrainParams.resolve(params["train"], params[v]["train_overrides"])
        for v in TRANSFORMER_VARIANTS
    )
    assert base.architecture == ica.architecture == "transformer"
    assert (base.lambda_aux, ica.lambda_aux) == (0.0, params["train"]["lambda_aux"])
    assert base.replace(lambda_aux=ica.lambda_aux) == ica  # the variants differ in λ only
    # The default train pipeline and conf/gpu keep Show-Attend-Tell.
    assert TrainParams.resolve(section("train")).architecture == "sat"
    gpu = TrainParams.resolve(section("train", "gpu"))
    assert gpu.architecture == "sat"
    tr = gpu.transformer  # paper scale, used by `kedro run --env gpu --pipeline transformer`
    assert (tr.num_layers, tr.encoder_layers, tr.d_model, tr.num_heads, tr.d_ff) == (
        6, 6, 512, 8, 2048,
    )  # fmt: skip
    assert tr.warmup_steps == 20000 and tr.dropout == 0.1
    # Its namespaces train with Noam's schedule at ruotianluo's rate: lr peaks at 512^-0.5 ·
    # 20000^-0.5 after the warm-up.
    gpu_params = conf_params("gpu")
    for variant in TRANSFORMER_VARIANTS:
        run = TrainParams.resolve(gpu_params["train"], gpu_params[variant]["train_overrides"])
        assert run.lr_schedule.type == "noam" and run.warmup_steps == 20000
        assert run.lr == pytest.approx(512**-0.5 * 20000**-0.5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"d_model": 130}, "divisible by num_heads"),
        ({"ica_layers": [2]}, r"ica_layers \[2\] outside 0..1"),
        ({"ica_heads": [0, -4]}, "repeats an index"),
        ({"ica_heads": []}, "at least one"),
        ({"ica_layers": "first"}, "train.transformer.ica_layers"),
        ({"head_reduction": "sum"}, "train.transformer.head_reduction"),
    ],
)
def test_transformer_selection_is_checked(change, message):
    with pytest.raises(ParameterError, match=message):
        TrainParams.resolve(section("train"), {"transformer": change})


def test_evaluation_decode_settings_are_exactly_decode_splits_keywords():
    import inspect

    from ica_captioning.decoding.runner import decode_split
    from ica_captioning.params.evaluation import EvaluationParams

    params = EvaluationParams.parse(section("evaluation"), "evaluation")
    keywords = {
        name
        for name, p in inspect.signature(decode_split).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    settings = params.decode_settings()
    assert set(settings) == keywords
    assert settings["cpu_attention"] == "tiled" and settings["beam_size"] == params.beam_size
