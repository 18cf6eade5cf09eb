"""The public-history importers on the real files in ../shared/data (plus tiny synthetic
folders for layouts we have no local copy of, and corrupted copies for error paths)."""
from __future__ import annotations

import shutil

import pandas as pd
import pytest

from history.errors import HistoryImportError
from history.importers import IMPORTERS, get_importer, load_all
from history.importers.base import Importer
from history.importers.shift import regime_of, task_name
from history.importers.timm import family_of
from history.store import HistoryStore

load_all()
REAL = ["transfergraph", "shift", "parc", "timm"]
FOLDER = {"transfergraph": "transfergraph-image", "shift": "shift", "parc": "parc", "timm": "timm"}

VTAB_TASKS = {
    "caltech101", "cifar100", "clevr_count", "clevr_distance", "diabetic_retinopathy_detection", "dmlab",
    "dsprites_location", "dsprites_orientation", "dtd", "eurosat", "kitti", "oxford_flowers102",
    "oxford_iiit_pet", "patch_camelyon", "resisc45", "smallnorb_azimuth", "smallnorb_elevation", "sun397",
    "svhn_cropped",
}


@pytest.fixture(scope="module")
def imported(shared_data, tmp_path_factory):
    """Each real history imported twice into its own store: {name: (store, report1, report2)}."""
    out = {}
    root = tmp_path_factory.mktemp("real")
    for name in REAL:
        s = HistoryStore(f"sqlite:///{root / (name + '.db')}")
        imp = get_importer(name)
        r1 = imp.run(s, shared_data / FOLDER[name])
        r2 = imp.run(s, shared_data / FOLDER[name])
        print(r1.summary())
        out[name] = (s, r1, r2)
    yield out
    for s, _, _ in out.values():
        s.dispose()


# ---------------------------------------------------------------------- registry-wide
@pytest.mark.parametrize("name", REAL)
def test_registered_with_metadata(name):
    cls = IMPORTERS[name]
    assert issubclass(cls, Importer) and cls.name == name and len(cls.description) > 20


@pytest.mark.slow  # shares the module fixture that imports every real history twice (~5 s)
@pytest.mark.parametrize("name", REAL)
def test_real_import_is_idempotent_and_accounted(imported, name):
    s, r1, r2 = imported[name]
    assert r1.jobs_added > 0 and r1.jobs_added == r1.jobs_read
    assert (r2.jobs_added, r2.jobs_existing) == (0, r1.jobs_read)
    assert r2.scores_added == 0 and r2.models_added == 0 and r2.datasets_added == 0
    assert len(s.jobs_frame()) == r1.jobs_added
    # every row read is a job, a score, or counted as dropped / merged
    merged = sum(n for what, n in r1.repaired.items() if "averaged" in what)
    assert r1.rows_read == r1.jobs_read + r1.scores_read + r1.rows_dropped + merged


@pytest.mark.slow  # shares the module fixture that imports every real history twice (~5 s)
@pytest.mark.parametrize("name", REAL)
def test_real_jobs_are_fractions_with_provenance_and_hparams(imported, name, shared_data):
    s, _, _ = imported[name]
    j = s.jobs_frame()
    assert j["value"].between(0, 1).all()
    files = {p.name for p in (shared_data / FOLDER[name]).iterdir()}
    prov = j["provenance"].str.rsplit(":", n=1, expand=True)
    assert prov[0].isin(files).all() and prov[1].str.fullmatch(r"\d+").all()
    assert j["hparams"].map(lambda h: isinstance(h, dict)).all()


@pytest.mark.parametrize("name", REAL)
def test_unknown_option_is_an_error(name, shared_data):
    with pytest.raises(HistoryImportError, match="unknown option"):
        get_importer(name).read(shared_data / FOLDER[name], bogus=1)


# ---------------------------------------------------------------------- transfergraph
@pytest.mark.slow  # shares the module fixture that imports every real history twice (~5 s)
def test_transfergraph_done_when_figures(imported):
    s, r, _ = imported["transfergraph"]
    st = s.stats()
    assert st["totals"]["jobs"] >= 2100
    assert st["totals"]["datasets"] == 12
    assert st["totals"]["models"] >= 175
    assert st["scores_by_method"]["logme"]["pairs"] >= 1100
    assert set(st["by_source"]) == {"transfergraph-image"}
    assert set(st["scores_by_method"]) == {"logme", "reg_hscore"}


