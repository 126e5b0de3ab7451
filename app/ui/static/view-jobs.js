// Job list and job page.
import { api, allPages, download } from "./api.js";
import { el, table, progressBar, fmt } from "./dom.js";
import { ACTIVE, methods, overallFraction, phaseText, summary, layerRows } from "./jobs.js";
import { barChart } from "./plots.js";

const LAYER_FIGURES = ["sensitivity", "output_sqnr_db", "weight_sqnr_db"];
const statusCell = (job) => el("span", { class: `status status-${job.status}` }, job.status);

export async function jobsView() {
  const jobs = await allPages("/v1/jobs");
  const rows = jobs.map((job) => [
    el("a", { href: `#/jobs/${job.id}` }, job.id), methods(job),
    job.model_id ? el("a", { href: `#/models/${job.model_id}` }, job.model_id) : "",
    statusCell(job), el("span", {}, progressBar(overallFraction(job)), " ", phaseText(job)),
    new Date(job.created_at).toLocaleString()]);
  return { node: el("section", {}, el("h1", {}, "Jobs"),
                    jobs.length ? table(["job", "methods", "model", "status", "progress", "created"], rows)
                                : el("p", {}, "No jobs yet. ", el("a", { href: "#/submit" }, "Submit one."))),
           live: jobs.some((job) => ACTIVE.has(job.status)) };
}

export async function jobView(jobId) {
  const job = await api(`/v1/jobs/${encodeURIComponent(jobId)}`);
  const node = el("section", { id: "job", "data-status": job.status },
    el("h1", {}, `Job ${job.id} `, statusCell(job)),
    el("div", { class: "card" },
      el("p", {}, "Methods: ", methods(job), job.model_id ? el("span", {}, " · model ",
        el("a", { href: `#/models/${job.model_id}` }, job.model_id)) : ""),
      progressBar(overallFraction(job), true), el("p", { id: "phase" }, phaseText(job) || job.status),
      job.error ? el("p", { class: "status-failed" }, `${job.error.code}: ${job.error.message}`) : null,
      ACTIVE.has(job.status) ? el("button", { type: "button", id: "cancel", onclick: async () => {
        await api(`/v1/jobs/${job.id}/cancel`, { method: "POST" }); location.hash = `#/jobs/${job.id}`;
      } }, "Cancel") : null));
  node.append(...stageSections(job));
  if (!ACTIVE.has(job.status)) node.append(await artifactSection(job));
  node.append(await logSection(job));
  return { node, live: ACTIVE.has(job.status) };
}

function stageSections(job) {
  const metrics = job.metrics || {};
  const sections = [];
  const s = summary(job);
  if (metrics.final) {
    sections.push(el("h2", {}, "Result"), table(["", "uploaded", "compressed"], [
      [s.metric || "metric", fmt(s.baselineValue), fmt(s.value)],
      ["bytes", fmt(s.baselineBytes), fmt(s.bytes)],
      [`latency batch ${s.latencyBatch || "-"} (ms)`, fmt(s.baselineLatency), fmt(s.latency)],
      ...transcriptRows(metrics.baseline || {}, metrics.final)], [1, 2]));
  }
  (metrics.stages || []).forEach((stage, index) => {
    sections.push(el("h2", {}, `Stage ${index}: ${stage.method}`));
    const warnings = stage.metrics && stage.metrics.warnings;
    if (warnings && warnings.length) sections.push(el("p", { class: "warning" }, warnings.join(" · ")));
    sections.push(table(["metric", "value"], flat(stage.metrics || {}).map(([k, v]) => [k, fmt(v)]), [1]));
    for (const found of layerRows(stage.metrics || {})) {
      // A column that is zero everywhere (e.g. no layer moved the metric) says nothing as a chart.
      for (const value of LAYER_FIGURES.filter((name) => found.rows.some((row) => typeof row[name] === "number" &&
                                                                               row[name] !== 0))) {
        sections.push(el("h2", {}, `Per layer: ${value} (${found.path})`),
                      barChart({ rows: found.rows, label: "name", value, unit: value.endsWith("db") ? " dB" : "",
                                 id: `layers-${index}-${value}` }));
      }
    }
  });
  return sections;
}

function transcriptRows(baseline, final) {
  // A speech recognizer's: how far the compressed model's transcripts moved from the upload's, and, given
  // reference transcripts, both models' word error rate against them (what its users know).
  const moved = final.transcripts;
  if (!moved) return [];
  const rows = [["word error rate vs the uploaded model's transcripts (%)", fmt(0), fmt(moved.word_error_rate)]];
  const theirs = (baseline.transcripts || {}).against_references, ours = moved.against_references;
  if (ours) rows.push(["word error rate vs reference transcripts (%)", fmt(theirs && theirs.word_error_rate),
                       fmt(ours.word_error_rate)]);
  return rows.filter((row) => row[2] !== fmt(undefined));
}

function flat(object, prefix = "") {
  // Scalars only, one level of nesting spelled out (latency per batch size); long lists stay in the JSON.
  return Object.entries(object).flatMap(([key, value]) => {
    const name = prefix ? `${prefix}.${key}` : key;
    if (value && typeof value === "object" && !Array.isArray(value) && !prefix) return flat(value, name);
    return value === null || typeof value === "object" ? [] : [[name, value]];
  });
}

async function artifactSection(job) {
  const artifacts = await api(`/v1/jobs/${job.id}/artifacts`);
  return el("div", {}, el("h2", {}, "Artifacts"), table(["name", "kind", "bytes", ""], artifacts.map((a) => [
    a.name, a.kind, fmt(a.size_bytes),
    el("button", { type: "button", class: "download", onclick: () => download(a) }, "Download")]), [2]));
}

async function logSection(job) {
  try {
    const page = await api(`/v1/jobs/${job.id}/logs?limit=1000`);
    const lines = page.items.map((line) => `${line.at.slice(0, 19)} ${line.level.padEnd(7)} ${line.source.padEnd(8)} ` +
                                           line.message);
    return el("div", {}, el("h2", {}, "Logs"), el("pre", { class: "logs" }, lines.join("\n") || "(no lines yet)"));
  } catch (error) {
    return el("div", {}, el("h2", {}, "Logs"), el("p", {}, `Logs unavailable: ${error.message}`));
  }
}
