// Keel's pages: the runs table remembers its chosen columns per experiment.
(function () {
  "use strict";
  var form = document.getElementById("runs-form");
  if (!form) { return; }
  var storageKey = "keel.columns." + form.dataset.experiment;
  var params = new URLSearchParams(window.location.search);
  if (params.has("columns")) {
    // the page was asked for with a choice (even an empty one): remember it
    window.localStorage.setItem(storageKey, params.get("columns"));
    return;
  }
  var saved = window.localStorage.getItem(storageKey);
  if (saved) {
    params.set("columns", saved);
    window.location.replace(window.location.pathname + "?" + params.toString());
  }
})();

// The runs table's Compare button: the ticked runs are kept per experiment for this tab,
// so runs ticked on several pages of the table are compared together.
(function () {
  "use strict";
  var button = document.getElementById("compare");
  var form = document.getElementById("runs-form");
  if (!button || !form) { return; }
  var storageKey = "keel.compare." + form.dataset.experiment;
  var limit = Number(button.dataset.limit);
  var count = document.getElementById("compare-count");
  var problem = document.getElementById("compare-error");
  var picked = JSON.parse(window.sessionStorage.getItem(storageKey) || "[]");
  var boxes = document.querySelectorAll("#runs input.pick");

  function show() {
    button.disabled = picked.length < 2;
    count.textContent = picked.length ? picked.length + " run" + (picked.length === 1 ? "" : "s") +
      " ticked" + (picked.length < 2 ? "; tick one more to compare" : "") : "Tick two or more runs to compare them.";
    if (picked.length <= limit) { problem.hidden = true; }
  }

  boxes.forEach(function (box) {
    box.checked = picked.indexOf(box.value) >= 0;
    box.addEventListener("change", function () {
      picked = picked.filter(function (id) { return id !== box.value; });
      if (box.checked) { picked.push(box.value); }
      window.sessionStorage.setItem(storageKey, JSON.stringify(picked));
      show();
    });
  });
  button.addEventListener("click", function () {
    if (picked.length > limit) {
      problem.textContent = "Compare takes up to " + limit + " runs; " + picked.length +
        " are ticked. Untick " + (picked.length - limit) + " and press Compare again.";
      problem.hidden = false;
      return;
    }
    window.location.href = "/compare?runs=" + picked.map(encodeURIComponent).join(",");
  });
  show();
})();
