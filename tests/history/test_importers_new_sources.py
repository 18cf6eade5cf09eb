"""The VTAB, two-phase-selection and open_clip importers on the real files in ../shared/data,
``history pull all`` over the seven local histories, and their error paths."""
from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import shutil
import threading

import pandas as pd
import pytest

from history.datasets_registry import canonical_name
from history.errors import HistoryImportError
from history.importers import IMPORTERS, get_importer, load_all
from history.importers.base import Importer
from history.importers.openclip import DATASETS, family_of, parse_tag
from history.importers.shift import regime_of, task_name
from history.importers.two_phase import hub_name
from history.pull import PUBLIC_HISTORIES, pull, pull_all
from history.store import HistoryStore
from recommender.cli import main

load_all()
NEW = {"vtab": "vtab", "two-phase": "two-phase-selection", "openclip": "openclip"}  # importer -> folder / pull name
VTAB_TASKS = {
    "caltech101", "cifar100", "clevr_count", "clevr_distance", "diabetic_retinopathy_detection", "dmlab",
    "dsprites_location", "dsprites_orientation", "dtd", "eurosat", "kitti", "oxford_flowers102",
    "oxford_iiit_pet", "patch_camelyon", "resisc45", "smallnorb_azimuth", "smallnorb_elevation", "sun397",
    "svhn_cropped",
}
SEVEN = ["transfergraph-image", "shift", "parc", "timm", "vtab", "two-phase-selection", "openclip"]


@pytest.fixture(scope="module")
def imported(shared_data, tmp_path_factory):
    """Each new history imported twice into its own store: {importer: (store, report1, report2)}."""
    out = {}
    root = tmp_path_factory.mktemp("new")
    for imp_name, folder in NEW.items():
        s = HistoryStore(f"sqlite:///{root / (folder + '.db')}")
        imp = get_importer(imp_name)
        r1 = imp.run(s, shared_data / folder)
        r2 = imp.run(s, shared_data / folder)
        print(r1.summary())
        out[imp_name] = (s, r1, r2)
    yield out
    for s, _, _ in out.values():
        s.dispose()


@pytest.fixture(scope="module")
def pulled_all(shared_data, tmp_path_factory):
    """``history pull all --from ../shared/data`` twice (text, then --json) into one home:
    (home, text output, json report of the second pull)."""
    home = tmp_path_factory.mktemp("all")
    outs = []
    for extra in ([], ["--json"]):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["--home", str(home), "history", "pull", "all", "--from", str(shared_data), *extra]) == 0
        outs.append(buf.getvalue())
    return home, outs[0], json.loads(outs[1])


# ---------------------------------------------------------------------- registry-wide
@pytest.mark.parametrize("name", sorted(NEW))
def test_registered_with_metadata(name):
    cls = IMPORTERS[name]
    assert issubclass(cls, Importer) and cls.name == name and cls.canonical_datasets and len(cls.description) > 20


@pytest.mark.parametrize("name", sorted(NEW))
def test_unknown_option_is_an_error(name, shared_data):
    with pytest.raises(HistoryImportError, match="unknown option"):
        get_importer(name).read(shared_data / NEW[name], bogus=1)


@pytest.mark.parametrize("name", sorted(NEW))
def test_idempotent_and_every_value_accounted(imported, name):
    s, r1, r2 = imported[name]
    assert r1.jobs_added > 0 and r1.jobs_added == r1.jobs_read
    assert (r2.jobs_added, r2.jobs_existing) == (0, r1.jobs_read)
    assert r2.models_added == 0 and r2.datasets_added == 0
    assert len(s.jobs_frame()) == r1.jobs_added
    # rows_read counts the values of the wide tables: each is a job or a counted drop
    assert r1.rows_read == r1.jobs_read + r1.rows_dropped


