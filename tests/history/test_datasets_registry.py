"""The dataset registry (history/data/datasets.json + history/datasets_registry.py)."""
from __future__ import annotations

import copy
import json

import pytest

from history import datasets_registry as R
from history.importers import get_importer

REG = R.load_registry()
ENTRIES = sorted(REG.entries)
FOLDER = {"transfergraph": "transfergraph-image", "shift": "shift", "parc": "parc", "timm": "timm"}


@pytest.fixture(scope="module")
def history_names(shared_data):
    """{(source, dataset name)} of every job in the four public histories (parsed, not stored)."""
    pairs = set()
    for imp, folder in FOLDER.items():
        batch = get_importer(imp).read(shared_data / folder)
        pairs |= {(j["source"], j["dataset"]) for j in batch.jobs}
    return pairs


def test_shipped_file_is_valid_and_versioned():
    data = json.loads(R.DATA_FILE.read_text())
    assert R.validate(data) == []
    assert data["schema_version"] == R.SCHEMA_VERSION and REG.version


@pytest.mark.parametrize("name", ENTRIES)
def test_entry_is_complete(name):
    e = REG.entries[name]
    assert e.description and "\n" not in e.description
    assert e.modality in R.MODALITIES and e.domain in REG.domains and e.label
    assert e.num_classes and e.num_classes >= 2
    assert e.num_samples and e.num_samples_split
    refs = dict(e.refs)
    assert {"num_samples", "num_classes"} <= set(refs) and set(refs.values()) <= set(REG.refs)
    if e.class_names:
        assert len(e.class_names) == e.num_classes == len(set(e.class_names)) and "class_names" in refs
    if e.vtab_group:
        assert e.modality == "image" and e.vtab_group in ("natural", "specialized", "structured")
    assert REG.lookup(name) is e and REG.canonical_name(name) == name
    for src, names in e.aliases:
        for n in names:
            assert REG.canonical_name(n, src) == name
            assert REG.canonical_name(n.upper()) == name  # case-insensitive


def test_every_history_dataset_resolves(history_names):
    assert len({d for _, d in history_names}) >= 40  # the four histories, as pulled today
    missing = sorted((s, d) for s, d in history_names if REG.lookup(d, s) is None)
    assert missing == []
    for src, d in history_names:  # and each source's name is listed as that source's alias
        assert d in REG.lookup(d, src).aliases_for(src), (src, d)


def test_vtab_has_19_tasks_in_three_groups():
    groups = {}
    for e in REG:
        if e.vtab_group:
            groups.setdefault(e.vtab_group, set()).add(e.name)
    assert {g: len(v) for g, v in groups.items()} == {"natural": 7, "specialized": 4, "structured": 8}


@pytest.mark.parametrize("names", [
    ("pets", "oxford_iiit_pet", "oxford_pets"),
    ("flowers", "oxford_flowers102"),
    ("svhn", "svhn_cropped"),
    ("smallnorb_label_azimuth", "smallnorb_azimuth"),
    ("smallnorb_label_elevation", "smallnorb_elevation"),
    ("stanfordcars", "cars196"),
])
def test_known_twins_map_together(names):
    canon = {REG.canonical_name(n) for n in names}
    assert len(canon) == 1 and None not in canon
    for n in names:
        assert set(names) <= set(REG.twins(n))


def test_different_tasks_on_the_same_images_are_not_twins():
    assert "smallnorb_elevation" not in REG.twins("smallnorb_azimuth")
    assert "smallnorb_label_elevation" in REG.twins("smallnorb_azimuth", same_images=True)
    assert REG.canonical_name("clevr_count") != REG.canonical_name("clevr_distance")
    assert REG.canonical_name("dsprites_location") != REG.canonical_name("dsprites_orientation")
    assert REG.twins("my_own_dataset") == ["my_own_dataset"] and REG.lookup("my_own_dataset") is None


