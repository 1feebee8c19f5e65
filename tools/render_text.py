#!/usr/bin/env python3
"""Render one line of text as a grey image for the OCR checks of tests/quantize_weight.rs (ddddocr_common).

    render_text.py TEXT OUT.npy

Draws TEXT in Pillow's default font (ImageFont.load_default(size=40): the Aileron face Pillow ships) in
black on white with an 8-pixel margin, resizes it to height 64 keeping the aspect ratio (bilinear), as
ddddocr's own preprocessing does, and saves the uint8 [64, W] array as .npy (the test divides by 255).
Deterministic for a given Pillow version. Needs Pillow, which the test venv does not have: run it from a
separate venv (`python3 -m venv target/pyenv-render && target/pyenv-render/bin/pip install pillow==13.0.0
numpy==2.2.6`). The committed output is fixtures/text/3xk7pq.npy (Pillow 13.0.0).
"""
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    text, out = argv[1], argv[2]
    font = ImageFont.load_default(size=40)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (right - left + 16, bottom - top + 16), 255)
    ImageDraw.Draw(img).text((8 - left, 8 - top), text, font=font, fill=0)
    width = int(img.size[0] * 64 / img.size[1])
    img = img.resize((width, 64), Image.Resampling.BILINEAR)
    np.save(out, np.asarray(img, dtype=np.uint8))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
