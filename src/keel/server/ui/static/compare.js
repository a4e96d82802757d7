// The comparison's charts: one uPlot chart per metric, every run's series overlaid.
// All the runs of a chart come in one request (downsampled per run by the server); a
// drag asks again for that range, a double-click for the whole, and the x axis can
// count steps or time. Each figure gets data-ready="1" once drawn.
(function () {
  "use strict";
  window.keelCharts = {};
  var axisForm = document.getElementById("x-axis");

  function axis() {
    var checked = axisForm ? axisForm.querySelector("input[name=x]:checked") : null;
    return checked ? checked.value : "step";
  }

  function width(figure) { return Math.max(200, figure.clientWidth - 20); }

  function load(figure, x, start, end) {
    var query = new URLSearchParams({ runs: figure.dataset.runs, width: String(width(figure)), x: x });
    if (start !== null) { query.set("start", String(Math.floor(start))); }
    if (end !== null) { query.set("end", String(Math.ceil(end))); }
    var url = "/ui/api/compare/metrics/" + encodeURIComponent(figure.dataset.key) + "?" + query.toString();
    return fetch(url, { credentials: "same-origin" }).then(function (answer) {
      if (!answer.ok) {
        return answer.json().then(function (body) { throw new Error(body.error || answer.status); });
      }
      return answer.json();
    });
  }

  // uPlot draws series over one x column: join the runs' columns on their x values
  // (a run without a point at some x gets undefined there, which the line spans).
  function columns(answer) {
    return uPlot.join(answer.runs.map(function (run) { return [run.steps, run.values]; }));
  }

  function color(index) { return "hsl(" + ((index * 137.508) % 360).toFixed(1) + ", 70%, 42%)"; }

  function describe(figure, answer) {
    var points = 0, drawn = 0, skipped = 0, exact = true;
    answer.runs.forEach(function (run) {
      points += run.points; drawn += run.steps.length; skipped += run.skipped; exact = exact && run.exact;
    });
    var text = answer.runs.length + " runs, " + points + " points" + (exact ? "" : ", " + drawn + " drawn");
    if (skipped) { text += ", " + skipped + " not finite (not drawn)"; }
    figure.querySelector(".note").textContent = "(" + text + ")";
  }

  function draw(figure, answer) {
    var range = answer.range;
    var x = answer.x;
    var series = [{ label: x }].concat(answer.runs.map(function (run, index) {
      return { label: run.name, stroke: color(index), width: 1.5, spanGaps: true };
    }));
    var plot = new uPlot({
      width: width(figure),
      height: 320,
      ms: 1, // times are milliseconds since the epoch
      scales: { x: { time: x === "time", range: function () {
        return range[0] === range[1] ? [range[0] - 1, range[1] + 1] : [range[0], range[1]];
      } } },
      axes: [{ label: x }, {}],
      series: series,
      cursor: { drag: { x: true, y: false, setScale: false }, bind: { dblclick: function () { return null; } } },
      hooks: {
        setSelect: [function (u) {
          if (u.select.width < 4) { return; }
          var start = u.posToVal(u.select.left, "x");
          var end = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          refresh(figure, u, x, start, end);
        }],
      },
    }, columns(answer), figure);
    plot.over.addEventListener("dblclick", function () { refresh(figure, plot, x, null, null); });
    plot.keelRange = function () { return range.slice(); };
    plot.keelSetRange = function (next) { range = next; };
    plot.keelRuns = answer.runs.map(function (run) { return run.run; });
    return plot;
  }

  function refresh(figure, plot, x, start, end) {
    load(figure, x, start, end).then(function (answer) {
      plot.keelSetRange(answer.range);
      plot.setData(columns(answer), true);
      describe(figure, answer);
    }).catch(function (error) { figure.querySelector(".note").textContent = String(error); });
  }

  function drawAll() {
    var x = axis();
    document.querySelectorAll("figure.chart").forEach(function (figure) {
      figure.dataset.ready = "0";
      load(figure, x, null, null).then(function (answer) {
        var old = window.keelCharts[figure.dataset.key];
        if (old) { old.destroy(); }
        window.keelCharts[figure.dataset.key] = draw(figure, answer);
        describe(figure, answer);
        figure.dataset.ready = "1";
        figure.dataset.x = x;
      }).catch(function (error) {
        figure.querySelector(".note").textContent = String(error);
        figure.dataset.ready = "error";
      });
    });
  }

  if (axisForm) { axisForm.addEventListener("change", drawAll); }
  drawAll();
})();
