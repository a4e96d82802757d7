// Runs model.onnx in this page with onnxruntime-web, from the files beside this one.
//
//   window.keelPredict(records) -> Promise of {predictions, probabilities?, classes?}
//
// records: a list of objects keyed by column name (or of lists of values in the column
// order of signature.json), one object, or {dataframe_records: [...]}; the answer is the
// document predict.py prints. Before the model is used, its SHA-256 is checked against
// signature.json where the page can hash (https, or http on localhost).
(function () {
  "use strict";

  const here = new URL(".", document.currentScript.src).href;
  // Nothing is fetched from anywhere else: the WebAssembly files sit beside the page, and
  // one thread, since a page on a plain HTTP server is not cross-origin isolated.
  ort.env.wasm.wasmPaths = here;
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.proxy = false;

  let loading = null;

  function fail(message) {
    throw new Error(message);
  }

  async function hex(buffer) {
    const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
    return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function fetched(name, kind) {
    const response = await fetch(new URL(name, here));
    if (!response.ok) fail(`${name}: HTTP ${response.status}; serve this folder over HTTP`);
    return kind === "json" ? response.json() : response.arrayBuffer();
  }

  async function load() {
    const signature = await fetched("signature.json", "json");
    const bytes = await fetched(signature.model.file, "bytes");
    let verified = false;
    if (globalThis.crypto && crypto.subtle) {
      const digest = await hex(bytes);
      if (digest !== signature.model.sha256) {
        fail(
          `${signature.model.file} was changed after it was exported: its SHA-256 is ` +
            `${digest}, signature.json recorded ${signature.model.sha256}; export it again`
        );
      }
      verified = true;
    }
    const session = await ort.InferenceSession.create(new Uint8Array(bytes), {
      executionProviders: ["wasm"],
    });
    return { signature, session, verified };
  }

  function model() {
    if (loading === null) {
      loading = load();
      loading.catch(() => {
        loading = null; // let a later call try again
      });
    }
    return loading;
  }

  function asRecords(data) {
    if (data && !Array.isArray(data) && typeof data === "object") {
      data = data.dataframe_records || data.records || [data];
    }
    if (!Array.isArray(data) || data.length === 0) {
      fail("expected a non-empty list of records (objects keyed by column name)");
    }
    return data;
  }

  function column(records, index, name) {
    return records.map((record, row) => {
      if (Array.isArray(record)) {
        if (index >= record.length) fail(`record ${row} has ${record.length} values; the model takes more`);
        return record[index];
      }
      if (record === null || typeof record !== "object") fail(`record ${row} is not an object or a list`);
      if (!(name in record)) fail(`record ${row} lacks column ${JSON.stringify(name)}; add it`);
      return record[name];
    });
  }

  function numbers(values, spec) {
    return values.map((v) => {
      if (v === null) {
        if (spec.type === "int64") fail(`column ${JSON.stringify(spec.name)} takes whole numbers, got null`);
        return NaN;
      }
      if (typeof v === "boolean") return v ? 1 : 0;
      if (typeof v !== "number") fail(`column ${JSON.stringify(spec.name)} takes numbers, got ${JSON.stringify(v)}`);
      if (spec.type === "int64" && !Number.isInteger(v)) {
        fail(`column ${JSON.stringify(spec.name)} takes whole numbers, got ${v}`);
      }
      return v;
    });
  }

  function tensor(values, spec, dims) {
    if (spec.type === "string") {
      // a missing category is no category, as Keel's own onnx runtime feeds it
      values = values.map((v) => (v === null || v === undefined ? "" : v));
      values.forEach((v) => {
        if (typeof v !== "string") fail(`column ${JSON.stringify(spec.name)} takes strings, got ${JSON.stringify(v)}`);
      });
      return new ort.Tensor("string", values, dims);
    }
    const nums = numbers(values, spec);
    if (spec.type === "int64") return new ort.Tensor("int64", BigInt64Array.from(nums, (v) => BigInt(v)), dims);
    return new ort.Tensor("float32", Float32Array.from(nums), dims);
  }

  function feed(signature, records) {
    const n = records.length;
    const columns = signature.inputs;
    if (signature.feed === "matrix") {
      const matrix = new Float32Array(n * columns.length);
      columns.forEach((spec, j) => {
        numbers(column(records, j, spec.name), spec).forEach((v, i) => {
          matrix[i * columns.length + j] = v;
        });
      });
      return { [signature.input_name]: new ort.Tensor("float32", matrix, [n, columns.length]) };
    }
    const inputs = {};
    columns.forEach((spec, j) => {
      inputs[spec.input] = tensor(column(records, j, spec.name), spec, [n, 1]);
    });
    return inputs;
  }

  function plain(value) {
    return typeof value === "bigint" ? Number(value) : value;
  }

  function labels(signature, output) {
    const n = output.dims[0];
    const width = output.data.length / n;
    const values = [];
    for (let i = 0; i < n; i++) values.push(plain(output.data[i * width]));
    const classes = signature.classes;
    if (signature.task !== "classification" || !classes) return values;
    // The classes' own JSON values (1, not "1"), as predict.py answers.
    const own = new Map(classes.map((c) => [typeof c === "boolean" ? Number(c) : c, c]));
    return values.map((v) => (own.has(v) ? own.get(v) : v));
  }

  async function keelPredict(data) {
    const { signature, session } = await model();
    const records = asRecords(data);
    const results = await session.run(feed(signature, records));
    const answer = { predictions: labels(signature, results[signature.outputs.label]) };
    const proba = signature.outputs.proba && results[signature.outputs.proba];
    if (proba) {
      const width = signature.classes.length;
      const rows = [];
      for (let i = 0; i < records.length; i++) {
        rows.push(Array.from(proba.data.subarray(i * width, (i + 1) * width)));
      }
      answer.probabilities = rows;
      answer.classes = signature.classes;
    }
    return answer;
  }

  window.keelPredict = keelPredict;
  window.keelModel = model;

  // The page: records in the text box, predictions below.
  async function page() {
    const status = document.getElementById("status");
    const input = document.getElementById("records");
    const output = document.getElementById("predictions");
    if (!status || !input || !output) return;
    try {
      const { signature, verified } = await model();
      const check = verified ? "SHA-256 verified" : "SHA-256 not checked (not a secure context)";
      status.textContent =
        `${signature.model.name} version ${signature.model.version} ` +
        `(${check}; onnxruntime-web ${ort.env.versions.web}, WebAssembly, 1 thread)`;
      if (!input.value.trim()) input.value = JSON.stringify(signature.example, null, 2);
    } catch (error) {
      status.textContent = `error: ${error.message}`;
      return;
    }
    document.getElementById("predict").addEventListener("click", async () => {
      try {
        const records = JSON.parse(input.value);
        const started = performance.now();
        const answer = await keelPredict(records);
        const ms = performance.now() - started;
        output.textContent = `${JSON.stringify(answer, null, 2)}\n\n(${ms.toFixed(2)} ms)`;
      } catch (error) {
        output.textContent = `error: ${error.message}`;
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", page);
  else page();
})();