@pytest.mark.slow  # shares the module fixture that imports every real history twice (~5 s)
def test_transfergraph_food101_dropped_and_reported(imported):
    s, r, _ = imported["transfergraph"]
    assert "food101" not in set(s.jobs_frame()["dataset"])
    (reason, n), = [(k, v) for k, v in r.dropped.items() if "food101" in k]
    assert n == 112 and "--include-food101" in reason
    assert "food101" in r.summary()


def test_transfergraph_include_food101(shared_data):
    b = get_importer("transfergraph").read(shared_data / "transfergraph-image", include_food101=True)
    food = [j for j in b.jobs if j["dataset"] == "food101"]
    assert len(food) == 112 and not any("food101" in k for k in b.report.dropped)


@pytest.mark.slow  # shares the module fixture that imports every real history twice (~5 s)
def test_transfergraph_repairs_and_meta(imported):
    s, r, _ = imported["transfergraph"]
    d = s.datasets_frame().set_index("name")
    # stored under the registry's canonical name; TransferGraph's own name is kept as an alias
    assert d.loc["oxford_flowers102", "num_classes"] == 102 and "flowers" not in d.index
    assert d.loc["oxford_flowers102", "extra"]["aliases"] == {"transfergraph-image": ["flowers"]}
    assert d.loc["cifar100", "num_samples"] == 50000
    assert any("flowers" in k for k in r.repaired)
    m = s.models_frame().set_index("name").loc["google/vit-base-patch16-224"]
    assert m["architecture"] == "ViTForImageClassification" and m["family"] == "vit"
    assert m["params"] > 8e7 and m["feature_dim"] == 768 and m["input_size"] == 224
    assert m["pretrain_dataset"] == "imagenet" and 0 < m["source_accuracy"] <= 1
    sc = s.scores_frame()
    assert sc["runtime_s"].notna().mean() > 0.99
    # duplicated keys were aggregated: one score per (model, dataset, method)
    assert not sc.duplicated(["model", "dataset", "method"]).any()
    assert any("aggregated" in n for n in r.notes)


def _write_text_layout(folder):
    """A tiny folder in the TransferGraph sequence_classification layout (column names as in
    zLizy/transfergraph resources/experiments/sequence_classification)."""
    folder.mkdir()
    (folder / "records.csv").write_text(
        ",model,finetuned_dataset,model_name,dataset_name,task_type,batch_size,lr_scheduler_type,learning_rate,"
        "gradient_accumulation_steps,num_train_epochs,seed,dataset_path,train_runtime,eval_accuracy,push_to_hub,"
        "hub_model_id,push_to_hub_organization,hub_token,peft_method,lora_attention_dimension,lora_alpha,"
        "lora_dropout,lora_bias\n"
        "0,bert-base-uncased,tweet_eval/irony,bert-base-uncased,irony,sequence_classification,16.0,linear,2e-05,"
        "1.0,5.0,42.0,tweet_eval,419.0,0.70,True,,TransferGraph,,,,,,\n"
        "1,roberta-base,tweet_eval/irony,roberta-base,irony,sequence_classification,16.0,linear,2e-05,"
        "1.0,5.0,42.0,tweet_eval,400.0,0.74,True,,TransferGraph,,,,,,\n"
        "2,roberta-base,tweet_eval/offensive,roberta-base,offensive,sequence_classification,24.0,linear,0.0004,"
        "1.0,4.0,42.0,tweet_eval,70.4,0.81,True,,TransferGraph,,lora,1.0,1.0,0.1,none\n"
        "3,roberta-base,glue/cola,roberta-base,cola,sequence_classification,16.0,linear,2e-05,"
        "1.0,5.0,42.0,glue,70.4,,True,,TransferGraph,,,,,,\n")
    (folder / "model_config_dataset.csv").write_text(
        ",model,architectures,number_of_labels,labels,model_type,number_of_parameters,memory_consumption\n"
        "0,bert-base-uncased,BertForSequenceClassification,2,\"['LABEL_0', 'LABEL_1']\",bert,109483778,439076352\n"
        "1,roberta-base,RobertaForSequenceClassification,2,\"['LABEL_0', 'LABEL_1']\",roberta,124647170,499891712\n")
    (folder / "target_dataset_features.csv").write_text(
        "finetune_dataset,size,number_of_classes\ntweet_eval/irony,4600,2\ntweet_eval/offensive,24300,18\n")
    (folder / "transferability_score_records.csv").write_text(
        ",model,target_dataset,model_name,dataset_name,task_type,metric,batch_size,dataset_path,runtime,score\n"
        "0,bert-base-uncased,tweet_eval/irony,bert-base-uncased,irony,sequence_classification,"
        "TransferabilityMetric.LOG_ME,16.0,tweet_eval,22.3,0.07\n"
        "1,bert-base-uncased,tweet_eval/irony,bert-base-uncased,irony,sequence_classification,"
        "TransferabilityMetric.LOG_ME,16.0,tweet_eval,17.7,0.09\n"
        "2,roberta-base,tweet_eval/irony,roberta-base,irony,sequence_classification,"
        "TransferabilityMetric.LOG_ME,16.0,tweet_eval,20.0,-0.3\n")