@pytest.mark.parametrize("name", sorted(NEW))
def test_provenance_and_hparams(imported, name, shared_data):
    s, _, _ = imported[name]
    j = s.jobs_frame()
    prov = j["provenance"].str.rsplit(":", n=1, expand=True)
    assert prov[1].str.fullmatch(r"\d+").all()
    assert all((shared_data / NEW[name] / f).exists() for f in set(prov[0]))
    assert j["hparams"].map(lambda h: isinstance(h, dict)).all()


# ---------------------------------------------------------------------- vtab
def test_vtab_counts_regimes_and_canonical_tasks(imported, shared_data):
    s, r, _ = imported["vtab"]
    j = s.jobs_frame()
    assert r.rows_read == 16 * 38 and len(j) == 607
    assert j["regime"].value_counts().to_dict() == {"vtab-1k": 304, "full": 303}
    # SHiFT's regime names for the same slices: ':800' -> vtab-1k, ':100%' -> full
    assert set(j["regime"]) == {regime_of(":800"), regime_of(":100%")}
    assert set(j["metric"]) == {"test_accuracy"} and set(j["source"]) == {"vtab"}
    assert set(j["dataset"]) == VTAB_TASKS
    # the same canonical task as SHiFT's (and TransferGraph's) names
    assert canonical_name("sNORB-Azim") == task_name("smallnorb", "label_azimuth", None) == "smallnorb_azimuth"
    assert canonical_name("smallnorb_label_azimuth") == "smallnorb_azimuth"  # TransferGraph's name
    for vtab, canon in [("Retinopathy", "diabetic_retinopathy_detection"), ("dSpr-Loc", "dsprites_location"),
                        ("Clevr-Count", "clevr_count"), ("Camelyon", "patch_camelyon"), ("KITTI-Dist", "kitti"),
                        ("Pets", "oxford_iiit_pet"), ("SVHN", "svhn_cropped"), ("Flowers102", "oxford_flowers102")]:
        assert canonical_name(vtab) == canon
    d = s.datasets_frame().set_index("name")
    assert d.loc["smallnorb_azimuth", "extra"]["aliases"] == {"vtab": ["sNORB-Azim"]}
    # percent -> fraction, value for value
    raw = pd.read_csv(shared_data / "vtab" / "results.csv", header=[0, 1], skiprows=[2])
    sup = raw[raw.iloc[:, 0] == "Sup-100%"]
    want = float(sup[("1000", "sNORB-Azim")].iloc[0]) / 100
    got = j[(j["model"] == "vtab:Sup-100%") & (j["dataset"] == "smallnorb_azimuth") & (j["regime"] == "vtab-1k")]
    assert len(got) == 1 and got["value"].iloc[0] == pytest.approx(want)


def test_vtab_below_chance_dropped_and_counted(imported, shared_data):
    _, r, _ = imported["vtab"]
    (reason, n), = r.dropped.items()
    assert n == 1 and "Cond-BigGAN on Caltech101 (full)" in reason and "include_below_chance" in reason
    b = get_importer("vtab").read(shared_data / "vtab", include_below_chance=True)
    assert len(b.jobs) == 608 and not b.report.dropped


def test_vtab_model_meta(imported):
    s, r, _ = imported["vtab"]
    m = s.models_frame().set_index("name")
    assert len(m) == 16
    sup = m.loc["vtab:Sup-100%"]
    assert sup["architecture"] == "ResNet50" and sup["family"] == "resnet" and sup["depth"] == 50
    assert sup["input_size"] == 224 and sup["pretrain_dataset"] == "imagenet"
    assert sup["extra"]["tfhub"] == "https://tfhub.dev/vtab/sup-100/1" and sup["extra"]["upstream"] == "supervised"
    assert m.loc["vtab:Semi-Rotation-10%", "extra"]["imagenet_label_fraction"] == 0.1
    scratch = m.loc["vtab:From-Scratch"]
    assert scratch["extra"]["pretrained"] is False and pd.isna(scratch["pretrain_dataset"])
    assert any("From-Scratch" in n and "TF-Hub" in n for n in r.notes)


