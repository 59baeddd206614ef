"""Model specs: parsing, config files, and secrets that never leave memory."""

import pytest

from harness.errors import ModelSpecError
from harness.modelspec import ModelSpec, is_secret_option, load_model_config, parse_model_spec


def test_parses_backend_model_and_typed_options():
    spec = parse_model_spec("openai:gpt-4o-mini?base_url=http://127.0.0.1:9/v1&concurrency=8&chat=true&top=0.5")
    assert spec.backend == "openai" and spec.model == "gpt-4o-mini"
    assert spec.options == {"base_url": "http://127.0.0.1:9/v1", "concurrency": 8, "chat": True, "top": 0.5}


def test_model_path_with_slashes_and_colons_survives():
    spec = parse_model_spec("gguf:/tmp/models/a:b.gguf")
    assert spec.model == "/tmp/models/a:b.gguf"


@pytest.mark.parametrize("text", ["", "gguf", "gguf:", ":model", "bad spec:x"])
def test_malformed_specs_are_one_line_errors(text):
    with pytest.raises(ModelSpecError) as info:
        parse_model_spec(text)
    assert "\n" not in info.value.one_line()
    assert "backend:model" in info.value.one_line()


def test_secret_options_are_dropped_from_public_data_and_id():
    spec = ModelSpec("openai", "m", {"api_key": "sk-SECRET-123", "api_key_env": "MY_KEY", "base_url": "u"})
    public = spec.public()
    assert "api_key" not in public["options"]
    assert public["options"]["api_key_env"] == "MY_KEY"
    assert "SECRET" not in spec.model_id and "SECRET" not in str(public)
    assert is_secret_option("auth_token") and not is_secret_option("api_key_env")


def test_model_id_is_stable_and_changes_with_public_options():
    a = parse_model_spec("gguf:default?n_ctx=1024")
    b = parse_model_spec("gguf:default?n_ctx=1024")
    c = parse_model_spec("gguf:default?n_ctx=2048")
    assert a.model_id == b.model_id != c.model_id
    assert parse_model_spec("gguf:default").model_id == "gguf:default"


def test_model_config_yaml_and_toml(tmp_path):
    yml = tmp_path / "models.yaml"
    yml.write_text("models:\n  local:\n    backend: openai\n    model: tiny\n    base_url: http://127.0.0.1:1/v1\n    api_key: sk-FROMFILE\n")
    specs = load_model_config(yml)
    spec = parse_model_spec("local", specs, concurrency=4)
    assert (spec.backend, spec.model, spec.label) == ("openai", "tiny", "local")
    assert spec.options["api_key"] == "sk-FROMFILE" and spec.options["concurrency"] == 4
    assert "FROMFILE" not in str(spec.public())
    toml = tmp_path / "models.toml"
    toml.write_text('[models.t]\nbackend = "scripted"\nmodel = "echo"\n')
    assert load_model_config(toml)["t"].backend == "scripted"


@pytest.mark.parametrize(
    "content,needle",
    [("models: [1, 2\n", "not valid"), ("other: 1\n", "no 'models' mapping"), ("models:\n  x: {model: y}\n", "needs a 'backend'")],
)
def test_bad_model_config_files(tmp_path, content, needle):
    path = tmp_path / "m.yaml"
    path.write_text(content)
    with pytest.raises(ModelSpecError, match=needle):
        load_model_config(path)


def test_missing_model_config_file(tmp_path):
    with pytest.raises(ModelSpecError, match="does not exist"):
        load_model_config(tmp_path / "nope.yaml")
