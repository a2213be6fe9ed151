"""A study's result in the README: the text between `<!-- NAME:begin -->` and
`<!-- NAME:end -->` becomes the plot (copied to docs/ beside the README) and the table."""

from __future__ import annotations

import pathlib
import re
import shutil


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def write(readme, name: str, table: str, plot, alt: str, command: str) -> None:
    """Rewrites section `name` of `readme`; `command` is the one that wrote it."""
    readme, plot = pathlib.Path(readme), pathlib.Path(plot)
    begin, end = markers(name)
    text = readme.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{readme}: no {begin} ... {end} markers to write the study into")
    docs = readme.parent / "docs"
    docs.mkdir(exist_ok=True)
    shutil.copyfile(plot, docs / plot.name)
    body = (f"![{alt}](docs/{plot.name})\n\n{table}\n"
            f"(Written by `{command}`; the plot is docs/{plot.name}.)\n")
    readme.write_text(re.sub(re.escape(begin) + r".*?" + re.escape(end),
                             lambda _: f"{begin}\n{body}{end}", text, flags=re.S))
