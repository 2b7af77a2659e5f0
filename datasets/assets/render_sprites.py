"""Render the object sprites in datasets/assets/sprites/ from the Noto Color Emoji font (run once by a maintainer).

    python datasets/assets/render_sprites.py

Each emoji is drawn with Pillow at the font's only bitmap size (109), cropped to its alpha bounding box, resized
(LANCZOS, aspect kept) so that its longer side is 64 px, and written as an RGBA PNG. A manifest.json records the
codepoints, group and sha256 of every PNG. Emoji the installed font lacks are skipped with a warning.
This folder has no __init__.py, so the dataset registry never imports this script.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_SIZE = 109  # the only bitmap strike in NotoColorEmoji.ttf
CANVAS = 256  # large enough for one 136x128 bitmap glyph
LONG_SIDE = 64
OUT_DIR = Path(__file__).resolve().parent / "sprites"

# name -> (group, codepoints). FE0F (emoji presentation) follows codepoints whose default presentation is text.
SPRITES: dict[str, tuple[str, str]] = {
    # COCO-on-Places objects: group = the COCO class
    "boat_sailboat": ("boat", "U+26F5"),
    "boat_speedboat": ("boat", "U+1F6A4"),
    "boat_ship": ("boat", "U+1F6A2"),
    "boat_canoe": ("boat", "U+1F6F6"),
    "boat_motorboat": ("boat", "U+1F6E5 U+FE0F"),
    "airplane_airplane": ("airplane", "U+2708 U+FE0F"),
    "airplane_small_airplane": ("airplane", "U+1F6E9 U+FE0F"),
    "truck_delivery_truck": ("truck", "U+1F69A"),
    "truck_articulated_lorry": ("truck", "U+1F69B"),
    "truck_pickup_truck": ("truck", "U+1F6FB"),
    "dog_dog": ("dog", "U+1F415"),
    "dog_poodle": ("dog", "U+1F429"),
    "dog_guide_dog": ("dog", "U+1F9AE"),
    "zebra_zebra": ("zebra", "U+1F993"),
    "horse_horse": ("horse", "U+1F40E"),
    "horse_horse_racing": ("horse", "U+1F3C7"),
    "bird_bird": ("bird", "U+1F426"),
    "bird_eagle": ("bird", "U+1F985"),
    "bird_dove": ("bird", "U+1F54A U+FE0F"),
    "bird_parrot": ("bird", "U+1F99C"),
    "train_locomotive": ("train", "U+1F682"),
    "train_high_speed_train": ("train", "U+1F684"),
    "train_bullet_train": ("train", "U+1F685"),
    "train_train": ("train", "U+1F686"),
    "bus_bus": ("bus", "U+1F68C"),
    "bus_trolleybus": ("bus", "U+1F68E"),
    "bus_minibus": ("bus", "U+1F690"),
    # Waterbirds-style foregrounds (landbirds are the "bird" group plus these)
    "landbird_owl": ("landbird", "U+1F989"),
    "landbird_rooster": ("landbird", "U+1F413"),
    "landbird_turkey": ("landbird", "U+1F983"),
    "landbird_peacock": ("landbird", "U+1F99A"),
    "waterbird_duck": ("waterbird", "U+1F986"),
    "waterbird_swan": ("waterbird", "U+1F9A2"),
    "waterbird_flamingo": ("waterbird", "U+1F9A9"),
    "waterbird_penguin": ("waterbird", "U+1F427"),
    # an accessory (the DogsWithTies family draws its ties itself; its dogs are the "dog" group)
    "tie_bow": ("tie", "U+1F380"),
    # the remaining CIFAR-10 classes, for the sprite version of corrupted_objects
    "car_automobile": ("car", "U+1F697"),
    "car_sport_utility_vehicle": ("car", "U+1F699"),
    "car_taxi": ("car", "U+1F695"),
    "car_police_car": ("car", "U+1F693"),
    "cat_cat": ("cat", "U+1F408"),
    "cat_black_cat": ("cat", "U+1F408 U+200D U+2B1B"),
    "deer_deer": ("deer", "U+1F98C"),
    "frog_frog": ("frog", "U+1F438"),
}

_JOINERS = {0xFE0F, 0x200D}  # variation selector 16 and zero-width joiner: no glyph of their own


def parse_codepoints(spec: str) -> str:
    """'U+2708 U+FE0F' -> the string of those characters."""
    return "".join(chr(int(part.removeprefix("U+"), 16)) for part in spec.split())


def draw(font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    """The text drawn in colour, centred on a transparent CANVAS x CANVAS RGBA image."""
    image = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    ImageDraw.Draw(image).text((CANVAS // 2, CANVAS // 2), text, font=font, embedded_color=True, anchor="mm")
    return image


def has_glyphs(font: ImageFont.FreeTypeFont, text: str) -> bool:
    """True if every non-joiner character of ``text`` draws something other than the font's .notdef glyph."""
    notdef = draw(font, "\U0010fffd").tobytes()  # a private-use codepoint no font maps
    for char in text:
        if ord(char) in _JOINERS:
            continue
        image = draw(font, char)
        if image.getchannel("A").getbbox() is None or image.tobytes() == notdef:
            return False
    return True


def render(font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
    """Draw, crop to the alpha bounding box, resize so the longer side is LONG_SIDE (LANCZOS, aspect kept)."""
    image = draw(font, text)
    bbox = image.getchannel("A").getbbox()
    assert bbox is not None, "caller checks has_glyphs first"
    image = image.crop(bbox)
    w, h = image.size
    factor = LONG_SIDE / max(w, h)
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return image.resize(size, Image.Resampling.LANCZOS)  # Pillow resamples RGBA premultiplied


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG encoding (no metadata, maximum compression)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def main() -> None:
    """Render every sprite in SPRITES that the font has, write the PNGs and manifest.json."""
    font = ImageFont.truetype(str(FONT_PATH), FONT_SIZE)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, str]] = {}
    for name, (group, spec) in SPRITES.items():
        text = parse_codepoints(spec)
        if not has_glyphs(font, text):
            print(f"warning: {FONT_PATH.name} lacks {spec} ({name}); skipped", file=sys.stderr)
            continue
        data = png_bytes(render(font, text))
        (OUT_DIR / f"{name}.png").write_bytes(data)
        manifest[name] = {"codepoints": spec, "group": group, "sha256": hashlib.sha256(data).hexdigest()}
    (OUT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    total = sum((OUT_DIR / f"{name}.png").stat().st_size for name in manifest)
    print(f"wrote {len(manifest)} sprites ({total} bytes) and manifest.json to {OUT_DIR}")


if __name__ == "__main__":
    main()
