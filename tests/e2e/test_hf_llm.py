"""A causal LM uploaded as a Hugging Face folder with a .jsonl text dataset, through HTTP and a real worker:
llm_ptq writes a compressed-tensors folder that transformers loads in a fresh process; an encoder folder's int8
PTQ job offers its model as such a folder too, next to the .pt2."""

import ast
import json
import subprocess
import sys
import zipfile

import pytest

from tests.hf_folders import CORPUS, bert_dir, gpt2_folder, jsonl_bytes, llama_dir, zip_bytes  # noqa: F401

# What is compressed and written does not depend on the database or broker: once is enough.
pytestmark = [pytest.mark.e2e, pytest.mark.one_backend]

FRESH_LOAD = """
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
losses = {}
for name in sys.argv[1:]:
    model = AutoModelForCausalLM.from_pretrained(name, local_files_only=True).eval()
    ids = AutoTokenizer.from_pretrained(name)(%r, return_tensors="pt").input_ids
    with torch.no_grad():
        losses[name] = float(model(input_ids=ids, labels=ids).loss)
print(json.dumps({"losses": losses, "quantized": hasattr(model.config, "quantization_config")}))
"""


def test_llm_ptq_on_an_uploaded_folder_gives_a_folder_transformers_loads(client, llama_dir, tmp_path):
    (tmp_path / "llama.zip").write_bytes(zip_bytes(llama_dir, top="tiny-llama"))
    (tmp_path / "text.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:50], "val": CORPUS[50:]}))
    model = client.upload_model(tmp_path / "llama.zip", task="causal-lm")
    dataset = client.upload_dataset(tmp_path / "text.jsonl")
    assert (model.info["kind"], model.info["task"]) == ("hf_folder", "causal-lm")
    job = client.submit_job({"model_id": model.id, "dataset_id": dataset.id, "evaluation": {"latency": False},
                             "stages": [{"method": "llm_ptq", "algorithm": "rtn", "bits": 4, "group_size": 32,
                                         "evaluation": {"context_length": 32, "generation_tokens": 4}}]})
    job = client.wait(job["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    baseline, final = job["metrics"]["baseline"], job["metrics"]["final"]
    assert final["perplexity"] < baseline["perplexity"] * 1.2 and final["tokens"] == baseline["tokens"] > 100
    assert final["compression_ratio"] > 3 and final["tokens_per_s"] > 0
    layers = final["method_metrics"]["layers"]
    assert "model.layers.1.mlp.down_proj" in layers and final["method_metrics"]["blocks"] == 2

    [artifact] = client.artifacts(job["id"])
    assert (artifact["kind"], artifact["name"]) == ("model.hf_folder", "model.hf.zip")
    with zipfile.ZipFile(client.download(artifact, tmp_path / "model.hf.zip")) as archive:
        archive.extractall(tmp_path / "quantized")
    config = json.loads((tmp_path / "quantized" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    loaded = subprocess.run([sys.executable, "-c", FRESH_LOAD % CORPUS[60], str(llama_dir),
                             str(tmp_path / "quantized")], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert result["quantized"]
    original, quantized = result["losses"][str(llama_dir)], result["losses"][str(tmp_path / "quantized")]
    assert abs(quantized - original) < 0.1 * original


def test_a_gpt2_folder_is_compressed_as_its_opt_rewrite_which_loads_in_a_fresh_process(client, tmp_path):
    # GPT-2's Conv1D blocks hold no nn.Linear: such a job was refused. The worker now rewrites it as OPT.
    folder = gpt2_folder(tmp_path / "gpt2")
    (tmp_path / "gpt2.zip").write_bytes(zip_bytes(folder))
    (tmp_path / "text.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:50], "val": CORPUS[50:]}))
    model = client.upload_model(tmp_path / "gpt2.zip", task="causal-lm")
    dataset = client.upload_dataset(tmp_path / "text.jsonl")
    job = client.submit_job({"model_id": model.id, "dataset_id": dataset.id, "evaluation": {"latency": False},
                             "stages": [{"method": "llm_ptq", "algorithm": "gptq", "bits": 4, "group_size": 32,
                                         "calibration": {"samples": 8, "sequence_length": 32},
                                         "evaluation": {"context_length": 32, "generation_tokens": 0}}]})
    job = client.wait(job["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["baseline"]["rewritten_as"]["to"] == "opt"
    [artifact] = client.artifacts(job["id"])
    with zipfile.ZipFile(client.download(artifact, tmp_path / "model.hf.zip")) as archive:
        archive.extractall(tmp_path / "quantized")
    assert json.loads((tmp_path / "quantized" / "config.json").read_text())["architectures"] == ["OPTForCausalLM"]
    loaded = subprocess.run([sys.executable, "-c", FRESH_LOAD % CORPUS[60], str(folder), str(tmp_path / "quantized")],
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    losses = json.loads(loaded.stdout.strip().splitlines()[-1])["losses"]
    assert abs(losses[str(tmp_path / "quantized")] - losses[str(folder)]) < 0.1 * losses[str(folder)]


def test_an_encoder_folder_job_offers_its_int8_model_as_a_folder_too(client, bert_dir, tmp_path):
    (tmp_path / "bert.zip").write_bytes(zip_bytes(bert_dir))
    (tmp_path / "text.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:48], "val": CORPUS[48:]}))
    model = client.upload_model(tmp_path / "bert.zip", task="feature-extraction")
    dataset = client.upload_dataset(tmp_path / "text.jsonl")
    spec = {"model_id": model.id, "dataset_id": dataset.id, "evaluation": {"latency": False},
            "stages": [{"method": "ptq", "calibration_samples": 32}]}
    job = client.wait(client.submit_job(spec)["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["final"]["hf_folder"]["written"] and job["metrics"]["dry_run"]["0:ptq"]["checked"]
    artifacts = {artifact["kind"]: artifact for artifact in client.artifacts(job["id"])}
    assert {"model.pt2", "model.hf_folder"} <= set(artifacts)
    folder = artifacts["model.hf_folder"]
    assert folder["name"] == "model.hf.zip" and "from_pretrained" in folder["details"]["recipe"]
    with zipfile.ZipFile(client.download(folder, tmp_path / "model.hf.zip")) as archive:
        archive.extractall(tmp_path / "int8")
    loaded = subprocess.run([sys.executable, "-c", """
import sys, torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], local_files_only=True).eval()
ids = torch.tensor([[3, 4, 5, 6]])
print(model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state.shape)
""", str(tmp_path / "int8")], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.strip().splitlines()[-1] == "torch.Size([1, 4, 32])"
    # A folder job gets what any job gets from the worker: the same job again reuses the stored baseline.
    again = client.wait(client.submit_job(spec)["id"], timeout=300)
    assert again["status"] == "succeeded", again["error"]
    assert again["metrics"]["baseline"]["reused"] and not job["metrics"]["baseline"].get("reused")


def test_a_masked_lm_folder_fills_in_masks_through_a_worker_and_its_folder_from_its_recipe(client, tmp_path):
    """A BertForMaskedLM folder uploaded with task fill-mask and unlabelled text, through HTTP and a real worker:
    int8 PTQ judged by masked-token accuracy; the folder, loaded by the artifact's own recipe in a fresh process,
    runs transformers' fill-mask pipeline with the tokenizer it carries."""
    from tests.hf_folders import bert_folder

    (tmp_path / "mlm.zip").write_bytes(zip_bytes(bert_folder(tmp_path / "mlm", masked_lm=True)))
    (tmp_path / "text.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:48], "val": CORPUS[48:]}))
    model = client.upload_model(tmp_path / "mlm.zip", task="fill-mask")
    assert model.info["task"] == "fill-mask"
    dataset = client.upload_dataset(tmp_path / "text.jsonl")
    job = client.wait(client.submit_job({"model_id": model.id, "dataset_id": dataset.id,
                                         "evaluation": {"latency": False},
                                         "stages": [{"method": "ptq", "calibration_samples": 16}]})["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    final = job["metrics"]["final"]
    assert final["metric"] == "accuracy" and "perplexity" in final and final["hf_folder"]["written"], final
    folder = {artifact["kind"]: artifact for artifact in client.artifacts(job["id"])}["model.hf_folder"]
    path = client.download(folder, tmp_path / "model.hf.zip")
    filled = subprocess.run([sys.executable, "-c", folder["details"]["recipe"] + """
from transformers import AutoTokenizer, pipeline
tokenizer = AutoTokenizer.from_pretrained(folder)
print(type(model).__name__, len(pipeline("fill-mask", model=model, tokenizer=tokenizer)("the cat [MASK] the ball")))
"""], capture_output=True, text=True, timeout=120, cwd=path.parent)
    assert filled.returncode == 0, filled.stderr[-3000:]
    assert filled.stdout.strip().splitlines()[-1] == "BertForMaskedLM 5"


def test_a_token_classifier_folder_trains_on_word_tags_through_a_worker(client, tmp_path):
    """An NER tagger's folder and a .jsonl of word tags (by name), through HTTP and a real worker: the job keeps
    the tagger's head, is judged by per-token accuracy, distils with the tags mixed in and hands back a folder."""
    from tests.hf_folders import bert_folder

    tags = {0: "O", 1: "B-PER", 2: "I-PER"}
    (tmp_path / "ner.zip").write_bytes(zip_bytes(bert_folder(tmp_path / "ner", 3, per_token=True, id2label=tags)))
    rows = [{"split": split, "text": text, "tags": [tags[(index + word) % 3] for word in range(len(text.split()))]}
            for split, texts in (("train", CORPUS[:24]), ("val", CORPUS[24:40])) for index, text in enumerate(texts)]
    (tmp_path / "tags.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    model = client.upload_model(tmp_path / "ner.zip")
    dataset = client.upload_dataset(tmp_path / "tags.jsonl")
    spec = {"model_id": model.id, "dataset_id": dataset.id, "evaluation": {"latency": False},
            "stages": [{"method": "kd", "student": {"kind": "input"}, "alpha": 0.5,
                        "training": {"steps": 3, "batch_size": 8}}, {"method": "ptq", "calibration_samples": 16}]}
    job = client.wait(client.submit_job(spec)["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    final, baseline = job["metrics"]["final"], job["metrics"]["baseline"]
    assert final["metric"] == baseline["metric"] == "accuracy" and 0 <= final["accuracy"] <= 1
    assert final["hf_folder"]["written"]
    assert {"model.pt2", "model.hf_folder"} <= {artifact["kind"] for artifact in client.artifacts(job["id"])}


def test_a_multiple_choice_folder_scores_each_rows_choices_through_a_worker(client, tmp_path):
    """A BertForMultipleChoice folder (its task read from config.json) and a .jsonl of rows with four choices and
    the right one's text as label, through HTTP and a real worker: int8, judged by accuracy over the rows, and
    handed back as a folder too."""
    from tests.hf_folders import bert_folder

    (tmp_path / "mc.zip").write_bytes(zip_bytes(bert_folder(tmp_path / "mc", multiple_choice=True)))
    endings = ["near the house", "finds the stick", "likes the ball", "sees the box"]
    rows = [{"split": split, "text": text, "choices": endings, "label": endings[index % 4]}
            for split, texts in (("train", CORPUS[:16]), ("val", CORPUS[16:32])) for index, text in enumerate(texts)]
    (tmp_path / "choices.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    job = _folder_job(client, tmp_path / "mc.zip", tmp_path / "choices.jsonl", "multiple-choice",
                      {"method": "ptq", "calibration_samples": 16})
    final = job["metrics"]["final"]
    assert final["metric"] == job["metrics"]["baseline"]["metric"] == "accuracy"
    assert round(final["accuracy"] * 16, 6) % 1 == 0


def test_an_image_classifier_folder_compresses_raw_images_through_a_worker(client, tmp_path):
    """A ViT folder and an .npz of labelled uint8 images (channels-last, as image libraries give them), through HTTP
    and a real worker: scaled by the folder's processor settings, int8 with the patch convolution kept float, and
    handed back as a folder too."""
    import numpy as np

    from tests.hf_folders import image_folder

    (tmp_path / "vit.zip").write_bytes(zip_bytes(image_folder(tmp_path / "vit")))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", **{"train.x": pixels[:32], "val.x": pixels[32:],
                                         "val.y": rng.integers(0, 4, 16)})
    stage = {"method": "ptq", "calibration_samples": 16, "exclude": ["*patch_embeddings*"]}
    final = _folder_job(client, tmp_path / "vit.zip", tmp_path / "images.npz", "image-classification",
                        stage)["metrics"]["final"]
    assert final["metric"] == "accuracy" and final["top1_agreement"] > 0.8


def _folder_job(client, archive, data, task: str, stage: dict, asked: str | None = None,
                evaluation: dict | None = None) -> dict:
    """Upload the folder (checking the task read from it, or `asked`) and the data, run one stage through the
    worker, and return the job, once its model came back as a .pt2 and as a folder."""
    model = client.upload_model(archive, task=asked)
    assert model.info["task"] == task
    dataset = client.upload_dataset(data)
    spec = {"model_id": model.id, "dataset_id": dataset.id, "evaluation": {"latency": False, **(evaluation or {})},
            "stages": [stage]}
    job = client.wait(client.submit_job(spec)["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert job["metrics"]["final"]["hf_folder"]["written"]
    assert {"model.pt2", "model.hf_folder"} <= {artifact["kind"] for artifact in client.artifacts(job["id"])}
    return job


def test_an_image_text_encoder_folder_gives_its_image_embedding_through_a_worker(client, tmp_path):
    """A CLIP folder and unlabelled uint8 images, through HTTP and a real worker: task image-feature-extraction
    read from its config, the image embedding int8 and judged by the rank agreement of its similarities, and the
    whole model handed back as a folder (its text tower as uploaded)."""
    import json

    import numpy as np
    import torch
    from transformers import CLIPConfig, CLIPModel

    from tests.hf_folders import VIT_PROCESSOR

    tower = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(vision_config={**tower, "image_size": 32, "patch_size": 8},
                         text_config={**tower, "vocab_size": 100, "max_position_embeddings": 16},
                         projection_dim=16)).save_pretrained(tmp_path / "clip")
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps(VIT_PROCESSOR))
    (tmp_path / "clip.zip").write_bytes(zip_bytes(tmp_path / "clip"))
    pixels = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", **{"train.x": pixels[:24], "val.x": pixels[24:]})
    final = _folder_job(client, tmp_path / "clip.zip", tmp_path / "images.npz", "image-feature-extraction",
                        {"method": "ptq", "calibration_samples": 16})["metrics"]["final"]
    assert final["metric"] == "similarity_spearman" and final["cosine"] > 0.95


def test_a_zero_shot_image_classifier_chooses_among_the_jobs_labels_through_a_worker(client, tmp_path):
    """A CLIP folder asked for zero-shot-image-classification and labelled uint8 images, through HTTP and a real
    worker: the candidate labels of the job's spec reach the worker, whose program scores each image against them
    (accuracy against the labels, top-1 agreement beside it), and the whole model comes back as a folder."""
    import numpy as np

    from tests.hf_folders import dual_encoder_folder

    (tmp_path / "clip.zip").write_bytes(zip_bytes(dual_encoder_folder(tmp_path / "clip")))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", **{"train.x": pixels[:24], "val.x": pixels[24:], "val.y": rng.integers(0, 3, 16)})
    job = _folder_job(client, tmp_path / "clip.zip", tmp_path / "images.npz", "zero-shot-image-classification",
                      {"method": "ptq", "calibration_samples": 16},
                      asked="zero-shot-image-classification",
                      evaluation={"candidate_labels": ["cat", "dog", "bird"], "hypothesis_template": "the {}"})
    final = job["metrics"]["final"]
    assert final["metric"] == "accuracy" and final["top1_agreement"] > 0.9, final


def test_a_zero_shot_detector_looks_for_the_jobs_objects_through_a_worker(client, tmp_path):
    """An OWLv2 folder and unlabelled uint8 images, through HTTP and a real worker: the job's candidate labels reach
    the worker, whose program scores every patch against them, judged by detection_map against the upload; the
    whole detector comes back as a folder."""
    import numpy as np

    from tests.hf_folders import owl_folder

    (tmp_path / "owl.zip").write_bytes(zip_bytes(owl_folder(tmp_path / "owl")))
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "images.npz", **{"train.x": pixels[:16], "val.x": pixels[16:]})
    job = _folder_job(client, tmp_path / "owl.zip", tmp_path / "images.npz", "zero-shot-object-detection",
                      {"method": "ptq", "calibration_samples": 16},
                      evaluation={"candidate_labels": ["cat", "dog", "bird"]})
    assert job["metrics"]["baseline"]["metric_points"] == 100.0
    assert job["metrics"]["final"]["metric"] == "detection_map"


def test_a_time_series_forecaster_is_quantized_through_a_worker(client, tmp_path):
    """A PatchTSTForPrediction folder (its task read from config.json) and windows of a series, through HTTP and
    a real worker: int8, judged against the upload's forecasts, and handed back as a folder too."""
    from tests.hf_folders import series_folder, series_windows

    (tmp_path / "patchtst.zip").write_bytes(zip_bytes(series_folder(tmp_path / "patchtst",
                                                                    "time-series-forecasting")))
    job = _folder_job(client, tmp_path / "patchtst.zip", series_windows(tmp_path / "windows.npz"),
                      "time-series-forecasting", {"method": "ptq", "calibration_samples": 16})
    final = job["metrics"]["final"]
    assert final["metric"] == "score_spearman" and final["output_kind"] == "regression" and final["sqnr_db"] > 10


def test_a_ctc_speech_recognizer_folder_is_quantized_through_a_worker_and_its_folder_transcribes(client, tmp_path):
    """A Wav2Vec2ForCTC folder and an .npz of 16-bit PCM waveforms (as WAV files hold them) with reference
    transcripts, through HTTP and a real worker: int8 PTQ judged per frame, the transcripts' change and error rates
    against the references reported, and its folder (with the tokenizer) transcribes in a fresh process."""
    import numpy as np

    from tests.hf_folders import ctc_folder

    (tmp_path / "ctc.zip").write_bytes(zip_bytes(ctc_folder(tmp_path / "ctc")))
    pcm = (np.random.default_rng(0).normal(0, 0.1, (24, 1600)) * 32768).clip(-32768, 32767).astype(np.int16)
    np.savez(tmp_path / "speech.npz", **{"train.x": pcm[:16], "val.x": pcm[16:],
                                         "val.transcript": np.array(["HELLO WORLD"] * 8)})
    model = client.upload_model(tmp_path / "ctc.zip")
    assert model.info["task"] == "speech-recognition"
    dataset = client.upload_dataset(tmp_path / "speech.npz")
    spec = {"model_id": model.id, "dataset_id": dataset.id, "evaluation": {"latency": False},
            "stages": [{"method": "ptq", "calibration_samples": 16}]}
    job = client.wait(client.submit_job(spec)["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    final = job["metrics"]["final"]
    assert final["metric"] == "top1_agreement" and final["hf_folder"]["written"], final
    assert final["transcripts"]["samples"] == 8 and "word_error_rate" in final["transcripts"]
    against = job["metrics"]["baseline"]["transcripts"]["against_references"]  # the random original's own
    assert against["samples"] == 8 and against["word_error_rate"] >= 50, against
    assert final["transcripts"]["against_references"]["samples"] == 8
    artifacts = {artifact["kind"]: artifact for artifact in client.artifacts(job["id"])}
    with zipfile.ZipFile(client.download(artifacts["model.hf_folder"], tmp_path / "model.hf.zip")) as archive:
        archive.extractall(tmp_path / "int8")
    transcribed = subprocess.run([sys.executable, "-c", """
import sys, torch
from transformers import AutoModelForCTC, AutoTokenizer
model = AutoModelForCTC.from_pretrained(sys.argv[1], local_files_only=True).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
with torch.no_grad():
    frames = model(input_values=torch.randn(1, 1600)).logits.argmax(-1)[0].tolist()
text = tokenizer.decode(frames)  # as the speech-recognition pipeline decodes CTC frames
print(repr(text.replace("<unk>", "").replace("</s>", "").replace("<s>", "")))
""", str(tmp_path / "int8")], capture_output=True, text=True, timeout=120)
    assert transcribed.returncode == 0, transcribed.stderr[-3000:]
    text = ast.literal_eval(transcribed.stdout.strip().splitlines()[-1])
    assert isinstance(text, str) and set(text) <= set("ETAONIHSRDLUMWCFGYPBVK'XJQZ "), text
    _dashboard_shows_the_word_error_rates(client, job)


def _dashboard_shows_the_word_error_rates(client, job: dict) -> None:
    """The job's page in a real browser gives both word error rates in its result table."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.e2e.browser import screenshot, start_browser

    browser = start_browser()
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(f"{client.url}/ui")
        wait.until(EC.presence_of_element_located((By.ID, "api-key"))).send_keys(
            client.http.headers["Authorization"].removeprefix("Bearer "))
        browser.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        wait.until(EC.presence_of_element_located((By.XPATH, "//h1[text()='Jobs']")))
        browser.get(f"{client.url}/ui/#/jobs/{job['id']}")
        wait.until(EC.text_to_be_present_in_element((By.ID, "job"), "word error rate vs reference transcripts"))
        rows = {row.find_elements(By.TAG_NAME, "td")[0].text: [cell.text for cell in
                                                              row.find_elements(By.TAG_NAME, "td")[1:]]
                for row in browser.find_elements(By.CSS_SELECTOR, "#job table tr") if row.find_elements(
                    By.TAG_NAME, "td")}
        baseline = job["metrics"]["baseline"]["transcripts"]["against_references"]["word_error_rate"]
        final = job["metrics"]["final"]["transcripts"]
        assert rows["word error rate vs reference transcripts (%)"] == [
            f"{baseline:.4f}", f"{final['against_references']['word_error_rate']:.4f}"], rows
        assert rows["word error rate vs the uploaded model's transcripts (%)"][1] == f"{final['word_error_rate']:.4f}"
        screenshot(browser, "speech-job")
    finally:
        browser.quit()


def test_a_causal_lm_folder_is_pruned_and_quantized_as_a_program_and_its_folder_loads_in_a_fresh_process(
        client, tmp_path):
    # Methods other than llm_ptq were refused on causal LMs; they now run on the exported next-token program.
    # GPT-2 ties its output layer to the input embedding, which the folder unties once int4 changed one of them.
    folder = gpt2_folder(tmp_path / "gpt2")
    (tmp_path / "gpt2.zip").write_bytes(zip_bytes(folder))
    (tmp_path / "text.jsonl").write_bytes(jsonl_bytes({"train": CORPUS[:40], "val": CORPUS[40:56]}))
    model = client.upload_model(tmp_path / "gpt2.zip", task="causal-lm")
    dataset = client.upload_dataset(tmp_path / "text.jsonl")
    job = client.submit_job({"model_id": model.id, "dataset_id": dataset.id, "evaluation": {"latency": False},
                             "stages": [{"method": "prune", "sparsity": 0.3},
                                        {"method": "ptq", "activations": None, "export_onnx": False,
                                         "weights": {"bits": 4, "granularity": "per_group", "group_size": 32}}]})
    job = client.wait(job["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    baseline, final = job["metrics"]["baseline"], job["metrics"]["final"]
    assert baseline["metric"] == "accuracy" and 1 < baseline["perplexity"] < final["perplexity"] * 1.5
    assert final["hf_folder"]["written"], final["hf_folder"]
    artifact = next(a for a in client.artifacts(job["id"]) if a["kind"] == "model.hf_folder" and a["stage_index"] == 1)
    with zipfile.ZipFile(client.download(artifact, tmp_path / "model.hf.zip")) as archive:
        archive.extractall(tmp_path / "compressed")
    config = json.loads((tmp_path / "compressed" / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and "quantization_config" in config
    loaded = subprocess.run([sys.executable, "-c", FRESH_LOAD % CORPUS[60], str(tmp_path / "compressed")],
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1])["quantized"]


def test_a_seq2seq_folder_is_quantized_through_a_worker_and_its_folder_generates_from_its_recipe(client, tmp_path):
    """A T5 folder and a .jsonl whose validation rows give target texts (the training rows none), through HTTP and
    a real worker: int8 PTQ of the forward generation repeats, judged by the share of the targets' tokens each
    model predicts; the folder, loaded by the artifact's own recipe in a fresh process, generates."""
    from tests.hf_folders import seq2seq_folder

    (tmp_path / "t5.zip").write_bytes(zip_bytes(seq2seq_folder(tmp_path / "t5", "t5")))
    rows = [{"split": "train", "text": text} for text in CORPUS[:24]]
    rows += [{"split": "val", "text": text, "target": " ".join(reversed(text.split()))} for text in CORPUS[24:40]]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    job = _folder_job(client, tmp_path / "t5.zip", tmp_path / "pairs.jsonl", "seq2seq-lm",
                      {"method": "ptq", "calibration_samples": 16})
    final = job["metrics"]["final"]
    assert final["metric"] == "accuracy" and "perplexity" in final, final
    folder = {artifact["kind"]: artifact for artifact in client.artifacts(job["id"])}["model.hf_folder"]
    path = client.download(folder, tmp_path / "model.hf.zip")
    assert path.name == "model.hf.zip"  # the recipe names the file as the job stored it, beside the caller
    generated = subprocess.run([sys.executable, "-c", folder["details"]["recipe"] + """
import torch
with torch.no_grad():
    print(model.generate(input_ids=torch.tensor([[3, 4, 5, 6, 2]]), max_new_tokens=4, do_sample=False).shape)
"""], capture_output=True, text=True, timeout=120, cwd=path.parent)
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert generated.stdout.strip().splitlines()[-1].startswith("torch.Size([1, ")


def test_a_whisper_folder_is_quantized_through_a_worker_and_its_folder_transcribes_from_its_recipe(client, tmp_path):
    """A Whisper folder (task speech-seq2seq) and an .npz of log-mel features whose validation examples have
    reference transcripts (the training ones none: what the upload writes labels them), through HTTP and a real
    worker: int8 PTQ judged by the share of the transcripts' tokens each model predicts; the folder, loaded by the
    artifact's own recipe in a fresh process, transcribes with generate() and its tokenizer."""
    import numpy as np

    from tests.hf_folders import WHISPER_BINS, WHISPER_FRAMES, whisper_folder

    (tmp_path / "whisper.zip").write_bytes(zip_bytes(whisper_folder(tmp_path / "whisper")))
    features = np.random.default_rng(0).normal(size=(24, WHISPER_BINS, WHISPER_FRAMES)).astype(np.float32)
    np.savez(tmp_path / "speech.npz", **{"train.input_features": features[:16], "val.input_features": features[16:],
                                         "val.transcript": np.array(CORPUS[:8])})
    job = _folder_job(client, tmp_path / "whisper.zip", tmp_path / "speech.npz", "speech-seq2seq",
                      {"method": "ptq", "calibration_samples": 16})
    final = job["metrics"]["final"]
    assert final["metric"] == "accuracy" and "perplexity" in final and final["compression_ratio"] > 1.5, final
    folder = {artifact["kind"]: artifact for artifact in client.artifacts(job["id"])}["model.hf_folder"]
    path = client.download(folder, tmp_path / "model.hf.zip")
    transcribed = subprocess.run([sys.executable, "-c", folder["details"]["recipe"] + f"""
import torch
tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    ids = model.generate(input_features=torch.randn(1, {WHISPER_BINS}, {WHISPER_FRAMES}), max_new_tokens=6)
print(type(model).__name__, repr(tokenizer.batch_decode(ids, skip_special_tokens=True)[0]))
"""], capture_output=True, text=True, timeout=120, cwd=path.parent)
    assert transcribed.returncode == 0, transcribed.stderr[-3000:]
    class_name, _, text = transcribed.stdout.strip().splitlines()[-1].partition(" ")
    assert class_name == "WhisperForConditionalGeneration" and isinstance(ast.literal_eval(text), str)
