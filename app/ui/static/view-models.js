// Model list and model page: every job on a model as Pareto plots and a compare table.
import { allPages, api } from "./api.js";
import { el, table, fmt } from "./dom.js";
import { ACTIVE, methods, summary, lowerIsBetter } from "./jobs.js";
import { paretoPlot } from "./plots.js";

export async function modelsView() {
  const models = await allPages("/v1/models");
  return { node: el("section", {}, el("h1", {}, "Models"), table(["model", "name", "bytes", "uploaded"],
    models.map((m) => [el("a", { href: `#/models/${m.id}` }, m.id), m.name, fmt(m.size_bytes),
                       new Date(m.created_at).toLocaleString()]), [2])), live: false };
}

export async function modelView(modelId) {
  const model = await api(`/v1/models/${encodeURIComponent(modelId)}`);
  const jobs = await allPages(`/v1/jobs?model_id=${encodeURIComponent(modelId)}`);
  const done = jobs.filter((job) => job.status === "succeeded").map((job) => ({ job, s: summary(job) }))
                   .filter(({ s }) => s.metric !== null);
  const metric = done.length ? done[0].s.metric : null;
  const comparable = done.filter(({ s }) => s.metric === metric);
  const higher = !lowerIsBetter(metric);
  const baseline = comparable.length ? comparable[0].s : null;
  const bytesPoints = comparable.map(({ job, s }) => ({ x: s.bytes, y: s.value, label: shortLabel(job) }));
  const latencyPoints = comparable.filter(({ s }) => typeof s.latency === "number")
    .map(({ job, s }) => ({ x: s.latency, y: s.value, label: shortLabel(job) }));
  if (baseline && typeof baseline.baselineValue === "number") {
    bytesPoints.push({ x: baseline.baselineBytes, y: baseline.baselineValue, label: "uploaded", baseline: true });
    if (typeof baseline.baselineLatency === "number") {
      latencyPoints.push({ x: baseline.baselineLatency, y: baseline.baselineValue, label: "uploaded", baseline: true });
    }
  }
  const batch = baseline ? baseline.latencyBatch : "";
  const node = el("section", { id: "model" },
    el("h1", {}, `Model ${model.name} `, el("small", {}, model.id)),
    el("p", {}, `${jobs.length} jobs, ${comparable.length} succeeded with ${metric || "a metric"}.`),
    el("div", { class: "plots" },
      paretoPlot({ points: bytesPoints, xLabel: "bytes (log)", yLabel: metric || "metric", higherIsBetter: higher,
                   id: "pareto-bytes" }),
      paretoPlot({ points: latencyPoints, xLabel: `latency batch ${batch} ms`, yLabel: metric || "metric",
                   higherIsBetter: higher, logX: false, id: "pareto-latency" })),
    el("h2", {}, "Compare"),
    table(["job", "methods", metric || "metric", "bytes", "x smaller", `ms @ ${batch}`, "speed-up"],
      comparable.sort((a, b) => a.s.bytes - b.s.bytes).map(({ job, s }) => [
        el("a", { href: `#/jobs/${job.id}` }, job.id), methods(job), fmt(s.value), fmt(s.bytes),
        fmt(s.ratio, 2), fmt(s.latency, 3),
        s.latency && s.baselineLatency ? `${(s.baselineLatency / s.latency).toFixed(2)}x` : ""]), [2, 3, 4, 5, 6]));
  return { node, live: jobs.some((job) => ACTIVE.has(job.status)) };
}

const shortLabel = (job) => `${methods(job)} ${job.id.slice(-4)}`;