def test_transfergraph_text_layout(tmp_path, store):
    folder = tmp_path / "tg-text"
    _write_text_layout(folder)
    r = get_importer("transfergraph").run(store, folder)
    assert r.source == "transfergraph-text"
    j = store.jobs_frame().set_index(["model", "dataset"])
    assert len(j) == 3 and set(j["metric"]) == {"eval_accuracy"}
    lora = j.loc[("roberta-base", "tweet_eval/offensive")]
    assert lora["regime"] == "lora" and lora["hparams"]["lr"] == pytest.approx(4e-4)
    assert lora["hparams"]["lora_r"] == 1 and lora["hparams"]["epochs"] == 4
    full = j.loc[("bert-base-uncased", "tweet_eval/irony")]
    assert full["regime"] == "full" and full["hparams"]["seed"] == 42
    assert r.dropped["missing eval_accuracy (empty cell)"] == 1
    d = store.datasets_frame().set_index("name")
    assert d.loc["tweet_eval/offensive", "num_classes"] == 2 and d.loc["tweet_eval/irony", "modality"] == "text"
    m = store.models_frame().set_index("name")
    assert m.loc["roberta-base", "architecture"] == "RobertaForSequenceClassification"
    assert m.loc["roberta-base", "family"] == "roberta" and m.loc["roberta-base", "modality"] == "text"
    sc = store.scores_frame().set_index(["model", "dataset"])
    assert set(sc["method"]) == {"logme"}
    assert sc.loc[("bert-base-uncased", "tweet_eval/irony"), "value"] == pytest.approx(0.08)  # mean of 2
    assert sc.loc[("bert-base-uncased", "tweet_eval/irony"), "runtime_s"] == pytest.approx(20.0)
    assert get_importer("transfergraph").run(store, folder).jobs_added == 0


# ---------------------------------------------------------------------- shift
@pytest.mark.slow  # shares the module fixture that imports every real history twice (~5 s)
def test_shift_tasks_regimes_and_modalities(imported):
    s, r, _ = imported["shift"]
    j = s.jobs_frame()
    d = s.datasets_frame().set_index("name")
    image = set(d.index[d["modality"] == "image"])
    vtab = set(j.loc[j["regime"] == "vtab-1k", "dataset"]) & image
    print(f"shift: {len(image)} image tasks, {len(vtab)} VTAB-1k image tasks, "
          f"{int((d['modality'] == 'text').sum())} text tasks, regimes {j['regime'].value_counts().to_dict()}")
    assert vtab == VTAB_TASKS == image
    text = set(d.index[d["modality"] == "text"])
    assert {"glue/cola", "glue/sst2", "tweet_eval/hate", "ag_news"} <= text and len(text) >= 10
    assert set(j["regime"]) == {"vtab-1k", "full", "slice-80%"}
    assert {"clevr", "dsprites", "smallnorb"}.isdisjoint(set(j["dataset"]))
    assert d.loc["clevr_count", "extra"]["base_dataset"] == "clevr"
    assert s.stats()["totals"]["jobs"] >= 9500
    m = s.models_frame().set_index("name")
    assert m.loc["google/vit-base-patch16-224", "input_size"] == 224
    assert m.loc["google/vit-base-patch16-224", "modality"] == "image"
    # every task gets its published class count and VTAB group (none are in the records)
    assert d["num_classes"].notna().all(), d.index[d["num_classes"].isna()].tolist()
    assert d.loc["clevr_count", "num_classes"] == 8 and d.loc["smallnorb_elevation", "num_classes"] == 9
    # SHiFT's domain column held the VTAB group; the registry's domain is stored, the group kept
    assert {d.loc[t, "extra"]["registry"]["vtab_group"] for t in VTAB_TASKS} == {"natural", "specialized", "structured"}
    assert d.loc["eurosat", "domain"] == "remote-sensing"


