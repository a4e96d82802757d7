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
