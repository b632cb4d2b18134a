"""Every role's defaults, meta/argument_specs.yml and README.md stay in step."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir() if (p / "defaults").is_dir())


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_argument_specs_and_readme_name_the_same_variables(role: Path) -> None:
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    spec = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    readme = (role / "README.md").read_text()
    required = {name for name, opt in spec.items() if opt.get("required")}
    assert set(defaults) - set(spec) == set(), "defaults without an argument spec"
    assert set(spec) - set(defaults) - required == set(), "optional argument specs without a default"
    assert [name for name in spec if f"`{name}`" not in readme] == [], "variables missing from the README"
    for name in set(defaults) & set(spec):
        value = defaults[name]
        if isinstance(value, str) and "{{" in value:
            continue  # computed on the host; the spec documents it in words
        assert spec[name].get("default") == value, f"{name}: argument spec default differs from defaults/main.yml"
