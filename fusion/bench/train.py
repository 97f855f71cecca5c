"""`python -m fusion bench train --json`: training speed through the product's own code.

In a throwaway workspace with 1,000 generated, labeled demo pages (the pages are kept in
<home>/bench-train-pages to be reused by later runs):
- head mode: the feature-caching rate (images/s, both encoders), then 20 epochs of training
  once features are cached (patience 20: every epoch runs);
- full mode (224 px, 128 tokens; bf16 and channels_last on a GPU): samples/s of `fit`, GPU
  memory, an MFU estimate from a FLOP count of one training step, and, measured in the same
  run, the bare-encoder reference: both encoders fused by concatenation, fed random tensors
  already on the device, trained with the same optimizer and autocast.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from fusion.core.progress import Progress
from fusion.core.settings import Settings, describe_device, load_settings

ITEMS = 1000
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}   # dense, per NVIDIA's datasheets


def _project(settings: Settings, store, n: int) -> str:
    from fusion.demo import documents as demo_data
    from fusion.imaging.images import check_image_file
    from fusion.store.labeling import NewItem

    source = settings.home / "bench-train-pages"
    items = demo_data.generate(source, n=n, seed=7)
    store.create_project("bench-train", demo_data.LABELS, user="bench")
    for start in range(0, n, 200):
        store.add_items("bench-train", [
            NewItem(check_image_file(source / i.file, settings), Path(i.file).name, label=i.label,
                    caption=i.caption, ocr_text=i.text, ocr_engine="demo generator text")
            for i in items[start:start + 200]], user="bench")
    return "bench-train"


def _bare_reference(engine, device: str, batch: int, steps: int) -> float:
    """samples/s of the two bare encoders + a linear head on concatenated pooled features."""
    from fusion.ml.finetune import encoders_for_training

    image_encoder, text_encoder = encoders_for_training("full", engine.image_encoder, engine.text_encoder)
    cuda = device.startswith("cuda")
    head = torch.nn.Linear(1280 + 384, 6).to(device)
    image_encoder.to(device).train()
    bert = text_encoder.bert_sdpa.to(device).train()
    if cuda:
        image_encoder.to(memory_format=torch.channels_last)
    params = [p for m in (image_encoder, bert, head) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    pixels = torch.randn(batch, 3, 224, 224, device=device)
    if cuda:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    ids = torch.randint(1000, 20000, (batch, 128), device=device)
    mask = torch.ones(batch, 128, dtype=torch.long, device=device)
    targets = torch.randint(0, 6, (batch,), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            img = image_encoder(pixels).mean((2, 3))
            txt = bert(input_ids=ids, attention_mask=mask).last_hidden_state.mean(1)
            loss = torch.nn.functional.cross_entropy(head(torch.cat([img, txt], -1)).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def _flops_per_sample(trainable, data, device: str) -> float:
    """Training FLOPs per sample: 3x the forward pass counted by torch's FLOP counter (backward
    costs about twice the forward). Its own backward count is not used: it prices a depthwise
    convolution's backward as a dense one, ten times too high for EfficientNet."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = data.subset(torch.arange(min(8, len(data))))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        trainable(*batch.inputs(device))
    return 3 * counter.get_total_flops() / len(batch)


