// A policy's timeline, kept live: every few seconds ask for the events after the newest
// one drawn, and put each new row (drawn by the server's template, so escaped there) on top.
(function () {
  "use strict";
  var table = document.getElementById("timeline");
  if (!table) { return; }
  var body = table.tBodies[0];
  var status = document.getElementById("timeline-status");
  var policy = table.dataset.policy;
  var every = 3000;
  var polls = 0;
  var busy = false;

  function say(text) { if (status) { status.textContent = text; } }

  function add(rows) {
    // rows come oldest first; each goes on top, so the newest ends first
    rows.forEach(function (html) {
      var holder = document.createElement("tbody");
      holder.innerHTML = html;
      var row = holder.querySelector("tr");
      if (row && !body.querySelector('tr[data-event="' + row.dataset.event + '"]')) {
        body.insertBefore(row, body.firstChild);
      }
    });
    var empty = document.getElementById("timeline-empty");
    if (empty && body.rows.length) { empty.remove(); }
  }

  function poll() {
    if (busy) { return; }
    busy = true;
    var sent = table.dataset.after;
    var url = "/ui/api/automation/" + encodeURIComponent(policy) + "/events?after=" +
      encodeURIComponent(sent);
    fetch(url, { credentials: "same-origin" }).then(function (answer) {
      return answer.json().then(function (data) {
        if (!answer.ok) { throw new Error(data.error || String(answer.status)); }
        return data;
      });
    }).then(function (data) {
      add(data.rows);
      // a page that was rewound meanwhile keeps its own place
      if (table.dataset.after === sent) { table.dataset.after = String(data.last); }
      polls += 1;
      table.dataset.polls = String(polls);
      say(data.events.length ? "(" + data.events.length + " new)" : "(live)");
      if (data.more) { window.setTimeout(poll, 0); }
    }).catch(function (error) {
      say("(could not refresh: " + error.message + ")");
    }).then(function () { busy = false; });
  }

  window.keelTimeline = { poll: poll };
  poll();
  window.setInterval(poll, every);
})();
