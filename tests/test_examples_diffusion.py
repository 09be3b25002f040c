"""The diffusion example tasks: data built by construction, contributors read off it."""

from __future__ import annotations

import datasets
import numpy as np

from attrib.examples import shapes_sd


def test_shapes_training_set_covers_the_trained_combinations_and_captions_name_values(tmp_path):
    path = shapes_sd.write_data(tmp_path)
    table = datasets.load_dataset("parquet", data_files=str(path), split="train")
    assert len(table) == 100 * shapes_sd.PER_COMBINATION
    triples = list(zip(table["colour"], table["shape"], table["background"]))
    assert sorted(set(triples)) == sorted(shapes_sd.combinations())
    assert not any(shapes_sd.held_out(*t) for t in triples)
    for attribute, values in shapes_sd.ATTRIBUTES.items():
        for value in values:  # every value in a fifth of the images: chance recall is 20%
            assert table[attribute].count(value) == 60
    named = {a: 0 for a in shapes_sd.ATTRIBUTES}
    for (colour, shape, background), text in zip(triples, table["caption"]):
        words = text.split()
        # A caption names only the image's own values, each attribute or not.
        assert set(words) <= {colour, shape, "on", background}
        named["colour"] += colour in words
        named["shape"] += shape in words
        named["background"] += background in words
    assert all(200 < n < 280 for n in named.values())  # ~0.8 x 300 each
    first = np.asarray(table[0]["image"])
    assert first.shape == (16, 16, 3)
    # The shape is drawn in its colour over a grey texture.
    assert (first == shapes_sd.COLOURS[table[0]["colour"]]).all(axis=2).sum() >= 20
    assert not np.array_equal(first, np.asarray(table[1]["image"]))


def test_held_out_combinations_are_a_latin_square():
    held = shapes_sd.combinations(held=True)
    assert len(held) == 25
    for i, j in ((0, 1), (0, 2), (1, 2)):  # each pair of values is held out exactly once
        assert len({(t[i], t[j]) for t in held}) == 25


def test_contributors_are_the_training_images_with_the_querys_value(tmp_path):
    train = shapes_sd.write_data(tmp_path / "data")
    queries = tmp_path / "queries.parquet"
    datasets.Dataset.from_dict(
        {"colour": ["red", "blue"], "shape": ["ring", "cross"], "background": ["dots", "grid"]}
    ).to_parquet(str(queries))
    sets = shapes_sd.contributors(queries, train)
    table = datasets.load_dataset("parquet", data_files=str(train), split="train")
    for attribute, wanted in (("colour", ["red", "blue"]), ("background", ["dots", "grid"])):
        for q, value in enumerate(wanted):
            rows = sets[attribute][str(q)]
            assert len(rows) == 60
            assert {table[i][attribute] for i in rows} == {value}
    assert set(sets) == {"colour", "shape", "background"}


def test_a_text_to_image_pipeline_without_vae_works_in_pixel_space(tmp_path):
    """shapes_sd's layout: model_index names no VAE; images are the diffusion's space."""
    import json
    import shutil

    import torch
    from builders import CAPTIONS, save_plain_images, save_tiny_sd
    from helpers import autograd_gradients, features

    from attrib.data import DataRef, open_dataset, undecoded
    from attrib.featurize.projection import ProjectionSpec
    from attrib.tasks import ModelRef, TaskOptions, load_task

    pipe = save_tiny_sd(tmp_path / "pipe")
    index = json.loads((pipe / "model_index.json").read_text())
    index["vae"] = [None, None]
    (pipe / "model_index.json").write_text(json.dumps(index))
    shutil.rmtree(pipe / "vae")
    config = json.loads((pipe / "unet" / "config.json").read_text())
    config.update(in_channels=3, out_channels=3)
    (pipe / "unet" / "config.json").write_text(json.dumps(config))
    (pipe / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # in/out convs changed
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    UNet2DConditionModel.from_config(config).save_pretrained(pipe / "unet")
    data = save_plain_images(tmp_path / "d.parquet", 3, seed=1, size=8, captions=CAPTIONS)
    task = load_task(ModelRef(str(pipe)), None, torch.float32, TaskOptions(timesteps=2))
    assert task.vae is None and task.conditional and task.resolution() == 8
    dataset = open_dataset(DataRef(str(data)))
    columns = task.bind_columns(dataset)
    rows = undecoded(dataset, columns["image"])
    got = features(task, rows, ProjectionSpec("none", None), range(3), "loss")
    want = autograd_gradients(task, rows, range(3), "loss")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6)
