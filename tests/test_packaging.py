from __future__ import annotations

from importlib.metadata import metadata, version
from importlib.resources import files

import compvi


def test_the_package_declares_its_version_urls_and_types():
    meta = metadata("compvi")
    assert compvi.__version__ == version("compvi") == meta["Version"]
    labels = {entry.split(",", 1)[0].strip() for entry in meta.get_all("Project-URL") or []}
    assert {"Documentation", "Source", "Issues", "Changelog"} <= labels
    # PEP 561: type checkers read compvi's annotations only if the package ships py.typed.
    assert files("compvi").joinpath("py.typed").is_file()
    assert "compvi = compvi.cli:main" in {
        f"{ep.name} = {ep.value}" for ep in compvi_entry_points()
    }


def compvi_entry_points():
    from importlib.metadata import entry_points

    return entry_points(group="console_scripts", name="compvi")