def test_no_alias_maps_to_two_entries():
    seen = {}
    for e in REG:
        for n in e.all_names():
            assert seen.setdefault(n.lower(), e.name) == e.name, n
    bad = copy.deepcopy(REG.data)
    bad["datasets"][1]["aliases"]["other"] = ["pets"]
    with pytest.raises(R.RegistryError, match="also belongs to"):
        R.DatasetRegistry(bad)


def test_caltech101_is_one_dataset_with_per_source_facts():
    e = REG.lookup("caltech101", "parc")
    assert e.name == "caltech101"
    assert e.facts("parc")["num_samples"] == 2630 and e.facts("parc")["from"]["num_samples"] == "parc"
    assert e.facts("shift")["num_samples"] == e.num_samples == 3060
    assert e.facts("transfergraph-image")["num_samples"] == 3060
    assert e.train_size("shift", "vtab-1k") == 1000
    assert e.train_size("shift", "slice-80%") == round(0.8 * 3060)


def test_conflicts_are_reported_with_the_rule():
    cs = R.conflicts()
    keys = {(c.dataset, c.source, c.field) for c in cs}
    assert ("caltech101", "parc", "num_samples") in keys
    flowers = [c for c in cs if c.dataset == "oxford_flowers102"]
    assert flowers and all(c.resolution.startswith("erratum") for c in flowers)
    e = REG.lookup("flowers")
    assert e.facts("transfergraph-image")["num_classes"] == 102  # an erratum is never used
    for c in cs:
        assert c.source_value != c.canonical and c.resolution


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["datasets"][0].update(modality="audio"), "modality"),
    (lambda d: d["datasets"][0].update(domain="nowhere"), "domain"),
    (lambda d: d["datasets"][0].update(num_classes=0), "num_classes"),
    (lambda d: d["datasets"][0].update(class_names=["a", "b"]), "class_names"),
    (lambda d: d["datasets"][0]["refs"].update(num_samples="nobody"), "refs"),
    (lambda d: d["datasets"][0]["aliases"].update(mystery=["x"]), "unknown source"),
    (lambda d: d.update(schema_version=99), "schema_version"),
    (lambda d: d["datasets"].append(copy.deepcopy(d["datasets"][0])), "repeated"),
])
def test_schema_check_rejects_bad_files(tmp_path, mutate, message):
    data = copy.deepcopy(REG.data)
    mutate(data)
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(data))
    with pytest.raises(R.RegistryError, match=message):
        R.load_registry(p)


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(R.RegistryError, match="not found"):
        R.load_registry(tmp_path / "none.json")
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(R.RegistryError, match="not valid JSON"):
        R.load_registry(tmp_path / "x.json")


def test_aliases_table_lists_every_source_name():
    rows = REG.aliases_table()
    assert {"name": "pets", "source": "transfergraph-image", "canonical": "oxford_iiit_pet"} in rows
    assert {"name": "oxford_pets", "source": "parc", "canonical": "oxford_iiit_pet"} in rows


def test_groups_hold_twins_together_for_holdouts(history_names):
    names = sorted({d for _, d in history_names} | {"my_own_dataset"})
    g = R.groups(names)
    assert g["oxford_iiit_pet"] == ["oxford_iiit_pet", "oxford_pets", "pets"]
    assert g["svhn_cropped"] == ["svhn", "svhn_cropped"] and g["my_own_dataset"] == ["my_own_dataset"]
    assert sorted(n for grp in g.values() for n in grp) == names  # a partition: no name lost or doubled
    assert len(g) == len(REG) + 1 - sum(1 for e in REG if not set(e.all_names()) & set(names))


def test_store_record_carries_canonical_facts_and_the_rest_in_extra(store):
    e = REG.lookup("pets")
    rec = e.store_record("parc")
    assert (rec["name"], rec["num_samples"], rec["num_classes"]) == ("oxford_iiit_pet", 3680, 37)
    assert rec["extra"]["facts_for_source"]["parc"]["num_samples"] == 3669
    store.commit(datasets=[rec])
    row = store.get_dataset("oxford_iiit_pet")
    assert row["extra"]["registry"]["aliases"]["transfergraph-image"] == ["pets"]
    assert len(row["extra"]["registry"]["class_names"]) == 37
