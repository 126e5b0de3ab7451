// What the dashboard reads out of a job: overall progress, the metric that matters, size and latency.
export const ACTIVE = new Set(["queued", "running"]);
const METRICS = ["accuracy", "top1_agreement", "cosine", "mean_cosine", "rank_agreement", "perplexity"];
const LOWER_IS_BETTER = new Set(["perplexity", "mse", "kl"]);

export function methods(job) {
  return (job.spec.stages || []).map((stage) => stage.method).join(" → ");
}

export function overallFraction(job) {
  if (job.status === "succeeded") return 1;
  const progress = job.progress || {};
  // The worker reports progress over the whole job (stages weighted by their phases); older rows lack it.
  if (typeof progress.overall === "number") return progress.overall;
  const stages = (job.spec.stages || []).length || 1;
  const index = progress.stage ? parseInt(String(progress.stage).split(":")[0], 10) : NaN;
  // Loading and the baseline come before stage 0; they count as the start.
  if (Number.isNaN(index)) return 0;
  return Math.min(1, (index + (progress.fraction || 0)) / stages);
}

export function phaseText(job) {
  const progress = job.progress || {};
  if (!progress.phase) return "";
  const step = progress.total ? ` ${progress.step}/${progress.total}` : "";
  return `${progress.stage || ""} ${progress.phase}${step}`.trim();
}

export function metricName(metrics) {
  // The metric the job is judged by, which it names; older jobs and language models' jobs name none.
  const named = (metrics || {}).metric;
  if (typeof named === "string" && typeof metrics[named] === "number") return named;
  return METRICS.find((name) => typeof (metrics || {})[name] === "number") || null;
}

export const lowerIsBetter = (name) => LOWER_IS_BETTER.has(name);

export function summary(job) {
  const final = (job.metrics || {}).final || {};
  const baseline = (job.metrics || {}).baseline || {};
  const name = metricName(final) || metricName(baseline);
  const latency = final.latency_ms || {};
  const batch = latencyBatch(latency);
  return {
    metric: name, value: name ? final[name] : null, baselineValue: name ? baseline[name] : null,
    bytes: final.size_bytes ?? null, baselineBytes: baseline.size_bytes ?? null,
    latencyBatch: batch, latency: batch ? latency[batch] : null,
    baselineLatency: batch && baseline.latency_ms ? baseline.latency_ms[batch] : null,
    ratio: final.compression_ratio ?? null,
  };
}

function latencyBatch(latency) {
  const sizes = Object.keys(latency).sort((a, b) => Number(a) - Number(b));
  return sizes.includes("32") ? "32" : sizes[sizes.length - 1] || null;
}

export function layerRows(metrics) {
  // Per-layer diagnostics appear as lists of {name, ...SQNR/sensitivity} rows somewhere in a stage's metrics.
  const found = [];
  const visit = (value, path) => {
    if (Array.isArray(value)) {
      if (value.length && value.every((row) => row && typeof row === "object" && "name" in row &&
          ("output_sqnr_db" in row || "weight_sqnr_db" in row || "sensitivity" in row))) {
        found.push({ path, rows: value });
      } else value.forEach((item, i) => visit(item, `${path}[${i}]`));
    } else if (value && typeof value === "object") {
      for (const [key, item] of Object.entries(value)) visit(item, path ? `${path}.${key}` : key);
    }
  };
  visit(metrics, "");
  return found;
}
