import pytest

from speechtl.adapt.config import ConfigError, load_config


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: freeze\nfreeze: [decoder]\nlearning_rate: 5e-5\nmax_steps: 30\n")
    cfg = load_config(f, ["max_steps=12", "batch_size=4"])
    assert (cfg.method, cfg.settings, cfg.learning_rate, cfg.max_steps, cfg.batch_size) == (
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


def write(tmp_path, text):
    f = tmp_path / "conf.yaml"
    f.write_text(text)
    return f


def test_method_blocks_load_override_and_dump_in_the_new_form(tmp_path):
    import yaml

    from speechtl.adapt.config import dump_config
    from speechtl.adapt.registry import AdapterSettings, LoraSettings

    f = write(tmp_path, "method: lora\nlora:\n  rank: 4\n  stacks: [encoder]\nmax_steps: 3\n")
    cfg = load_config(f, ["lora.rank=8", "lora.alpha=16"])
    assert cfg.settings == LoraSettings(rank=8, alpha=16.0, stacks=["encoder"])  # the rest of the block kept
    assert cfg.entry.adapter and cfg.entry.build_spec(cfg.settings).use_dora is False
    dumped = yaml.safe_load(dump_config(cfg))
    assert list(dumped)[:2] == ["method", "lora"] and dumped["lora"]["rank"] == 8
    assert not any(k.startswith(("lora_", "adapter_")) for k in dumped) and "settings" not in dumped
    assert load_config(write(tmp_path, dump_config(cfg))) == cfg  # the written config.yaml loads back
    # another method on the command line starts from its defaults, its block from the config's
    assert load_config(f, ["method=adapters", "adapters.size=8"]).settings == AdapterSettings(size=8)
    assert load_config(f, ["method=full"]).settings is None and "lora" not in load_config(f, ["method=full"]).to_dict()
    dora = load_config(write(tmp_path, "method: dora\ndora: {rank: 2}\n"))
    assert dora.settings == LoraSettings(rank=2) and dora.entry.build_spec(dora.settings).use_dora is True
    assert load_config(None, ["augment.speed.prob=0.5"]).augment["speed"]["prob"] == 0.5


@pytest.mark.parametrize("text, message", [
    ("method: lora\nmax_steps: 3\nlora_rank: 16\n", r"conf.yaml:3: 'lora_rank' is now written 'lora: \{rank: 16\}'"),
    ("method: adapters\nadapter_stacks: [encoder]\n",
     r"conf.yaml:2: 'adapter_stacks' is now written 'adapters: \{stacks: \[encoder\]\}'"),
    ("method: lora\nadapters: {size: 8}\n", r"conf.yaml:2: 'adapters' is only used with method: adapters "
                                            r"\(method is 'lora'\)"),
    ("method: full\nfreeze: [decoder]\n", r"conf.yaml:2: 'freeze' is only used with method: freeze"),
    ("method: lora\nlora:\n  alpha: 8\n  rank: 0\n", r"conf.yaml:4: 'lora.rank' must be at least 1"),
    ("method: dora\ndora:\n  dropout: 1.5\n", r"conf.yaml:3: 'dora.dropout' must lie in \[0, 1\)"),
    ("method: lora\nlora:\n  rnk: 8\n", r"conf.yaml:3: unknown key 'lora.rnk' \(lora has rank, alpha"),
    ("method: lora\nlora:\n  rank: eight\n", r"conf.yaml:3: 'lora.rank' must be int, got str"),
    ("method: adapters\nadapters: 64\n", r"conf.yaml:2: 'adapters' must be a mapping of its settings \(size, stacks\)"),
    ("method: dora\nwise_alpha: 0.5\n", r"conf.yaml:2: 'wise_alpha' 0.5 can't be used with method dora: DoRA "
                                        r"rescales .* not linear in B"),
])
def test_bad_method_blocks_name_file_line_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_overrides_of_a_block_are_checked_like_the_file(tmp_path):
    f = write(tmp_path, "method: lora\n")
    with pytest.raises(ConfigError, match=r"--set:2: 'lora.rank' must be at least 1"):
        load_config(f, ["max_steps=3", "lora.rank=0"])
    with pytest.raises(ConfigError, match=r"--set:1: 'adapters' is only used with method: adapters"):
        load_config(f, ["adapters.size=8"])
    with pytest.raises(ConfigError, match=r"--set:1: 'lora_rank' is now written 'lora: \{rank: 8\}'"):
        load_config(f, ["lora_rank=8"])


def test_an_old_flat_config_compares_equal_to_the_same_config_today():
    """A run made before the method blocks is not retrained (or refused) for its config's form alone."""
    from speechtl.adapt.config import TrainConfig
    from speechtl.adapt.rundir import config_changes

    old = {"method": "lora", "freeze": [], "lora_rank": 4, "lora_alpha": 32.0, "lora_dropout": 0.05,
           "lora_targets": [], "lora_stacks": ["encoder"], "adapter_size": 64, "adapter_stacks": []}
    now = TrainConfig(method="lora", settings={"rank": 4, "stacks": ["encoder"]}).to_dict()
    assert config_changes(old, now) == []
    assert config_changes({**old, "lora_rank": 8}, now) == ["lora.rank 8 -> 4"]
