// The drift heatmap's colours (one scale for p-values and distances: 0 like the reference,
// 1 at the column's threshold, 2 and more twice as far) and the quality chart per window.
(function () {
  "use strict";
  var STOPS = [[0, [240, 246, 252]], [0.5, [159, 200, 239]], [1, [250, 176, 5]], [2, [180, 35, 24]]];

  function colour(score) {
    var s = Math.max(0, Math.min(2, score));
    for (var i = 1; i < STOPS.length; i++) {
      if (s <= STOPS[i][0]) {
        var a = STOPS[i - 1], b = STOPS[i], f = (s - a[0]) / (b[0] - a[0]);
        var rgb = a[1].map(function (v, k) { return Math.round(v + f * (b[1][k] - v)); });
        return "rgb(" + rgb.join(",") + ")";
      }
    }
    return "rgb(" + STOPS[STOPS.length - 1][1].join(",") + ")";
  }

  var scale = document.querySelector("#heatmap-legend .scale");
  if (scale) {
    scale.style.background = "linear-gradient(to right, " +
      [0, 0.25, 0.5, 0.75, 1, 1.5, 2].map(function (s) { return colour(s) + " " + (50 * s) + "%"; }).join(", ") + ")";
  }
  var table = document.getElementById("heatmap");
  if (table) {
    table.querySelectorAll("td[data-score]").forEach(function (cell) {
      if (cell.dataset.score === "") { cell.classList.add("empty"); return; }
      var score = Number(cell.dataset.score);
      cell.style.background = colour(score);
      cell.style.color = score > 1.2 ? "#fff" : "#0d1117";
    });
    table.dataset.ready = "1";
  }

  var figure = document.getElementById("quality");
  if (figure && window.uPlot) {
    var doc = JSON.parse(figure.dataset.series);
    var palette = ["#1f6feb", "#bf8700", "#b42318", "#1a7f37", "#8250df"];
    var keys = Object.keys(doc.metrics);
    var data = [doc.times].concat(keys.map(function (k) { return doc.metrics[k]; }));
    var series = [{}].concat(keys.map(function (k, i) {
      return { label: k, stroke: palette[i % palette.length], width: 1.5, points: { show: true } };
    }));
    new uPlot({ width: Math.max(200, figure.clientWidth - 20), height: 240,
      scales: { x: { time: true } }, series: series }, data, figure);
    var total = doc.rows.reduce(function (a, b) { return a + b; }, 0);
    figure.querySelector(".note").textContent = "(" + total + " labelled rows)";
    figure.dataset.ready = "1";
  }
})();
