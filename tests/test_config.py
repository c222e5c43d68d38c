"""RunConfig: defaults, YAML loading, and errors that name the field, its value and the fix."""

from __future__ import annotations

import pydantic
import pytest

from pipeline.config import RunConfig, describe_fields, load_config
from pipeline.errors import ConfigError

CK = {"checkpoint": "ckpt/hgn.safetensors"}


def test_defaults_work_and_point_at_the_shipped_checkpoint():
    from hgn_model.checkpoint import shipped_checkpoint

    cfg = load_config()
    assert cfg.chunk == 2048 and cfg.halo == 256 and cfg.layout == "CHW"
    assert cfg.use_gpu == "auto" and cfg.confidence is True and cfg.max_actors is None
    assert cfg.checkpoint == str(shipped_checkpoint("hgn"))


def test_every_field_is_documented():
    missing = [name for name, text in describe_fields().items() if len(text) < 20]
    assert not missing, f"fields without a description: {missing}"


def test_yaml_file_then_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text(
        "chunk: 1024\nhalo: 64\nbands: [2, 1, 0]\nuse_gpu: false\n"
        "s3: {endpoint_url: 'http://127.0.0.1:8333'}\ncheckpoint: a.safetensors\n"
    )
    cfg = load_config(f, {"halo": 32})
    assert (cfg.chunk, cfg.halo, cfg.bands, cfg.use_gpu) == (1024, 32, (2, 1, 0), False)
    assert cfg.s3.endpoint_url == "http://127.0.0.1:8333"
    assert RunConfig.from_yaml(f).halo == 64
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty, CK).chunk == 2048


def test_frozen_and_validated_copies():
    cfg = load_config(overrides=CK)
    with pytest.raises(pydantic.ValidationError):
        cfg.chunk = 5
    assert cfg.with_overrides(chunk=512).chunk == 512
    with pytest.raises(ConfigError, match="chunk = 3"):
        cfg.with_overrides(chunk=3)


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"chunks": 1024}, r"chunks = 1024: unknown field; did you mean 'chunk'\?"),
        (
            {"s3": {"endpoint": "http://x"}},
            r"s3\.endpoint = 'http://x': unknown field; did "
            r"you mean 'endpoint_url'\?",
        ),
        ({"halo": -4}, r"halo = -4: .*greater than or equal to 0.*Expected: Context pixels"),
        ({"layout": "WHC"}, r"layout = 'WHC': .*'CHW' or 'HWC'"),
        ({"bands": [0, 0, 1]}, r"bands = \[0, 0, 1\]: .*listed twice; list each band once"),
        ({"bands": []}, r"bands = \[\]: .*use null for all bands"),
        ({"use_gpu": "maybe"}, r"use_gpu = 'maybe': .*'auto'"),
        ({"read_path": "zarr"}, r"read_path = 'zarr'"),
    ],
)
def test_bad_fields_are_named_with_value_and_fix(data, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(overrides={**CK, **data})


def test_secrets_never_appear_in_errors_or_provenance():
    with pytest.raises(ConfigError) as e:
        load_config(overrides={**CK, "s3": {"key": "AKIASECRETKEY"}})
    assert "AKIASECRETKEY" not in str(e.value) and "s3.secret" in str(e.value)
    cfg = load_config(overrides={**CK, "s3": {"key": "AKIASECRETKEY", "secret": "sshh"}})
    text = str(cfg.public_dict())
    assert "AKIASECRETKEY" not in text and "sshh" not in text


def test_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("chunk: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="holds a list; it must be a mapping"):
        load_config(listy)