def _full_mode(settings: Settings, store, project: str, device: str) -> dict:
    from fusion.ml.encoders import IMAGE_SIZE
    from fusion.ml.finetune import EndToEnd, encoders_for_training
    from fusion.ml.model import ModelConfig
    from fusion.ml.pipeline import get_engine
    from fusion.ml.train import TrainConfig, fit
    from fusion.ml.training_data import labeled_examples, pixel_set
    from fusion.ml.zeroshot import build_zero_shot_model

    cuda = device.startswith("cuda")
    engine = get_engine(dataclasses.replace(settings, device=device))
    examples = labeled_examples(store, project)
    n = len(examples.ids) if cuda else 96            # a CPU gets a short measurement
    labels = store.project(project).label_names
    t = time.perf_counter()
    data = pixel_set(examples.paths[:n], examples.texts[:n], [labels.index(x) for x in examples.labels[:n]],
                     engine.text_encoder)
    decode_rate = n / (time.perf_counter() - t)
    # one chunk of 128 tokens for every sample, as the target states (pages usually fill them anyway)
    data.input_ids = torch.nn.functional.pad(data.input_ids[:, :1], (0, 128 - data.input_ids.shape[2]))[..., :128]
    data.mask = torch.nn.functional.pad(data.mask[:, :1], (0, 128 - data.mask.shape[2]), value=1)[..., :128]
    data = data.on_gpu_if_it_fits(device)
    batch = 256 if cuda else 16
    config = TrainConfig(mode="full", epochs=4 if cuda else 1, batch_size=batch, patience=100, device=device)
    fusion = build_zero_shot_model(ModelConfig(labels), engine.image_encoder, engine.text_encoder)
    fusion.requires_grad_(True).imagenet_fc.requires_grad_(False)
    trainable = EndToEnd(*encoders_for_training("full", engine.image_encoder, engine.text_encoder), fusion,
                         channels_last=cuda).to(device)
    flops = _flops_per_sample(trainable, data, device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    history = fit(trainable, data, data.subset(torch.arange(min(64, n))), config, device)
    rate = max(row.samples_per_s for row in history[1:] or history)  # the first epoch warms up
    reference = _bare_reference(engine, device, batch, steps=20 if cuda else 3)
    result = {"device": describe_device(device), "items": n, "image_size": IMAGE_SIZE, "tokens": 128,
              "batch_size": batch, "bf16": cuda, "channels_last": cuda, "decode_images_per_s": round(decode_rate, 1),
              "samples_per_s": round(rate, 1), "epochs": [row.samples_per_s for row in history],
              "bare_encoders_samples_per_s": round(reference, 1), "ratio_to_bare": round(rate / reference, 3),
              "train_gflops_per_sample": round(flops / 1e9, 2)}
    if cuda:
        name = torch.cuda.get_device_name(device)
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
        result["gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if peak:
            result["mfu"] = round(rate * flops / (peak * 1e12), 4)
            result["mfu_peak_tflops"] = peak
    return result


def bench_train(settings: Settings, items: int = ITEMS) -> dict:
    from fusion.store.labeling import Store
    from fusion.ml.train import TrainConfig, resolve_device, train_version

    settings.home.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=settings.home) as tmp:
        bench_settings = load_settings(home=Path(tmp), device=settings.device)
        store = Store(bench_settings)
        project = _project(settings, store, items)
        setup = time.perf_counter() - t

        stages: dict[str, list] = {}

        def report(progress: Progress) -> None:
            stages.setdefault(progress.stage, []).append((time.perf_counter(), progress))
        config = TrainConfig(mode="head", epochs=20, patience=20, device="cpu")
        t0 = time.perf_counter()
        train_version(bench_settings, store, project, config, user="bench", report=report)
        total = time.perf_counter() - t0
        encoded = stages["encoding"][-1]
        cache_seconds = encoded[0] - t0
        t1 = time.perf_counter()
        _, cached = train_version(bench_settings, store, project, config, user="bench")   # features now cached
        cached_seconds = time.perf_counter() - t1
        head = {"device": describe_device("cpu"), "items": items, "epochs": len(cached.history),
                "feature_cache_images_per_s": round(encoded[1].steps / cache_seconds, 1),
                "first_run_seconds": round(total, 2),
                "cached_run_seconds": round(cached_seconds, 2),
                "cached_train_seconds": cached.seconds["train"],
                "test_accuracy": cached.score("fused", "accuracy")}
        full = _full_mode(bench_settings, store, project, resolve_device(settings.device))
    return {"setup_seconds": round(setup, 1), "head_mode_cpu": head, "full_mode": full}
