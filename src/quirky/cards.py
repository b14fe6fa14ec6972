"""Hugging Face cards (dataset and model README.md files): front matter in and out, and the paper's citation.

Why one module: dataset export (`quirky.datasets.hub_io`) and finetuning (`quirky.finetune.model_card`) both
write cards in the hub's format (YAML front matter between `---` lines, then Markdown) and both read other
cards' front matter (a base model's license, an exported dataset's name), so the format lives in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

CARD_FILE = "README.md"

#: Mallen, Brumley, Kharchenko & Belrose, arXiv 2312.01037 (v4 author list), for every card quirky writes.
CITATION = """## Citation

```bibtex
@misc{mallen2023eliciting,
  title={Eliciting Latent Knowledge from Quirky Language Models},
  author={Alex Mallen and Madeline Brumley and Julia Kharchenko and Nora Belrose},
  year={2023}, eprint={2312.01037}, archivePrefix={arXiv}, primaryClass={cs.LG}
}
```
"""


def read_front_matter(card: Path) -> dict[str, Any] | None:
    """The YAML front matter of a card as a dict; None when the file, the front matter or valid YAML is missing."""
    import yaml

    if not card.is_file():
        return None
    parts = card.read_text(errors="replace").split("---", 2)
    if len(parts) != 3 or parts[0].strip():
        return None
    try:
        front = yaml.safe_load(parts[1])
    except yaml.YAMLError:
        return None
    return front if isinstance(front, dict) else None


def render_card(front: Mapping[str, Any], body: str) -> str:
    """A card: the front matter (keys in the given order) between `---` lines, then the Markdown body."""
    import yaml

    return "---\n" + yaml.safe_dump(dict(front), sort_keys=False, allow_unicode=True) + "---\n" + body
