// A deployment's traffic from its logs: requests per second, latency quantiles and error
// rate per time bucket, drawn with uPlot. With data-poll the charts ask again every few
// seconds for the chosen range up to now; without it (the monitoring page) they show the
// range in data-since/data-until once.
(function () {
  "use strict";
  var holder = document.getElementById("traffic");
  if (!holder) { return; }
  window.keelTraffic = { charts: {}, last: null };
  var range = document.getElementById("traffic-range");
  var summary = document.getElementById("traffic-summary");
  var poll = Number(holder.dataset.poll || 0);

  function query() {
    var params = new URLSearchParams({ buckets: "60" });
    if (holder.dataset.since) {
      params.set("since", holder.dataset.since);
      if (holder.dataset.until) { params.set("until", holder.dataset.until); }
    } else {
      var span = Number(range ? range.value : 900000);
      params.set("since", String(Date.now() - span));
    }
    return holder.dataset.url + "?" + params.toString();
  }

  function series(kind, data) {
    var times = data.times.map(function (t) { return t / 1000; });
    if (kind === "rate") {
      return { data: [times, data.rate], series: [{}, { label: "requests/s", stroke: "#1f6feb", width: 1.5 }] };
    }
    if (kind === "latency") {
      return { data: [times, data.p50, data.p95, data.p99], series: [{},
        { label: "p50", stroke: "#1f6feb", width: 1.5 },
        { label: "p95", stroke: "#bf8700", width: 1.5 },
        { label: "p99", stroke: "#b42318", width: 1.5 }] };
    }
    return { data: [times, data.error_rate], series: [{}, { label: "error rate", stroke: "#b42318", width: 1.5,
      value: function (u, v) { return v === null ? "–" : (100 * v).toFixed(1) + "%"; } }] };
  }

  function draw(figure, data) {
    var kind = figure.dataset.kind;
    var drawn = series(kind, data);
    var chart = window.keelTraffic.charts[kind];
    if (chart) {
      chart.setData(drawn.data);
      return;
    }
    window.keelTraffic.charts[kind] = new uPlot({
      width: Math.max(200, figure.clientWidth - 20),
      height: 220,
      scales: { x: { time: true }, y: kind === "errors" ? { range: [0, 1] } : {} },
      series: drawn.series,
      axes: [{}, {}],
    }, drawn.data, figure);
  }

  function describe(data) {
    var text = data.total_requests + " requests, " + data.total_errors + " failed, in buckets of " +
      (data.bucket_ms / 1000) + " s";
    if (summary) { summary.textContent = "(" + text + ")"; }
    holder.dataset.requests = String(data.total_requests);
  }

  function refresh() {
    return fetch(query(), { credentials: "same-origin" }).then(function (answer) {
      return answer.json().then(function (body) {
        if (!answer.ok) { throw new Error(body.error || String(answer.status)); }
        return body;
      });
    }).then(function (data) {
      window.keelTraffic.last = data;
      holder.querySelectorAll("figure.chart").forEach(function (figure) {
        draw(figure, data);
        figure.dataset.ready = "1";
      });
      describe(data);
    }).catch(function (error) {
      holder.querySelectorAll("figure.chart").forEach(function (figure) {
        figure.querySelector(".note").textContent = String(error.message || error);
        figure.dataset.ready = "error";
      });
    });
  }

  refresh();
  if (range) { range.addEventListener("change", refresh); }
  if (poll > 0) { window.setInterval(refresh, poll * 1000); }
})();
