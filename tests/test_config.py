import pytest

from speechtl.adapt.config import ConfigError, load_config


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: freeze\nfreeze: [decoder]\nlearning_rate: 5e-5\nmax_steps: 30\n")
    cfg = load_config(f, ["max_steps=12", "batch_size=4"])
    assert (cfg.method, cfg.freeze, cfg.learning_rate, cfg.max_steps, cfg.batch_size) == (
        "freeze", ["decoder"], 5e-5, 12, 4)


@pytest.mark.parametrize("text, message", [
    ("method: full\nlearnin_rate: 1.0e-3\n", r"c.yaml:2: unknown key 'learnin_rate' \(did you mean learning_rate"),
    ("max_steps: ten\n", r"c.yaml:1: 'max_steps' must be int, got str"),
    ("method: lora-ish\n", "'method' must be one of"),
    ("method: freeze\n", "'freeze' must name at least one part"),
    ("- a\n- b\n", "expected a mapping"),
    ("method: [unclosed\n", "not valid YAML"),
])
def test_bad_configs_name_file_and_line(tmp_path, text, message):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(f)


def test_missing_config_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(None, ["max_steps"])
