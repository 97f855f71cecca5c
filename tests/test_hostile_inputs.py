"""Hostile and broken inputs: 10,000 mutated uploads, decompression bombs, HTML/script and control
characters in text, and paths that try to leave their folder. (Pickled weights: test_model.py
and test_train.py; DICOM specifics: test_dicom.py.)"""
from __future__ import annotations

import io
import json
import math
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from fusion.core.errors import FusionError
from fusion.core.settings import load_settings
from helpers import dicom_file

ROOT = Path(__file__).resolve().parent.parent


# ---- seed files and how they are mutated ------------------------------------------------------

def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def seed_files() -> dict[str, bytes]:
    """Small valid files of every accepted kind (16 x 12 pixels: a mutation lands in a header as
    often as in pixels, and accepted mutants are cheap to store and read)."""
    x = np.linspace(0, 255, 16)[None, :].repeat(12, 0)
    rgb = Image.fromarray(np.stack([x, x[::-1], 255 - x], -1).astype(np.uint8), "RGB")
    pixels = (np.arange(16 * 12).reshape(12, 16) * 20).astype(np.uint16)
    native = dicom_file(pixels, window=(2000, 3000))
    rle = pydicom.dcmread(io.BytesIO(native))
    rle.compress(RLELossless)
    jpeg = pydicom.dcmread(io.BytesIO(native))   # 8-bit grey JPEG Baseline inside DICOM, decoded by Pillow
    del jpeg.WindowCenter, jpeg.WindowWidth
    jpeg.BitsAllocated, jpeg.BitsStored, jpeg.HighBit = 8, 8, 7
    jpeg.PixelData = encapsulate([encode(Image.fromarray((pixels // 15).astype(np.uint8)), "JPEG", quality=90)])
    jpeg["PixelData"].VR = "OB"
    jpeg.file_meta.TransferSyntaxUID = JPEGBaseline8Bit

    def saved(ds) -> bytes:
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()
    return {"PNG": encode(rgb, "PNG"), "JPEG": encode(rgb, "JPEG", quality=85), "TIFF": encode(rgb, "TIFF"),
            "BMP": encode(rgb, "BMP"), "WEBP": encode(rgb, "WEBP", quality=80), "DICOM": native,
            "DICOM-RLE": saved(rle), "DICOM-JPEG": saved(jpeg)}


def declare_size(data: bytes, width: int, height: int) -> bytes:
    """The file with its header's width and height fields overwritten (checksums kept valid where
    the format has them), so the header declares what the pixel data can't back."""
    d = bytearray(data)
    try:
        if d[:4] == b"\x89PNG":
            d[16:24] = struct.pack(">II", width, height)
            d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
        elif d[:2] == b"BM":
            d[18:26] = struct.pack("<ii", min(width, 2**31 - 1), min(height, 2**31 - 1))
        elif d[:2] == b"\xff\xd8":
            at = max(d.find(b"\xff\xc0"), d.find(b"\xff\xc2"))
            if at > 0:
                d[at + 5:at + 9] = struct.pack(">HH", height & 0xFFFF, width & 0xFFFF)
        elif d[:4] == b"RIFF" and d[12:16] == b"VP8 ":
            d[26:30] = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
        elif d[:4] == b"II*\x00":
            ifd = struct.unpack("<I", d[4:8])[0]
            for k in range(struct.unpack("<H", d[ifd:ifd + 2])[0]):
                entry = ifd + 2 + 12 * k
                tag, kind = struct.unpack("<HH", d[entry:entry + 4])
                if tag in (256, 257):
                    value = width if tag == 256 else height
                    d[entry + 8:entry + 12] = struct.pack("<I", value) if kind == 4 else \
                        struct.pack("<HH", value & 0xFFFF, 0)
        elif d[128:132] == b"DICM":
            for tag, value in ((b"\x28\x00\x10\x00US\x02\x00", height), (b"\x28\x00\x11\x00US\x02\x00", width)):
                at = d.find(tag)
                if at > 0:
                    d[at + 8:at + 10] = struct.pack("<H", value & 0xFFFF)
    except (struct.error, IndexError):
        pass   # a mutant too damaged to find its header in: it stays as it is
    return bytes(d)


MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"BM", b"RIFF", b"GIF89a",
          b"%PDF-1.4", b"PK\x03\x04", b"\x00\x00\x00\x00", b"DICM")
SIZES = (0, 1, 16383, 50_000, 65_535, 2**31 - 1)


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    d = bytearray(data)
    kind = rng.choice(("truncate", "flip", "insert", "delete", "magic", "dimensions", "several"))
    steps = [rng.choice(("truncate", "flip", "insert", "delete", "magic", "dimensions"))
             for _ in range(rng.randint(2, 3))] if kind == "several" else [kind]
    for step in steps:
        if step == "truncate":
            d = d[:rng.randrange(len(d) + 1)]
        elif step == "flip":
            for _ in range(rng.randint(1, 8)):
                if d:
                    d[rng.randrange(len(d))] ^= 1 << rng.randrange(8)
        elif step == "insert":
            at = rng.randrange(len(d) + 1)
            d[at:at] = rng.randbytes(rng.randint(1, 16))
        elif step == "delete" and d:
            at = rng.randrange(len(d))
            del d[at:at + rng.randint(1, 16)]
        elif step == "magic":
            magic = rng.choice(MAGICS)
            at = 128 if data[128:132] == b"DICM" and rng.random() < 0.5 else 0
            d[at:at + len(magic)] = magic
        elif step == "dimensions":
            d = bytearray(declare_size(bytes(d), rng.choice(SIZES + (rng.randint(2, 9000),)),
                                       rng.choice(SIZES + (rng.randint(2, 9000),))))
    return "+".join(steps), bytes(d)


def mutants(data: bytes, rng: random.Random, count: int):
    """`count` broken versions of one seed: first one of each named kind, then random mutations."""
    fixed = [("zero-size", b""), ("magic only", data[:8]), ("header only", data[:48]),
             ("zero dimensions", declare_size(data, 0, 0)), ("huge dimensions", declare_size(data, 50_000, 50_000)),
             ("wrong magic", b"GIF89a" + data[6:]), ("truncated by half", data[:len(data) // 2])]
    yield from fixed
    for _ in range(count - len(fixed)):
        yield mutate(data, rng)


@pytest.fixture
def scratch_home(tmp_path):
    """A workspace for thousands of writes: on tmpfs when there is one (fsync costs nothing there,
    the store's code is the same), else in tmp_path."""
    shm = Path("/dev/shm")
    home = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path / "home"
    yield home
    shutil.rmtree(home, ignore_errors=True)


CASES_PER_SEED = 1250        # x 8 seeds = 10,000 files
READ_AND_PREDICT_PER_SEED = 3


@pytest.mark.filterwarnings("ignore")   # pydicom and Pillow warn about every odd header they meet
def test_ten_thousand_mutated_uploads_are_stored_whole_or_refused_with_a_reason(engine, demo_project, scratch_home):
    """Each mutant goes through fusion.services.review.add_upload, what the Review page's uploader calls
    (decode, then store): it becomes an item whose stored file decodes, or it raises a FusionError
    with a message and leaves nothing (no row, no file, no staging). Any other exception fails.
    OCR and predict cost 0.1-0.5 s an image, so they run on a deterministic sample, the first
    READ_AND_PREDICT_PER_SEED accepted mutants of each seed (tiny images), not on every one."""
    from fusion.imaging.images import load_image, load_upload
    from fusion.services.review import add_upload
    from fusion.store.labeling import ItemFilter, Store

    settings = load_settings(home=scratch_home)
    store = Store(settings)
    store.create_project("fuzz", {"form": "", "table": ""}, user="fuzzer")
    rng = random.Random(20261122)
    counts, unexpected, stored, sample = Counter(), [], set(), []
    started = time.perf_counter()
    for kind, seed in seed_files().items():
        for n, (how, data) in enumerate(mutants(seed, rng, CASES_PER_SEED)):
            try:
                item = add_upload(store, "fuzz", f"{kind}-{n}", data, user="fuzzer")
            except FusionError as e:
                counts[kind, "refused"] += 1
                if not str(e).strip():
                    unexpected.append((kind, how, "a refusal without a message"))
                continue
            except Exception as e:   # a crash, not a refusal
                unexpected.append((kind, how, f"{type(e).__name__}: {e}"))
                continue
            counts[kind, "accepted"] += 1
            stored.add(item.sha256)
            try:
                load_image(store.image_path(item))   # what training, the queue and the pages do next
            except Exception as e:
                unexpected.append((kind, how, f"stored but can't be read back: {e}"))
            if sum(1 for s in sample if s[0] == kind) < READ_AND_PREDICT_PER_SEED:
                sample.append((kind, how, data))
    fuzz_s = time.perf_counter() - started
    assert not unexpected, f"{len(unexpected)} unexpected outcomes, e.g. {unexpected[:5]}"
    assert sum(counts.values()) == 8 * CASES_PER_SEED

    # Nothing of a refused file anywhere: the files and rows are exactly those of accepted ones.
    images = settings.images_dir
    assert {p.stem for p in images.glob("??/*")} == stored
    assert store.list_items("fuzz", ItemFilter(), limit=0).total == len(stored)
    staging = images / ".staging"
    assert not staging.exists() or not any(staging.iterdir())

    started = time.perf_counter()
    for kind, how, data in sample:
        image = load_upload(data, settings)
        prediction = engine.predict(image, demo_project, ocr_result=engine.read_text(image))
        assert prediction.label in demo_project.labels, (kind, how)
        assert math.isclose(sum(prediction.probs.values()), 1.0, abs_tol=1e-3), (kind, how)
    accepted = {k: counts[k, "accepted"] for k, _ in counts}
    print(f"\nfuzz: {sum(counts.values())} files in {fuzz_s:.1f} s; accepted per seed {accepted}; "
          f"{len(stored)} distinct items; OCR + predict on {len(sample)} in {time.perf_counter() - started:.1f} s")
    assert len(sample) == 8 * READ_AND_PREDICT_PER_SEED   # every seed had accepted mutants to read


# ---- decompression bombs ------------------------------------------------------------------------

BOMB_PROBE = r"""
import json, resource, sys, time
from fusion.core.errors import BadImage
from fusion.imaging.images import check_image_file, load_image
from fusion.core.settings import load_settings

settings = load_settings(home=sys.argv[1])
warm, bombs = sys.argv[2].split(","), sys.argv[3:]
for path in warm:   # imports and codecs loaded before measuring
    check_image_file(path, settings, full_decode=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = {}
for path in bombs:
    started = time.perf_counter()
    try:
        check_image_file(path, settings, full_decode=True)
        message = None
    except BadImage as e:
        message = str(e)
    try:
        load_image(path, max_pixels=settings.max_pixels)
    except BadImage:
        pass
    results[path] = {"seconds": time.perf_counter() - started, "message": message}
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"results": results, "rss_growth_mb": (peak - before) / 1024}))
"""


def test_decompression_bombs_are_refused_in_under_a_second_without_a_memory_spike(tmp_path):
    """Small files declaring 50,000 x 50,000 pixels (WebP: its maximum, 16,383 x 16,383) would need
    2.5 GB and more to decode. Measured in a fresh process, so its peak RSS says what they cost."""
    seeds = seed_files()
    bombs = {"png": declare_size(seeds["PNG"], 50_000, 50_000), "tif": declare_size(seeds["TIFF"], 50_000, 50_000),
             "webp": declare_size(seeds["WEBP"], 16_383, 16_383), "bmp": declare_size(seeds["BMP"], 50_000, 50_000),
             "jpg": declare_size(seeds["JPEG"], 50_000, 50_000), "dcm": declare_size(seeds["DICOM"], 50_000, 50_000)}
    paths = []
    for ext, data in bombs.items():
        assert len(data) < 2000
        (tmp_path / f"bomb.{ext}").write_bytes(data)
        paths.append(str(tmp_path / f"bomb.{ext}"))
    warm = []
    for kind, ext in (("PNG", "png"), ("TIFF", "tif"), ("WEBP", "webp"), ("BMP", "bmp"), ("JPEG", "jpg"),
                      ("DICOM", "dcm")):
        (tmp_path / f"warm.{ext}").write_bytes(seeds[kind])
        warm.append(str(tmp_path / f"warm.{ext}"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    probe = subprocess.run([sys.executable, "-c", BOMB_PROBE, str(tmp_path / "home"), ",".join(warm), *paths],
                           capture_output=True, text=True, env=env, timeout=120)
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    for path, result in report["results"].items():
        assert result["message"] and "megapixels" in result["message"], (path, result)
        assert result["seconds"] < 1.0, (path, result)
    assert report["rss_growth_mb"] < 50, report
    slowest = max(r["seconds"] for r in report["results"].values())
    print(f"\nbombs: {len(paths)} refused, slowest {slowest * 1000:.1f} ms, peak RSS growth {report['rss_growth_mb']:.1f} MB")


# ---- text: HTML, script, markdown, control characters, 100,000 characters ------------------------

HOSTILE_CAPTION = ("<script>alert('caption')</script> <img src=x onerror=alert(1)> [click](javascript:alert(1)) "
                   "**bold** $x^2$ \x00NUL \x1b[31mESC \u202eevil-override " + "long " * 20_000)
HOSTILE_NAME = "<img src=x onerror=alert(2)>[x](http://evil.example)\u202egnp.dcm"


def dicom_page() -> bytes:
    """test_app's lab page (a new item each run) as a DICOM file: 8-bit values in 16-bit samples."""
    from helpers import page_bytes

    grey = np.asarray(Image.open(io.BytesIO(page_bytes())).convert("L")).astype(np.uint16)
    return dicom_file(grey, window=(128, 256), modality="OT")


def test_html_script_markdown_and_control_characters_are_shown_as_text(demo_project):
    """A DICOM page uploaded under a hostile file name, then a hostile 100,000-character caption:
    the app shows both as text (HTML escaped where the word colouring is HTML, markdown escaped
    where it renders markdown), and the store keeps the caption as typed but for the NUL byte."""
    from helpers import started

    from fusion.privacy.display_text import literal
    from fusion.services.review import decide
    from fusion.store.labeling import open_store

    app = started(demo_project)
    app.file_uploader[0].set_value((HOSTILE_NAME, dicom_page(), "application/dicom")).run()
    assert not app.exception and not app.error, (app.exception, [e.value for e in app.error])
    assert "hemoglobin" in app.text_area(key="ocr_text").value.lower()   # OCR read the DICOM's pixels
    app.text_area(key="caption").set_value(HOSTILE_CAPTION).run()
    assert not app.exception, app.exception

    rendered = [*app.markdown, *app.caption, *app.error, *app.get("toast")]
    html = [m.value for m in app.markdown if m.proto.allow_html]
    assert len(html) == 1   # the word colouring, the one element allowed to carry HTML
    assert "&lt;script&gt;alert(&#x27;caption&#x27;)&lt;/script&gt;" in html[0] and "&lt;img" in html[0]
    for element in rendered:
        assert "<script" not in element.value and "<img" not in element.value, element.value[:300]
    decision = next(m.value for m in app.markdown if m.value.startswith("**Your decision**"))
    assert literal(HOSTILE_NAME) in decision and "\\[x\\](http\\://evil.example)" in decision
    assert "\u202e" not in decision   # the override that would show the name reversed

    page = app.session_state["page"]
    store = open_store(load_settings())
    item = store.item(demo_project.name, page["item_id"])
    assert item.filename == HOSTILE_NAME and item.extension == ".png"
    saved = decide(store, demo_project.name, item, item.version, None, "reviewer", app.session_state["prediction"],
                   caption=HOSTILE_CAPTION)
    assert saved.caption == HOSTILE_CAPTION.replace("\x00", "") and len(saved.caption) > 100_000
    assert store.history(demo_project.name, item.id)[-2].new_caption == saved.caption


# ---- paths that try to leave their folder ---------------------------------------------------------

def png(value: int) -> bytes:
    return encode(Image.new("RGB", (8, 8), (value, 0, 0)), "PNG")


def zipped(entries: dict[str, bytes], links: dict[str, str] = {}) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in links.items():   # how `zip --symlinks` stores a link: mode bits + target
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return out.getvalue()


@pytest.mark.parametrize("entries, links, reason", [
    ({"ok/a.png": b"", "../escaped.png": b""}, {}, "points outside the archive"),
    ({"ok/a.png": b"", "/tmp/escaped-absolute.png": b""}, {}, "points outside the archive"),
    ({"ok/a.png": b"", "ok/../../escaped.png": b""}, {}, "points outside the archive"),
    ({"ok/a.png": b""}, {"ok/passwd.png": "/etc/passwd"}, "is a symbolic link"),
    ({"ok/a.png": b""}, {"ok/up.png": "../../../escaped.png"}, "is a symbolic link"),
])
def test_zip_entries_leaving_the_folder_are_refused_and_nothing_is_unpacked(tmp_path, entries, links, reason):
    from fusion.services.importing import unpack_upload

    entries = {name: png(1) for name in entries}
    dest = tmp_path / "upload"
    with pytest.raises(FusionError, match=reason):
        unpack_upload("evil.zip", zipped(entries, links), dest)
    assert not dest.exists()   # the good entry before the bad one was not written either
    assert not list(tmp_path.rglob("escaped*")) and not Path("/tmp/escaped-absolute.png").exists()
    # a .csv upload named to escape lands inside dest
    assert unpack_upload("../../labels.csv", b"image\n", dest).parent == dest


def test_csv_jsonl_and_folder_rows_cannot_reach_outside_their_folder(tmp_path):
    from fusion.services.importing import import_path
    from fusion.store.labeling import Store

    store = Store(load_settings(home=tmp_path / "home"))
    store.create_project("p", {"cat": "", "dog": ""}, user="importer")
    outside = tmp_path / "outside.png"
    outside.write_bytes(png(9))                           # a real image, just not the import's
    folder = tmp_path / "import"
    (folder / "cat").mkdir(parents=True)
    (folder / "inside.png").write_bytes(png(1))
    (folder / "cat" / "link.png").symlink_to(outside)     # a link in a folder import
    (folder / "linked.png").symlink_to(outside)
    bad = ["../outside.png", str(outside), "linked.png", "cat/../../outside.png", "../../../../etc/passwd"]
    (folder / "labels.csv").write_text("image,label\ninside.png,cat\n" + "".join(f"{p},dog\n" for p in bad))
    report = import_path(store, "p", folder / "labels.csv", "importer")
    assert report.added == 1 and len(report.problems) == len(bad), report.problems
    assert all("outside the folder it is listed in" in reason for _, reason in report.problems)

    (folder / "labels.csv").unlink()
    (folder / "rows.jsonl").write_text("".join(json.dumps({"image": p, "label": "dog"}) + "\n" for p in bad))
    report = import_path(store, "p", folder / "rows.jsonl", "importer")
    assert report.added == 0 and len(report.problems) == len(bad)
    (folder / "rows.jsonl").unlink()

    report = import_path(store, "p", folder, "importer")
    assert report.added + report.already == 1, report.problems   # inside.png only
    assert sorted(where for where, _ in report.problems) == ["cat/link.png", "linked.png"]
    assert all("outside the folder" in reason for _, reason in report.problems)
    shas = {i.sha256 for i in store.iter_items("p")}
    from fusion.imaging.images import image_sha256
    assert image_sha256(png(9)) not in shas


def test_export_file_names_stay_inside_the_export_folder(tmp_path):
    """Stored file names come from uploads and imports: none of them may steer where an export
    writes. The export imports back whole (import checks containment too), hostile captions included."""
    from fusion.services.exporting import export_project
    from fusion.imaging.images import check_image_file
    from fusion.services.importing import import_path
    from fusion.core.project import check_labels
    from fusion.store.labeling import NewItem, Store

    store = Store(load_settings(home=tmp_path / "home"))
    store.create_project("p", {"cat": "", "dog": ""}, user="u")
    names = ["../../escape.png", "/etc/cron.d/escape.png", "..", ".", "..\\..\\win.png", "C:\\evil\\x.png",
             "a/../../b.png", ".hidden.png", "", "x\x00y.png", "\u202egnp.exe"]
    new = [NewItem(check_image_file(png(n + 1), store.settings), name, "cat" if n % 2 else None,
                   HOSTILE_CAPTION if n % 3 == 0 else "") for n, name in enumerate(names)]
    store.add_items("p", new, "u")
    for fmt, listing in (("csv", "items.csv"), ("jsonl", "items.jsonl"), ("imagefolder", "metadata.jsonl")):
        out = tmp_path / "exports" / fmt
        export_project(store, "p", fmt, out)
        written = [p for p in (tmp_path / "exports").rglob("*") if p.is_file()]
        assert all(p.resolve().is_relative_to(out.resolve()) for p in written if fmt in p.parts), written
        images = [p for p in out.rglob("*") if p.suffix == ".png"]
        assert len(images) == len(names) and not any(p.name.startswith(".") for p in images)
        store.create_project(f"back-{fmt}", {"cat": "", "dog": ""}, user="u")
        report = import_path(store, f"back-{fmt}", out / listing if fmt != "imagefolder" else out, "u")
        assert report.added == len(names) and not report.problems, report.problems
        captions = lambda name: {i.sha256: i.caption for i in store.iter_items(name)}  # noqa: E731
        assert captions(f"back-{fmt}") == captions("p")   # NUL dropped when stored, so CSV reads back
    stray = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "exports")
             and not p.is_relative_to(tmp_path / "home")]
    assert not stray and not Path("/etc/cron.d/escape.png").exists()
    for label in ("../x", "..", "a/b", "a\\b"):   # a label is a folder name in an ImageFolder export
        with pytest.raises(FusionError, match="bad label"):
            check_labels({label: "", "ok": ""})
