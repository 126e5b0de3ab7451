// The submit form, built from the method schemas in the API's own OpenAPI document.
import { api, allPages } from "./api.js";
import { el } from "./dom.js";

let openapi = null;

async function schemas() {
  if (!openapi) openapi = await (await fetch("/openapi.json")).json();
  return openapi.components.schemas;
}

const resolve = (all, schema) => schema && schema.$ref ? all[schema.$ref.split("/").pop()] : schema;

function scalarType(all, schema) {
  const options = schema.anyOf ? schema.anyOf.filter((s) => s.type !== "null") : [schema];
  if (options.length !== 1) return null;
  const only = resolve(all, options[0]);
  if (only.enum) return { kind: "enum", values: only.enum };
  return ["integer", "number", "string", "boolean"].includes(only.type) ? { kind: only.type } : null;
}

function fieldFor(all, name, schema) {
  const type = scalarType(all, schema);
  const help = schema.description ? el("small", {}, ` ${schema.description}`) : null;
  const id = `field-${name}`;
  let input;
  if (type && type.kind === "enum") {
    input = el("select", { id, "data-field": name, "data-type": "string" },
      type.values.map((v) => el("option", { value: v, selected: v === schema.default }, v)));
  } else if (type && type.kind === "boolean") {
    input = el("input", { id, type: "checkbox", "data-field": name, "data-type": "boolean", checked: !!schema.default });
  } else if (type) {
    input = el("input", { id, "data-field": name, "data-type": type.kind,
                          type: type.kind === "string" ? "text" : "number", step: "any",
                          value: schema.default ?? "", placeholder: schema.default === undefined ? "optional" : "" });
  } else {
    input = el("textarea", { id, "data-field": name, "data-type": "json" });
    input.value = schema.default === undefined ? "" : JSON.stringify(schema.default);
  }
  return el("div", {}, el("label", { for: id }, name, help), input);
}

function readFields(container) {
  const spec = {};
  for (const input of container.querySelectorAll("[data-field]")) {
    const name = input.dataset.field, type = input.dataset.type;
    if (type === "boolean") spec[name] = input.checked;
    else if (input.value === "") continue;
    else if (type === "json") spec[name] = JSON.parse(input.value);
    else if (type === "integer" || type === "number") spec[name] = Number(input.value);
    else spec[name] = input.value;
  }
  return spec;
}

function stageEditor(all, mapping, index) {
  const fields = el("div", { class: "fields" });
  const select = el("select", { id: `method-${index}`, class: "method" },
    Object.keys(mapping).map((method) => el("option", { value: method }, method)));
  const render = () => {
    const schema = all[mapping[select.value].split("/").pop()];
    fields.replaceChildren(...Object.entries(schema.properties).filter(([name]) => name !== "method")
      .map(([name, property]) => fieldFor(all, name, property)));
  };
  select.addEventListener("change", render);
  render();
  return el("div", { class: "card stage" }, el("label", { for: select.id }, `Stage ${index + 1}: method`), select, fields);
}

export async function submitView() {
  const all = await schemas();
  const mapping = all.JobCreate.properties.stages.items.discriminator.mapping;
  const [models, datasets] = await Promise.all([allPages("/v1/models"), allPages("/v1/datasets")]);
  const stages = el("div", { id: "stages" }, stageEditor(all, mapping, 0));
  const evaluation = el("textarea", { id: "evaluation" });
  evaluation.value = JSON.stringify(all.JobCreate.properties.evaluation.default || {});
  const form = el("form", { class: "card", id: "submit-form" },
    el("label", { for: "model" }, "Model"),
    el("select", { id: "model" }, models.map((m) => el("option", { value: m.id }, `${m.name} (${m.id})`))),
    el("label", { for: "dataset" }, "Dataset"),
    el("select", { id: "dataset" }, datasets.map((d) => el("option", { value: d.id }, `${d.name} (${d.id})`))),
    stages,
    el("button", { type: "button", id: "add-stage", onclick: () =>
      stages.append(stageEditor(all, mapping, stages.children.length)) }, "Add stage"),
    el("label", { for: "evaluation" }, "Evaluation ", el("small", {}, all.EvaluationSpec.description || "")),
    evaluation,
    el("p", {}, el("button", { type: "submit", id: "submit" }, "Submit job")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const spec = {
      model_id: form.querySelector("#model").value, dataset_id: form.querySelector("#dataset").value,
      evaluation: evaluation.value ? JSON.parse(evaluation.value) : undefined,
      stages: [...stages.querySelectorAll(".stage")].map((stage) => ({
        method: stage.querySelector(".method").value, ...readFields(stage.querySelector(".fields")) })),
    };
    const job = await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" },
                                        body: JSON.stringify(spec) });
    location.hash = `#/jobs/${job.id}`;
  });
  return { node: el("section", {}, el("h1", {}, "Submit a job"),
                    models.length && datasets.length ? form
                      : el("p", {}, "Upload a model and a dataset first (SDK, CLI or POST /v1/models, /v1/datasets).")),
           live: false };
}
