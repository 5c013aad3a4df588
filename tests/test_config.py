import subprocess
import sys

import pytest
import yaml

from img2spec.config import ConfigError, Params, flatten, load_params, params_from_dict


def test_repo_params_are_valid(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert params.data.source in ("mock", "sdss")
    assert params.data.bands == ("g", "r", "i", "z", "y")


def test_unknown_key_is_named_with_suggestion(repo_root, tmp_path):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["mock"]["n_galaxys"] = raw["mock"].pop("n_galaxies")
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_params(bad)
    msg = str(info.value)
    assert "mock.n_galaxys" in msg and "did you mean 'n_galaxies'" in msg


def test_unknown_section_and_bad_type_and_range():
    with pytest.raises(ConfigError, match="vea: unknown key"):
        params_from_dict({"vea": {}})
    with pytest.raises(ConfigError, match="vae.latent_dim"):
        params_from_dict({"vae": {"latent_dim": "eight"}})
    with pytest.raises(ConfigError, match="vae.latent_dim"):
        params_from_dict({"vae": {"latent_dim": 0}})
    with pytest.raises(ConfigError, match="data.source"):
        params_from_dict({"data": {"source": "sdsss"}})


def test_defaults_and_flatten():
    flat = flatten(Params())
    assert flat["vae.latent_dim"] == Params().vae.latent_dim
    assert "publish.alias" in flat


def test_first_stage_stops_on_mistyped_key(repo_root, tmp_path):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["data"]["sorce"] = raw["data"].pop("source")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, str(repo_root / "pipeline" / "select_candidates.py"), "--params", "params.yaml", "--root", "."],
        cwd=tmp_path, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "data.sorce: unknown key" in proc.stderr
