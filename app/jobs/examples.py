"""One example request per method for the OpenAPI document (`POST /v1/jobs`, the examples menu of /docs)."""

from compression.specs import METHODS

_IDS = {"model_id": "mdl_3f2a9c1b7d4e5f60", "dataset_id": "ds_0a1b2c3d4e5f6789"}
_STUDENT = {"kind": "zoo", "architecture": "small_cnn", "width": 0.5}
_STAGES = {
    "ptq": ("int8 post-training quantization", [{"method": "ptq", "calibration_samples": 512}]),
    "qat": ("4-bit quantization-aware training (LSQ)",
            [{"method": "qat", "weight_bits": 4, "activation_bits": 4, "quantizer": "lsq",
              "training": {"steps": 1000, "lr": 1e-4}}]),
    "kd": ("distil into a half-width CNN", [{"method": "kd", "student": _STUDENT, "temperature": 4.0,
                                             "training": {"steps": 2000}}]),
    "function_matching": ("function matching into a half-width CNN",
                          [{"method": "function_matching", "student": _STUDENT, "training": {"steps": 5000}}]),
    "quantized_distillation": ("2-bit quantized distillation",
                               [{"method": "quantized_distillation", "bits": 2, "training": {"steps": 2000,
                                                                                               "lr": 1e-4}}]),
    "differentiable_quantization": ("4-bit differentiable quantization",
                                    [{"method": "differentiable_quantization", "bits": 4,
                                      "training": {"steps": 1000}}]),
    "quant_noise": ("Quant-Noise finetuning, then iPQ with int8 centroids",
                    [{"method": "quant_noise", "noise": {"rate": 0.1}, "training": {"steps": 500}},
                     {"method": "ipq", "centroids": 64, "centroid_dtype": "int8"}]),
    "ipq": ("iterative product quantization, int8 centroids",
            [{"method": "ipq", "centroids": 64, "centroid_dtype": "int8"}]),
    "prune": ("prune 25 % of the channels and finetune, then int8",
              [{"method": "prune", "kind": "structured", "sparsity": 0.25, "finetune": {"steps": 300}},
               {"method": "ptq"}]),
    "llm_ptq": ("GPTQ int4 (groups of 128) of a causal LM uploaded as a Hugging Face folder, with a .jsonl text "
                "dataset", [{"method": "llm_ptq", "algorithm": "gptq", "bits": 4, "group_size": 128}]),
}
assert set(_STAGES) == set(METHODS), "every method has an example"

JOB_EXAMPLES = {method: {"summary": summary, "value": {**_IDS, "stages": stages,
                                                       "evaluation": {"latency": True,
                                                                      "latency_batch_sizes": [1, 32]}}}
                for method, (summary, stages) in _STAGES.items()}