def test_vtab_and_shift_share_task_and_regime(shared_data, store):
    get_importer("shift").run(store, shared_data / "shift")
    get_importer("vtab").run(store, shared_data / "vtab")
    t = store.targets()
    both = t[(t["dataset"] == "smallnorb_azimuth") & (t["regime"] == "vtab-1k")]
    assert set(",".join(both["sources"]).split(",")) == {"shift", "vtab"}
    d = store.datasets_frame().set_index("name")
    assert set(d.loc["smallnorb_azimuth", "extra"]["aliases"]) == {"shift", "vtab"}
    assert "sNORB-Azim" not in d.index


def test_vtab_bad_value_names_row_and_column(shared_data, tmp_path):
    bad = tmp_path / "vtab"
    bad.mkdir()
    lines = (shared_data / "vtab" / "results.csv").read_text().splitlines(keepends=True)
    cells = lines[4].split(",")  # data row 2 (Exemplar)
    cells[3] = "79.1x"
    lines[4] = ",".join(cells)
    (bad / "results.csv").write_text("".join(lines))
    with pytest.raises(HistoryImportError, match=r"data row 2 \(file line 5, Exemplar\).*Camelyon.*'79\.1x'"):
        get_importer("vtab").read(bad)
    (bad / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(HistoryImportError, match="three header rows"):
        get_importer("vtab").read(bad)


# ---------------------------------------------------------------------- two-phase-selection
def test_two_phase_counts_regime_and_metrics(imported):
    s, r, _ = imported["two-phase"]
    j = s.jobs_frame()
    assert r.rows_read == 30 * 6 + 39 * 21 == len(j) == 999
    assert set(j["regime"]) == {"finetune-unspecified"} and set(j["source"]) == {"two-phase-selection"}
    by_metric = j.groupby("metric")["dataset"].agg(lambda x: set(x)).to_dict()
    assert by_metric["matthews_corr"] == {"glue/cola"} and by_metric["unspecified_score"] == {"stsb"}
    assert j["metric"].value_counts().to_dict() == {"accuracy": 921, "matthews_corr": 39, "unspecified_score": 39}
    assert j.loc[j["metric"] == "matthews_corr", "value"].min() == pytest.approx(-0.04)  # a correlation, not accuracy
    summary = r.summary()
    assert "matthews_corr" in summary and "cola" in summary and "not accuracy" in summary
    d = s.datasets_frame().set_index("name")
    assert (d["modality"] == "image").sum() == 6 and (d["modality"] == "text").sum() == 21


def test_two_phase_canonical_names_and_models(imported):
    s, r, _ = imported["two-phase"]
    ds = set(s.jobs_frame()["dataset"])
    # the same canonical names as SHiFT's (glue/cola, glue/sst2, dbpedia_14) and PARC's (cifar10, cub200)
    assert {"glue/cola", "glue/sst2", "dbpedia_14", "cifar10", "cub200", "food101", "Matthijs/snacks"} <= ds
    assert not {"cola", "sst2", "alkzar90/CC6204-Hackaton-Cub-Dataset"} & ds
    assert canonical_name("cola") == task_name("glue/cola") == "glue/cola"
    m = s.models_frame().set_index("name")
    assert len(m) == 69 and not m.index.str.contains("--").any()
    assert r.repaired["model name written with '--' for '/' (Hugging Face cache spelling) -> org/name"] == 35
    row = m.loc["aditeyabaral/finetuned-sail2017-xlm-roberta-base"]
    assert row["modality"] == "text"
    assert row["extra"]["name_as_written"] == "aditeyabaral--finetuned-sail2017-xlm-roberta-base"
    assert m.loc["facebook/deit-base-patch16-384", "input_size"] == 384
    assert m.loc["google/vit-base-patch16-224", "modality"] == "image"
    assert hub_name("bert-base-uncased") == "bert-base-uncased" and hub_name("a--b") == "a/b"


def test_two_phase_bad_shapes(shared_data, tmp_path):
    bad = tmp_path / "tp"
    shutil.copytree(shared_data / "two-phase-selection", bad)
    names = (bad / "CV" / "datasets.txt").read_text()
    (bad / "CV" / "datasets.txt").write_text(names + "\nextra_dataset")
    with pytest.raises(HistoryImportError, match="6 value lines but datasets.txt names 7"):
        get_importer("two-phase").read(bad)
    (bad / "CV" / "datasets.txt").write_text(names)
    lines = (bad / "NLP" / "matrix.txt").read_text().splitlines(keepends=True)
    lines[3] = lines[3].replace("\t", "\t1.7\t", 1)
    (bad / "NLP" / "matrix.txt").write_text("".join(lines))
    with pytest.raises(HistoryImportError, match=r"line 4 \(mrpc\) has 40 values but line 1 names 39"):
        get_importer("two-phase").read(bad)
    # one part alone is readable
    b = get_importer("two-phase").read(shared_data / "two-phase-selection" / "CV")
    assert len(b.jobs) == 180 and any("no NLP part" in n for n in b.report.notes)


# ---------------------------------------------------------------------- openclip
def test_openclip_counts_regime_metrics_and_names(imported):
    s, r, _ = imported["openclip"]
    j = s.jobs_frame()
    assert r.rows_read == 121 * 35 == len(j) == 4235
    assert set(j["regime"]) == {"zero-shot"} and set(j["source"]) == {"openclip"}
    assert j["dataset"].nunique() == 35 and j["model"].nunique() == 121
    assert "Average perf. on 35 datasets" not in set(j["dataset"])
    metric = j.groupby("dataset")["metric"].agg(lambda x: set(x))
    assert metric["stanford_cars"] == {"accuracy"} and metric["oxford_iiit_pet"] == {"mean_per_class_recall"}
    assert metric["wilds/iwildcam"] == {"macro_f1"} and metric["wilds/fmow"] == {"worst_region_accuracy"}
    assert (j["metric"] == "accuracy").sum() == 27 * 121
    # DataComp names -> the canonical tasks of TransferGraph / SHiFT / timm / PARC
    assert canonical_name("cars") == canonical_name("stanfordcars") == "stanford_cars"
    assert canonical_name("vtab/pets") == canonical_name("pets") == canonical_name("oxford_iiit_pet")
    assert canonical_name("vtab/clevr_count_all") == task_name("clevr", "label", "clevr_count")
    assert canonical_name("imagenet1k") == "imagenet" and canonical_name("vtab/svhn") == "svhn_cropped"
    assert {"stanford_cars", "oxford_iiit_pet", "imagenet", "clevr_count", "kitti", "food101", "mnist"} \
        <= set(j["dataset"])
    cols = pd.read_csv(s.imports_frame()["path"].iloc[0] + "/openclip_classification_results.csv", nrows=0).columns
    meta = {"name", "pretrained", "params (M)", "FLOPs (B)", "Average perf. on 35 datasets"}
    assert set(DATASETS) == set(cols) - meta


def test_openclip_model_meta(imported):
    s, r, _ = imported["openclip"]
    m = s.models_frame().set_index("name")
    b32 = m.loc["ViT-B-32@laion2b_s34b_b79k"]
    assert b32["pretrain_dataset"] == "laion2b" and b32["architecture"] == "ViT-B-32" and b32["family"] == "vit"
    assert b32["input_size"] == 224 and b32["feature_dim"] == 512
    assert b32["params"] == pytest.approx(87.85e6) and b32["gmacs"] == pytest.approx(4.41)  # image tower
    ex = b32["extra"]
    assert ex["params_total"] == pytest.approx(151.28e6) and ex["samples_seen"] == 34e9 and ex["batch_size"] == 79000
    assert 0 < ex["avg_35_datasets"] < 1
    assert m.loc["ViT-H-14-378-quickgelu@dfn5b", "input_size"] == 378
    assert m["input_size"].notna().all() and m["params"].notna().all() and m["gmacs"].notna().all()
    assert pd.isna(m.loc["nllb-clip-base@v1", "pretrain_dataset"])
    assert any("version-only" in n for n in r.notes)
    assert any(n.startswith("4 group(s) of models with identical scores") and "ViT-B-32-quickgelu@openai" in n
               for n in r.notes)


@pytest.mark.parametrize("tag,data,extra", [
    ("laion2b_s34b_b79k", "laion2b", {"samples_seen": 34e9, "batch_size": 79000}),
    ("laion400m_e32", "laion400m", {"epochs": 32}),
    ("datacomp_xl_s13b_b90k", "datacomp_xl", {"samples_seen": 13e9, "batch_size": 90000}),
    ("commonpool_m_clip_s128m_b4k", "commonpool_m_clip", {"samples_seen": 128e6, "batch_size": 4000}),
    ("laion2b_s34b_b82k_augreg_soup", "laion2b", {"samples_seen": 34e9, "batch_size": 82000, "recipe": "augreg_soup"}),
    ("mscoco_finetuned_laion2b_s13b_b90k", "laion2b", {"finetuned_on": "mscoco", "samples_seen": 13e9,
                                                        "batch_size": 90000}),
    ("frozen_laion5b_s13b_b90k", "laion5b", {"frozen": True, "samples_seen": 13e9, "batch_size": 90000}),
    ("openai", "openai", {}), ("metaclip_fullcc", "metaclip_fullcc", {}),
])
def test_openclip_parse_tag(tag, data, extra):
    assert parse_tag(tag) == (data, extra)


@pytest.mark.parametrize("arch,fam", [("ViT-B-32-quickgelu", "vit"), ("EVA02-E-14-plus", "eva02"),
                                      ("convnext_base_w", "convnext"), ("RN50x4", "resnet"),
                                      ("coca_ViT-L-14", "coca"), ("xlm-roberta-base-ViT-B-32", "vit")])
def test_openclip_family(arch, fam):
    assert family_of(arch) == fam


def test_openclip_bad_files(shared_data, tmp_path):
    bad = tmp_path / "oc"
    shutil.copytree(shared_data / "openclip", bad)
    f = bad / "openclip_classification_results.csv"
    text = f.read_text()
    f.write_text(text.replace("GeoDE", "GeoDE v2", 1))
    with pytest.raises(HistoryImportError, match="unknown dataset column.*GeoDE v2"):
        get_importer("openclip").read(bad)
    f.write_text(text.replace(",0.9349\n", ",93.49\n", 1))
    with pytest.raises(HistoryImportError, match=r"row 1 .*GeoDE = '93\.49' is outside \[0, 1\]"):
        get_importer("openclip").read(bad)


# ---------------------------------------------------------------------- pull: registry, download, all
@pytest.mark.parametrize("name", ["vtab", "two-phase-selection", "openclip"])
def test_pull_from_local_mirror(name, shared_data, store):
    r = pull(store, name, from_dir=shared_data)
    assert r.jobs_added > 0 and not any("differs" in n for n in r.notes)
    assert pull(store, name, from_dir=shared_data / name).jobs_added == 0
    assert PUBLIC_HISTORIES[name].license != "none stated (published research results)"


class _Server:
    def __init__(self, root):
        hits = self.hits = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                hits.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_pull_downloads_files_in_sub_folders(shared_data, store, tmp_path):
    srv = _Server(shared_data)
    try:
        cache = tmp_path / "cache"
        r = pull(store, "two-phase-selection", cache_dir=cache, base_url=f"{srv.url}/two-phase-selection",
                 progress=False)
        assert r.jobs_added == 999 and sum("sha256 verified" in n for n in r.notes) == 4
        assert sorted(srv.hits) == ["/two-phase-selection/CV/datasets.txt", "/two-phase-selection/CV/matrix.txt",
                                    "/two-phase-selection/NLP/datasets.txt", "/two-phase-selection/NLP/matrix.txt"]
        assert (cache / "NLP" / "matrix.txt").exists()
        r2 = pull(store, "two-phase-selection", cache_dir=cache, base_url=f"{srv.url}/two-phase-selection",
                  progress=False)
        assert len(srv.hits) == 4 and r2.jobs_added == 0
    finally:
        srv.close()


def test_pull_all_function_skips_missing_folders(shared_data, store, tmp_path):
    part = tmp_path / "mirror"
    part.mkdir()
    shutil.copytree(shared_data / "vtab", part / "vtab")
    reports, skipped = pull_all(store, from_dir=part)
    assert list(reports) == ["vtab"] and reports["vtab"].jobs_added == 607
    assert len(skipped) == len(PUBLIC_HISTORIES) - 1 and any(s.startswith("openclip: no folder") for s in skipped)


def test_cli_pull_all_imports_the_seven_histories(pulled_all, capsys):
    home, text, again = pulled_all
    assert text.count("\nimport ") + text.startswith("import ") == 7 and "skipped transfergraph-text" in text
    assert list(again["imports"]) == SEVEN and all(r["jobs_added"] == 0 for r in again["imports"].values())
    assert [s.split(":")[0] for s in again["skipped"]] == ["transfergraph-text"]
    capsys.readouterr()
    assert main(["--home", str(home), "history", "stats", "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert set(st["by_source"]) == {"transfergraph-image", "shift", "parc", "parc-controlled", "timm", "vtab",
                                    "two-phase-selection", "openclip"}
    assert set(st["by_source_regime"]) == {
        "transfergraph-image/full", "shift/full", "shift/vtab-1k", "shift/slice-80%", "parc/full",
        "parc-controlled/full", "timm/full", "vtab/vtab-1k", "vtab/full", "two-phase-selection/finetune-unspecified",
        "openclip/zero-shot"}
    assert st["by_source_regime"]["openclip/zero-shot"]["jobs"] == 4235
    assert st["by_source_regime"]["vtab/vtab-1k"]["jobs"] == 304
    assert st["totals"]["jobs"] == 2142 + 9582 + 655 + 1556 + 607 + 999 + 4235  # the second pull added nothing
    # the text form lists every source and regime too
    assert main(["--home", str(home), "history", "stats"]) == 0
    out = capsys.readouterr().out
    for name in ["openclip", "vtab", "two-phase-selection", "parc-controlled", "transfergraph-image", "timm", "shift"]:
        assert name in out
    for reg in ["zero-shot", "vtab-1k", "finetune-unspecified", "slice-80%"]:
        assert reg in out


def test_cli_pull_all_refuses_importer_options(home):
    assert main(["--home", str(home), "history", "pull", "all", "-o", "layout=image"]) == 2


def test_zero_shot_never_pooled_with_fine_tuning(pulled_all):
    s = HistoryStore(f"sqlite:///{pulled_all[0] / 'history.db'}")
    try:
        t = s.targets()
    finally:
        s.dispose()
    zs, ft = t[t["regime"] == "zero-shot"], t[t["regime"] != "zero-shot"]
    assert len(zs) == 4235 and set(zs["sources"]) == {"openclip"}
    assert not ft["sources"].str.contains("openclip").any()
    # the same task is shared across sources within a regime: SHiFT and VTAB on smallnorb_azimuth, vtab-1k
    sa = t[(t["dataset"] == "smallnorb_azimuth") & (t["regime"] == "vtab-1k")]
    assert set(",".join(sa["sources"]).split(",")) == {"shift", "vtab"}
