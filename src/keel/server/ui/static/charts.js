// One uPlot chart per metric of a run. The server downsamples to the chart's width
// (min and max per pixel column); a drag zooms in by asking again for that step range,
// so a narrow range comes back exact, and a double-click asks for the whole series.
(function () {
  "use strict";
  window.keelCharts = {};

  function url(run, key, width, start, end) {
    var query = new URLSearchParams({ width: String(width) });
    if (start !== null) { query.set("start", String(Math.floor(start))); }
    if (end !== null) { query.set("end", String(Math.ceil(end))); }
    return "/ui/api/runs/" + encodeURIComponent(run) + "/metrics/" +
      encodeURIComponent(key) + "?" + query.toString();
  }

  function load(figure, start, end) {
    var width = Math.max(200, figure.clientWidth - 20);
    return fetch(url(figure.dataset.run, figure.dataset.key, width, start, end), {
      credentials: "same-origin",
    }).then(function (answer) {
      if (!answer.ok) {
        return answer.json().then(function (body) { throw new Error(body.error || answer.status); });
      }
      return answer.json();
    });
  }

  function describe(figure, series) {
    var note = figure.querySelector(".note");
    var text = series.points + " points" + (series.exact ? "" : ", " + series.steps.length + " drawn");
    if (series.skipped) { text += ", " + series.skipped + " not finite (not drawn)"; }
    note.textContent = "(" + text + ")";
  }

  function draw(figure, series) {
    var range = series.range;
    var plot = new uPlot({
      width: Math.max(200, figure.clientWidth - 20),
      height: 260,
      scales: { x: { time: false, range: function () {
        return range[0] === range[1] ? [range[0] - 1, range[1] + 1] : [range[0], range[1]];
      } } },
      axes: [{ label: "step" }, {}],
      series: [{ label: "step" }, { label: figure.dataset.key, stroke: "#1f6feb", width: 1.5 }],
      cursor: { drag: { x: true, y: false, setScale: false }, bind: { dblclick: function () { return null; } } },
      hooks: {
        setSelect: [function (u) {
          if (u.select.width < 4) { return; }
          var start = u.posToVal(u.select.left, "x");
          var end = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          refresh(figure, u, start, end);
        }],
      },
    }, [series.steps, series.values], figure);
    plot.over.addEventListener("dblclick", function () { refresh(figure, plot, null, null); });
    plot.keelRange = function () { return range.slice(); };
    plot.keelSetRange = function (next) { range = next; };
    return plot;
  }

  function refresh(figure, plot, start, end) {
    load(figure, start, end).then(function (series) {
      plot.keelSetRange(series.range);
      plot.setData([series.steps, series.values], true);
      describe(figure, series);
    }).catch(function (error) { figure.querySelector(".note").textContent = String(error); });
  }

  var figures = document.querySelectorAll("figure.chart");
  figures.forEach(function (figure) {
    load(figure, null, null).then(function (series) {
      window.keelCharts[figure.dataset.key] = draw(figure, series);
      describe(figure, series);
      figure.dataset.ready = "1";
    }).catch(function (error) {
      figure.querySelector(".note").textContent = String(error);
      figure.dataset.ready = "error";
    });
  });
})();