@pytest.mark.slow  # shares the module fixture that imports every real history twice (~5 s)
def test_shift_keeps_both_learning_rates(imported):
    s, _, _ = imported["shift"]
    j = s.jobs_frame()
    j = j.assign(lr=j["hparams"].map(lambda h: h.get("lr")))
    both = j.groupby(["model", "dataset", "regime"])["lr"].nunique()
    assert (both == 2).sum() > 100
    assert set(j["lr"].dropna().round(4)) == {0.1, 0.01}


@pytest.mark.slow  # shares the module fixture that imports every real history twice (~5 s)
def test_shift_duplicates_counted(imported):
    _, r, _ = imported["shift"]
    assert sum(v for k, v in r.dropped.items() if "duplicate" in k) == r.rows_read - r.jobs_read


def test_shift_configs_never_evaluated(tmp_path):
    src = tmp_path / "shift"
    src.mkdir()
    (src / "ftrecords.csv").write_text(
        "model_identifier,framework,train_dataset_name,configs,train_slice,epochs,batch_size,test_accuracy\n"
        "m,HuggingFace,dtd,{'lr': 0.01},:800,25,64,0.5\n"
        "m,HuggingFace,dtd,\"__import__('os').getcwd()\",:800,25,64,0.5\n")
    with pytest.raises(HistoryImportError, match=r"row 2 .*configs.*__import__"):
        get_importer("shift").read(src)


@pytest.mark.parametrize("ds,label,pre,task", [
    ("clevr", "label_orientation", "clevr_count", "clevr_count"),
    ("dsprites", "label_x_position", "dsprites_location", "dsprites_location"),
    ("smallnorb", "label_azimuth", "empty", "smallnorb_azimuth"),
    ("smallnorb", "label_elevation", None, "smallnorb_elevation"),
    ("kitti", "label_orientation", "kitti", "kitti"),
    ("dtd", "label", "empty", "dtd"),
    ("glue/cola", None, None, "glue/cola"),
])
def test_shift_task_names(ds, label, pre, task):
    assert task_name(ds, label, pre) == task


@pytest.mark.parametrize("sl,regime", [(":800", "vtab-1k"), (":100%", "full"), (None, "full"),
                                       (float("nan"), "full"), (":80%", "slice-80%"), (":1000", "slice-1000")])
def test_shift_regimes(sl, regime):
    assert regime_of(sl) == regime


# ---------------------------------------------------------------------- parc
@pytest.mark.slow  # shares the module fixture that imports every real history twice (~5 s)
def test_parc_placeholders_percent_and_meta(imported, shared_data):
    s, r, _ = imported["parc"]
    assert r.dropped["all.csv: Oracle = -1 (placeholder for 'not available', not an accuracy)"] == 10
    j = s.jobs_frame()
    assert set(j["source"]) == {"parc", "parc-controlled"}
    assert len(j) == 469 - 10 + 196
    raw = pd.read_csv(shared_data / "parc" / "controlled.csv")
    want = raw[(raw["Architecture"] == "resnet50") & (raw["Source Dataset"] == "nabird")
               & (raw["Target Dataset"] == "cifar10")]["Oracle"].iloc[0] / 100
    got = j[(j["model"] == "resnet50@nabird") & (j["dataset"] == "cifar10") & (j["source"] == "parc-controlled")]
    assert got["value"].iloc[0] == pytest.approx(want)
    assert set(j.loc[j["dataset"] == "voc2007", "metric"]) == {"map"}
    assert set(j.loc[j["dataset"] != "voc2007", "metric"]) == {"accuracy"}
    m = s.models_frame().set_index("name")
    row = m.loc["googlenet@imagenet"]
    assert row["depth"] == 22 and row["family"] == "googlenet" and row["pretrain_dataset"] == "imagenet"
    assert row["extra"]["source_num_samples"] == 150_000
    assert m.loc["resnet18@oxford_pets", "extra"]["source_num_classes"] == 37
    d = s.datasets_frame().set_index("name")
    # the registry's canonical facts in the columns; PARC's own counts kept per source (conflict rule)
    assert d.loc["nabird", "num_samples"] == 23_929 and d.loc["voc2007", "num_classes"] == 20
    assert d.loc["nabird", "extra"]["source_facts"]["parc"]["num_samples"] == 24_633
    assert d.loc["voc2007", "extra"]["source_facts"]["parc-controlled"]["num_classes"] == 21
    assert any("voc2007 num_classes" in n and "parc" in n for n in r.notes)


