"""`python -m fusion bench similar --json`: "more like this" and the dataset map, on the demo project
and at 100,000 items.

The demo: the time to embed its items from cached features, and how often a page's 8 nearest
neighbours share its label. At 100,000 items (the demo's embeddings repeated with a little noise,
the same shape a real project's have): the time of a query by fusion.ml.embeddings.nearest beside
the plain alternative, the same exact search over the embeddings before PCA (1,664 dimensions);
and the time to read the map's facts from a store of 100,000 rows (SQLite), build its points and
figure, its size, and (where Chromium is installed) the time plotly.js takes to draw it in a
headless browser.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fusion.core.settings import Settings
from fusion.privacy.shown import Shown

ITEMS = 100_000
QUERIES = 50
RAW_DIMS = 1280 + 384      # the concatenated embedding before PCA


def _median_ms(run, repeats: int) -> float:
    times = []
    for n in range(repeats):
        started = time.perf_counter()
        run(n)
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def _scaled(embeddings, items: int, seed: int = 0):
    """The demo's embeddings repeated to `items` rows, each with a little noise, rows unit length."""
    from fusion.ml.embeddings import Embeddings

    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(embeddings.item_ids), items)
    vectors = embeddings.vectors[picks] + rng.normal(0, 0.05, (items, embeddings.vectors.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    points = embeddings.map[picks] + rng.normal(0, 0.02, (items, 2)).astype(np.float32)
    return Embeddings("scaled", np.arange(1, items + 1, dtype=np.int64), vectors, points, embeddings.map_variance,
                      embeddings.computed_at)


def _store_facts(items: int) -> tuple[dict[str, list], float]:
    """A throwaway store of `items` rows (fusion.bench.store.fill) and the median time, in ms, of
    reading the map's facts from it, as the Dataset page does."""
    from fusion.bench.store import LABELS, fill
    from fusion.core.settings import load_settings
    from fusion.store.labeling import Store

    with tempfile.TemporaryDirectory() as home:
        store = Store(load_settings(home=Path(home), database_url=""))
        store.create_project("map", LABELS, "bench")
        fill(store, "map", items)
        facts = []
        ms = _median_ms(lambda _: facts.append(store.item_facts("map")), 3)
        store.db.engine.dispose()
    return facts[-1], ms


def _browser_draw_ms(figure_json: str) -> float | None:
    """plotly.js's newPlot of the figure in headless Chromium, in ms; None without Chromium."""
    import shutil

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    from plotly.offline import get_plotlyjs
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "map.html"
        page.write_text(f"<html><body><div id='map' style='width:1000px;height:520px'></div><script>{get_plotlyjs()}"
                        f"</script><script>const fig = {figure_json}; const t0 = performance.now();"
                        "Plotly.newPlot('map', fig.data, fig.layout).then(() => requestAnimationFrame(() => {"
                        "document.title = 'drawn ' + (performance.now() - t0); }));</script></body></html>")
        options = webdriver.ChromeOptions()
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--window-size=1280,800"):
            options.add_argument(flag)
        options.binary_location = shutil.which("chromium")
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        try:
            driver.get(page.as_uri())
            deadline = time.monotonic() + 60
            while not driver.title.startswith("drawn") and time.monotonic() < deadline:
                time.sleep(0.05)
            return round(float(driver.title.split()[1]), 1) if driver.title.startswith("drawn") else None
        finally:
            driver.quit()


def bench_similar(settings: Settings, items: int = ITEMS) -> dict:
    from fusion.ml.embeddings import compute_embeddings, nearest
    from fusion.services.dataset_map import MAP_POINTS, map_figure, map_points
    from fusion.store.labeling import open_store

    store = open_store(settings)
    project = store.project(settings.demo_project)
    started = time.perf_counter()
    demo = compute_embeddings(settings, store, project.name)
    embed_s = time.perf_counter() - started
    labels = store.labels_of(project.name, demo.item_ids.tolist())
    same = [labels.get(j) == labels[i] for i in demo.item_ids.tolist() if i in labels
            for j, _ in nearest(demo, i, 8)]

    big = _scaled(demo, items)
    rng = np.random.default_rng(1)
    queries = rng.integers(1, items + 1, QUERIES)
    ours = _median_ms(lambda n: nearest(big, int(queries[n]), 10), QUERIES)
    raw = rng.normal(size=(items, RAW_DIMS)).astype(np.float32)   # the plain search's cost is the same for any values
    raw /= np.linalg.norm(raw, axis=1, keepdims=True)

    def plain(n: int) -> None:
        scores = raw @ raw[queries[n] - 1]
        top = np.argpartition(-scores, 11)[:11]
        top[np.argsort(-scores[top])]

    plain_ms = _median_ms(plain, QUERIES)
    del raw
    facts, facts_ms = _store_facts(items)
    big.item_ids = np.asarray(facts["id"], dtype=np.int64)
    figures = []

    def build(_: int) -> None:
        figures.append(map_figure(map_points(big, facts), "label", Shown(False)).to_json())

    map_ms = _median_ms(build, 5)
    return {"project": project.name, "demo": {"items": len(demo.item_ids), "embed_s": round(embed_s, 2),
                                              "neighbours_with_the_same_label": round(float(np.mean(same)), 3),
                                              "map_variance": round(demo.map_variance, 3)},
            "at_scale": {"items": items, "dims": int(big.vectors.shape[1]),
                         "matrix_mb": round(big.vectors.nbytes / 1e6, 1),
                         "query_ms_median": ours, "plain_exact_query_ms_median": plain_ms, "plain_dims": RAW_DIMS,
                         "map_points_drawn": min(items, MAP_POINTS), "map_facts_from_store_ms_median": facts_ms,
                         "map_build_ms_median": map_ms,
                         "map_json_mb": round(len(figures[-1]) / 1e6, 2),
                         "map_browser_draw_ms": _browser_draw_ms(figures[-1])}}
