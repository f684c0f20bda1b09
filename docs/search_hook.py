"""An mkdocs hook: the search index holds the tutorials' prose, not their code.

mkdocs-jupyter puts a notebook's whole code, each cell twice with its "In [1]: Copied!" prompt,
into the notebook page's first search entry, so a search for almost anything had a tutorial's
code as its top hit. After the build, that entry keeps its title and loses the code; the
sections' entries (the notebook's markdown, its prose) stay as they are."""

from __future__ import annotations

import json
from pathlib import Path


def on_post_build(config, **kwargs) -> None:
    path = Path(config["site_dir"]) / "search" / "search_index.json"
    if not path.is_file():
        return
    index = json.loads(path.read_text())
    for doc in index.get("docs", []):
        if doc.get("location", "").startswith("tutorials/") and "Copied!" in doc.get("text", ""):
            doc["text"] = ""  # the title still finds the page; its sections carry the prose
    path.write_text(json.dumps(index))