def test_parc_single_file(shared_data):
    b = get_importer("parc").read(shared_data / "parc" / "controlled.csv")
    assert len(b.jobs) == 196 and {j["source"] for j in b.jobs} == {"parc-controlled"}
    assert not b.report.dropped


# ---------------------------------------------------------------------- timm
@pytest.mark.slow  # shares the module fixture that imports every real history twice (~5 s)
def test_timm_params_gmacs_domain(imported):
    s, r, _ = imported["timm"]
    j = s.jobs_frame()
    assert len(j) == 1556 and set(j["dataset"]) == {"imagenet"} and set(j["metric"]) == {"top1"}
    m = s.models_frame().set_index("name")
    eva = m.loc["eva_giant_patch14_560.m30m_ft_in22k_in1k"]
    assert eva["params"] == pytest.approx(1014.45e6)  # written "1,014.45" (millions) in the file
    assert eva["architecture"] == "eva_giant_patch14_560" and eva["family"] == "eva"
    assert eva["input_size"] == 560 and eva["gmacs"] > 1000
    top1 = j[j["model"] == "eva_giant_patch14_560.m30m_ft_in22k_in1k"]["value"].iloc[0]
    assert top1 == pytest.approx(0.8979)
    assert m["gmacs"].notna().sum() > 1200
    assert 300 < m["domain"].notna().sum() < len(m)
    assert any("GMACs" in n for n in r.notes) and any("domain" in n for n in r.notes)
    # the same model at two resolutions: two jobs with different img_size
    two = j[j["model"] == "convnext_atto.d2_in1k"]
    assert sorted(h["img_size"] for h in two["hparams"]) == [224, 288]


@pytest.mark.parametrize("arch,family", [("resnet50d", "resnet"), ("tf_efficientnet_b0", "efficientnet"),
                                         ("convnextv2_base", "convnextv2"), ("dla102x2", "dla"),
                                         ("res2net50_26w_4s", "res2net"), ("wide_resnet50_2", "wide_resnet"),
                                         ("vit_base_patch16_224", "vit")])
def test_timm_family(arch, family):
    assert family_of(arch) == family


# ---------------------------------------------------------------------- failures leave the store intact
def test_corrupted_number_names_row_and_value_and_leaves_store_untouched(shared_data, tmp_path, store):
    get_importer("parc").run(store, shared_data / "parc")
    before = (store.stats()["totals"], len(store.imports_frame()))
    bad = tmp_path / "tg"
    shutil.copytree(shared_data / "transfergraph-image", bad)
    lines = (bad / "records.csv").read_text().splitlines(keepends=True)
    cells = lines[6].split(",")  # data row 6
    cells[14] = "0.9x1"  # test_accuracy
    lines[6] = ",".join(cells)
    (bad / "records.csv").write_text("".join(lines))
    with pytest.raises(HistoryImportError) as e:
        get_importer("transfergraph").run(store, bad)
    msg = str(e.value)
    assert "records.csv" in msg and "row 6" in msg and "'0.9x1'" in msg and "test_accuracy" in msg
    assert (store.stats()["totals"], len(store.imports_frame())) == before


def test_out_of_range_percent_is_an_error(tmp_path):
    f = tmp_path / "all.csv"
    f.write_text("Architecture,Source Dataset,Target Dataset,Oracle\nresnet50,imagenet,cifar10,912.5\n")
    with pytest.raises(HistoryImportError, match=r"row 1 .*912\.5.*percent"):
        get_importer("parc").read(f)


def test_missing_column_is_named(tmp_path):
    f = tmp_path / "results-imagenet.csv"
    f.write_text("model,img_size,top5\nresnet50.a1_in1k,224,95.1\n")
    with pytest.raises(HistoryImportError, match="missing required column.*top1"):
        get_importer("timm").read(tmp_path)
