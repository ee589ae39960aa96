// The operator console: every page calls the public API with the tab's bearer token (kept in
// sessionStorage, sent in the Authorization header only) and builds its DOM with textContent,
// never HTML strings, so whatever a sender wrote is shown as text.
(function () {
  "use strict";

  var TOKEN_KEY = "integration.console.token";
  var API = "/api/v1";
  var STREAM_ROWS = 200;
  var me = null;

  // ---- DOM helpers ------------------------------------------------------------------------
  function $(id) { return document.getElementById(id); }

  function el(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === null || value === undefined || value === false) { return; }
      if (name === "text") { node.textContent = String(value); }
      else if (name === "onclick") { node.addEventListener("click", value); }
      else { node.setAttribute(name, value === true ? "" : String(value)); }
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) { continue; }
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svg(tag, attrs) {
    var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (name === "text") { node.textContent = String(attrs[name]); }
      else { node.setAttribute(name, String(attrs[name])); }
    });
    return node;
  }

  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }

  function cell(content) {
    return el("td", {}, typeof content === "string" || content === null || content === undefined
      ? document.createTextNode(content === null || content === undefined ? "" : String(content))
      : content);
  }

  function when(iso) {
    if (!iso) { return ""; }
    var date = new Date(iso);
    return isNaN(date.getTime()) ? String(iso) : date.toISOString().replace("T", " ").slice(0, 19);
  }

  function messageLink(id, label) {
    return el("a", {href: "/console/messages/" + encodeURIComponent(id), text: label || id,
                    class: "mono"});
  }

  function badge(status) {
    return el("span", {class: "badge badge-" + String(status).replace(/[^a-z-]/g, ""),
                       text: status});
  }

  function say(text, isError) {
    var status = $("status");
    status.textContent = text;
    status.className = "status" + (isError ? " status-error" : "") + (text ? " shown" : "");
  }

  function problemText(response) {
    var body = response.data || {};
    return (body.title ? body.title + ": " : "") + (body.detail || "HTTP " + response.status);
  }

  // ---- the token and the API --------------------------------------------------------------
  function token() { return window.sessionStorage.getItem(TOKEN_KEY); }

  function takeTokenFromFragment() {
    // A sign-in link: #code=... (single use: exchanged once for its token) or #token=...;
    // a fragment never reaches the server, and it leaves the address bar at once.
    var match = /^#(code|token)=([^&]+)/.exec(window.location.hash);
    if (!match) { return Promise.resolve(); }
    window.history.replaceState(null, "", window.location.pathname + window.location.search);
    var value = decodeURIComponent(match[2]);
    if (match[1] === "token") {
      window.sessionStorage.setItem(TOKEN_KEY, value);
      return Promise.resolve();
    }
    return fetch("/console/sign-in", {
      method: "POST", credentials: "omit", cache: "no-store",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify({code: value})
    }).then(function (response) {
      return response.json().then(function (data) {
        if (response.ok && data && data.token) {
          window.sessionStorage.setItem(TOKEN_KEY, data.token);
        } else {
          signOut(problemText({status: response.status, data: data}));
        }
      });
    }).catch(function () { signOut("The sign-in link could not be checked: sign in with a token."); });
  }

  function api(method, path, body) {
    var headers = {"Authorization": "Bearer " + token(), "Accept": "application/json"};
    var options = {method: method, headers: headers, credentials: "omit", cache: "no-store"};
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(API + path, options).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        var answer = {status: response.status, ok: response.ok, data: data};
        if (response.status === 401) { signOut(problemText(answer)); }
        return answer;
      });
    }, function () {
      return {status: 0, ok: false, data: {detail: "The gateway cannot be reached."}};
    });
  }

  function may(permission) {
    if (!me) { return false; }
    var parts = permission.split(":");
    if (parts[0] === "manage") { return Object.prototype.hasOwnProperty.call(me.manage, parts[1]); }
    if (parts[0] === "read") { return parts[1] === "any" ? me.read === "any" : me.read !== "none"; }
    return false;
  }

  function showRights() {
    // Hidden by default; shown only where the caller's roles grant the permission.
    Array.prototype.forEach.call(document.querySelectorAll("[data-needs]"), function (node) {
      node.hidden = !may(node.getAttribute("data-needs"));
    });
  }

  function signOut(reason) {
    window.sessionStorage.removeItem(TOKEN_KEY);
    me = null;
    showSignIn(reason || "");
  }

  function showSignIn(reason) {
    $("content").hidden = true;
    $("sign-out").hidden = true;
    $("who").textContent = "";
    $("sign-in").hidden = false;
    $("sign-in-error").textContent = reason || "";
  }

  function confirmAction(text, okLabel) {
    var dialog = $("confirm");
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel || "Confirm";
    return new Promise(function (resolve) {
      function done() {
        dialog.removeEventListener("close", done);
        resolve(dialog.returnValue === "ok");
      }
      dialog.returnValue = "";
      dialog.addEventListener("close", done);
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  function button(label, onClick, needs, danger) {
    var node = el("button", {type: "button", text: label,
                             class: danger ? "danger" : null, "data-needs": needs || null});
    node.addEventListener("click", function () {
      node.disabled = true;
      Promise.resolve(onClick(node)).then(function () { node.disabled = false; });
    });
    if (needs) { node.hidden = !may(needs); }
    return node;
  }

  function forbiddenNote(table, permission) {
    var note = el("p", {class: "note", text: "Your roles do not grant " + permission +
                                           ": nothing to show here."});
    table.parentNode.insertBefore(note, table);
  }

  function labelled(table, tr) {
    // Each cell names its column, for the narrow layout where rows become cards.
    var headers = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(tr.cells, function (td, index) {
      if (headers[index]) { td.setAttribute("data-label", headers[index].textContent); }
    });
    return tr;
  }

  function fillRows(tableId, rows, emptyId) {
    var table = $(tableId);
    var body = table.tBodies[0];
    clear(body);
    rows.forEach(function (row) { body.appendChild(labelled(table, row)); });
    if (emptyId) { $(emptyId).hidden = rows.length > 0; }
  }

  function row(cells) {
    var tr = el("tr");
    cells.forEach(function (content) { tr.appendChild(cell(content)); });
    return tr;
  }

  function loadTypes(select) {
    return api("GET", "/types").then(function (answer) {
      if (!answer.ok) { return; }
      answer.data.types.forEach(function (type) {
        select.appendChild(el("option", {text: type.name}));
      });
    });
  }

  // ---- live stream ------------------------------------------------------------------------
  function streamPage() {
    var body = $("stream").tBodies[0];
    var sources = {};
    var form = $("stream-filter");

    function matches(tr) {
      var type = $("filter-type").value;
      var status = $("filter-status").value;
      var source = $("filter-source").value.trim().toLowerCase();
      return (!type || tr.dataset.type === type) && (!status || tr.dataset.status === status) &&
        (!source || (tr.dataset.source || "").toLowerCase().indexOf(source) >= 0);
    }

    function refilter() {
      var shown = 0;
      Array.prototype.forEach.call(body.rows, function (tr) {
        tr.hidden = !matches(tr);
        if (!tr.hidden) { shown++; }
      });
      $("stream-empty").hidden = shown > 0;
    }

    function put(item, live) {
      var existing = body.querySelector('tr[data-id="' + CSS.escape(item.id) + '"]');
      var tr = labelled($("stream"), row([when(item.time), item.type, badge(item.status),
                                          item.source || "", messageLink(item.id)]));
      tr.dataset.id = item.id;
      tr.dataset.type = item.type || "";
      tr.dataset.status = item.status || "";
      tr.dataset.source = item.source || "";
      if (live) { tr.className = "fresh"; }
      if (existing) { body.removeChild(existing); }
      if (live) { body.insertBefore(tr, body.firstChild); } else { body.appendChild(tr); }
      while (body.rows.length > STREAM_ROWS) { body.deleteRow(body.rows.length - 1); }
      tr.hidden = !matches(tr);
      if (!tr.hidden) { $("stream-empty").hidden = true; }
      if (!item.source && sources[item.id] === undefined) {
        sources[item.id] = null;
        api("GET", "/messages/" + encodeURIComponent(item.id)).then(function (answer) {
          var source = answer.ok && answer.data.envelope ? answer.data.envelope.source : "";
          sources[item.id] = source || "";
          tr.dataset.source = sources[item.id];
          tr.cells[3].textContent = sources[item.id];
          tr.hidden = !matches(tr);
        });
      } else if (!item.source && sources[item.id]) {
        tr.dataset.source = sources[item.id];
        tr.cells[3].textContent = sources[item.id];
        tr.hidden = !matches(tr);
      }
    }

    ["change", "input"].forEach(function (name) { form.addEventListener(name, refilter); });
    form.addEventListener("submit", function (event) { event.preventDefault(); });
    loadTypes($("filter-type"));
    if (me.read === "none") {
      forbiddenNote($("stream"), "read");
      $("live").textContent = "off";
      return;
    }
    api("GET", "/messages?limit=50").then(function (answer) {
      if (!answer.ok) { say(problemText(answer), true); return; }
      answer.data.items.forEach(function (item) {
        if (item.source) { sources[item.id] = item.source; }
        put({id: item.id, type: item.type, status: item.status, source: item.source,
             time: item.updated_at || item.accepted_at}, false);
      });
      refilter();
    });
    connect(function (event) {
      var data = event.event && event.event.data || {};
      var topic = String(event.topic || "");
      put({id: event.message_id, type: topic.slice(0, topic.lastIndexOf(".")),
           status: data.status || topic.slice(topic.lastIndexOf(".") + 1),
           time: event.event && event.event.time}, true);
    });
  }

  function connect(onEvent) {
    var delay = 1000;
    var live = $("live");

    function open() {
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      var socket = new WebSocket(scheme + window.location.host + API + "/ws");
      socket.addEventListener("open", function () {
        socket.send(JSON.stringify({type: "auth", token: token()}));
      });
      socket.addEventListener("message", function (message) {
        var frame;
        try { frame = JSON.parse(message.data); } catch (e) { return; }
        if (frame.type === "authenticated") {
          socket.send(JSON.stringify({type: "subscribe", id: 1, topics: me.subscribe}));
        } else if (frame.type === "subscribed") {
          delay = 1000;
          live.textContent = "live";
          live.className = "pill pill-live";
        } else if (frame.type === "event") {
          onEvent(frame);
        } else if (frame.type === "error" && frame.problem) {
          say(frame.problem.detail || frame.problem.title, true);
        }
      });
      socket.addEventListener("close", function (close) {
        live.textContent = "reconnecting";
        live.className = "pill";
        if (close.code === 1008 && !token()) { return; }
        window.setTimeout(open, delay);
        delay = Math.min(delay * 2, 30000);
      });
    }

    if (!me.subscribe.length) {
      live.textContent = "off: your roles subscribe to no topic";
      return;
    }
    open();
  }

  // ---- one message and its loop ------------------------------------------------------------
  function messagePage() {
    var id = document.body.getAttribute("data-message-id");
    var path = "/messages/" + encodeURIComponent(id);
    api("GET", path).then(function (answer) {
      if (!answer.ok) { say(problemText(answer), true); return; }
      var message = answer.data;
      var envelope = message.envelope || {};
      var facts = $("summary");
      clear(facts);
      [["Type", message.type], ["Status", badge(message.status)], ["Source", envelope.source],
       ["Attempts", message.attempts], ["Owner", message.owner], ["Queue", message.queue],
       ["Accepted", when(message.accepted_at)], ["Finished", when(message.finished_at)],
       ["Correlation", envelope.correlationid], ["Caused by", envelope.causationid
         ? messageLink(envelope.causationid) : null],
       ["Error", message.error ? (message.error.type || "") + ": " + (message.error.message || "")
         : null]].forEach(function (pair) {
        if (pair[1] === null || pair[1] === undefined || pair[1] === "") { return; }
        facts.appendChild(el("dt", {text: pair[0]}));
        facts.appendChild(el("dd", {}, typeof pair[1] === "object" ? pair[1] : String(pair[1])));
      });
      $("payload").textContent = JSON.stringify(envelope, null, 2);
      actionsFor(message);
    });
    api("GET", path + "/trace").then(function (answer) {
      if (!answer.ok) { return; }
      fillRows("timeline", answer.data.timeline.map(function (step) {
        var extra = {};
        Object.keys(step).forEach(function (key) {
          if (["at", "status", "since_previous_ms"].indexOf(key) < 0) { extra[key] = step[key]; }
        });
        return row([when(step.at), String(step.since_previous_ms), badge(step.status),
                    Object.keys(extra).length ? JSON.stringify(extra) : ""]);
      }));
      rootOf(answer.data, 16).then(function (root) { drawLoop(root, answer.data.id); });
    });
  }

  function actionsFor(message) {
    var box = $("message-actions");
    clear(box);
    var id = message.id;
    if (message.status === "held") {
      box.appendChild(button("Release", function () {
        return decide(id, "release").then(function () { window.location.reload(); });
      }, "manage:actions"));
      box.appendChild(button("Drop", function () {
        return decide(id, "drop").then(function () { window.location.reload(); });
      }, "manage:actions", true));
    }
    if (message.status === "dead") {
      box.appendChild(button("Replay", function () {
        return replayOne(id).then(function (ok) { if (ok) { window.location.reload(); } });
      }, "manage:dead_letters"));
    }
  }

  function rootOf(node, hops) {
    // Up the causation chain as far as the caller may read, then the whole tree from there.
    if (!node.causationid || node.causationid === node.id || hops <= 0) {
      return Promise.resolve(node);
    }
    return api("GET", "/messages/" + encodeURIComponent(node.causationid) + "/trace")
      .then(function (answer) { return answer.ok ? rootOf(answer.data, hops - 1) : node; });
  }

  function drawLoop(root, currentId) {
    var W = 168, H = 54, GX = 40, GY = 16;
    var nodes = [];
    var edges = [];
    var rowsUsed = 0;

    function stepsAfter(node) {
      // The loop's steps: a delivery to a consumer or a webhook is the way between two steps,
      // not a step (the list below the graph shows every message).
      var steps = [];
      (node.caused || []).forEach(function (child) {
        if (/^consumer\./.test(child.type) || child.type === "webhook") {
          steps = steps.concat(stepsAfter(child));
        } else {
          steps.push(child);
        }
      });
      return steps;
    }

    function place(node, depth) {
      var children = stepsAfter(node);
      var placed = {node: node, depth: depth, row: rowsUsed};
      nodes.push(placed);
      if (!children.length) { rowsUsed++; }
      children.forEach(function (child, index) {
        var target = place(child, depth + 1);
        if (index === 0) { placed.row = target.row; }
        edges.push([placed, target]);
      });
      return placed;
    }
    place(root, 0);

    var depth = Math.max.apply(null, nodes.map(function (p) { return p.depth; })) + 1;
    var width = depth * (W + GX), height = rowsUsed * (H + GY);
    var picture = svg("svg", {viewBox: "0 0 " + width + " " + height, width: width,
                              height: height, role: "group",
                              "aria-label": "The loop as a graph: " + nodes.length + " messages"});
    picture.appendChild(svg("title", {text: "The loop of message " + currentId}));
    var defs = svg("defs", {});
    var marker = svg("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                markerWidth: 7, markerHeight: 7, orient: "auto"});
    marker.appendChild(svg("path", {d: "M0,0 L10,5 L0,10 z", class: "arrow"}));
    defs.appendChild(marker);
    picture.appendChild(defs);
    edges.forEach(function (edge) {
      var a = edge[0], b = edge[1];
      picture.appendChild(svg("path", {class: "edge", "marker-end": "url(#arrow)", d: "M" + (a.depth * (W + GX) + W) + " " +
        (a.row * (H + GY) + H / 2) + " C" + (a.depth * (W + GX) + W + GX / 2) + " " +
        (a.row * (H + GY) + H / 2) + " " + (b.depth * (W + GX) - GX / 2) + " " +
        (b.row * (H + GY) + H / 2) + " " + (b.depth * (W + GX)) + " " + (b.row * (H + GY) + H / 2)}));
    });
    nodes.forEach(function (p) {
      var x = p.depth * (W + GX), y = p.row * (H + GY);
      var link = svg("a", {href: "/console/messages/" + encodeURIComponent(p.node.id),
                           class: "node node-" + String(p.node.status).replace(/[^a-z-]/g, "") +
                             (p.node.id === currentId ? " current" : ""),
                           "data-type": p.node.type});
      link.appendChild(svg("rect", {x: x + 1, y: y + 1, width: W - 2, height: H - 2, rx: 6}));
      link.appendChild(svg("text", {x: x + 10, y: y + 22, class: "node-type",
                                    text: String(p.node.type).slice(0, 20)}));
      link.appendChild(svg("text", {x: x + 10, y: y + 42, class: "node-status",
                                    text: p.node.status + " · " + String(p.node.id).slice(-8)}));
      picture.appendChild(link);
    });
    var box = $("loop");
    clear(box);
    box.appendChild(picture);

    var list = $("loop-list");
    clear(list);
    (function outline(node, into) {
      var item = el("li", {}, messageLink(node.id, node.type + " (" + node.status + ")"));
      if (node.id === currentId) { item.appendChild(el("span", {class: "muted", text: " this message"})); }
      into.appendChild(item);
      var children = node.caused || [];
      if (children.length) {
        var sub = el("ol");
        item.appendChild(sub);
        children.forEach(function (child) { outline(child, sub); });
      }
    })(root, list);
  }

  function decide(id, verb) {
    return api("POST", "/messages/" + encodeURIComponent(id) + "/" + verb).then(function (answer) {
      say(answer.ok ? (verb === "release" ? "Released " : "Dropped ") + id : problemText(answer),
          !answer.ok);
      return answer.ok;
    });
  }

  function replayOne(id) {
    return confirmAction("Replay dead letter " + id + "? It runs again as a new delivery.",
                         "Replay").then(function (yes) {
      if (!yes) { return false; }
      return api("POST", "/dead-letters/" + encodeURIComponent(id) + "/replay")
        .then(function (answer) {
          say(answer.ok ? "Replayed " + id : problemText(answer), !answer.ok);
          return answer.ok;
        });
    });
  }

  // ---- dead letters -----------------------------------------------------------------------
  function deadLettersPage() {
    var form = $("dl-filter");

    function isoOf(input) {
      return input.value ? new Date(input.value + "Z").toISOString() : null;
    }

    function filter() {
      var query = {};
      if ($("dl-type").value) { query.type = $("dl-type").value; }
      if (isoOf($("dl-since"))) { query.since = isoOf($("dl-since")); }
      if (isoOf($("dl-until"))) { query.until = isoOf($("dl-until")); }
      return query;
    }

    function queryString(query, extra) {
      var all = Object.assign({}, query, extra || {});
      return Object.keys(all).map(function (key) {
        return encodeURIComponent(key) + "=" + encodeURIComponent(all[key]);
      }).join("&");
    }

    function inspect(id) {
      api("GET", "/dead-letters/" + encodeURIComponent(id)).then(function (answer) {
        if (!answer.ok) { say(problemText(answer), true); return; }
        $("dl-detail").hidden = false;
        $("dl-detail-title").textContent = "Dead letter " + id;
        $("dl-detail-body").textContent = JSON.stringify(answer.data, null, 2);
        $("dl-detail-body").focus();
      });
    }

    var loads = 0;

    function load() {
      var mine = ++loads;  // an earlier listing that answers late must not overwrite this one
      return api("GET", "/dead-letters?" + queryString(filter(), {limit: 200}))
        .then(function (answer) {
          if (mine !== loads) { return []; }
          if (!answer.ok) { say(problemText(answer), true); return []; }
          fillRows("dead-letters", answer.data.items.map(function (item) {
            var error = item.error || {};
            var actions = el("div", {class: "actions"},
              button("Inspect", function () { inspect(item.id); }),
              button("Replay", function () {
                return replayOne(item.id).then(function (ok) { if (ok) { load(); } });
              }, "manage:dead_letters"));
            return row([when(item.accepted_at), item.type, String(item.attempts),
                        (error.type || "") + (error.message ? ": " + error.message : ""),
                        messageLink(item.id), actions]);
          }), "dl-empty");
          return answer.data.items;
        });
    }

    function countMatching() {
      var total = 0;
      function page(cursor) {
        var extra = {limit: 500};
        if (cursor) { extra.cursor = cursor; }
        return api("GET", "/dead-letters?" + queryString(filter(), extra)).then(function (answer) {
          if (!answer.ok) { return total; }
          total += answer.data.items.length;
          return answer.data.next_cursor && total < 100000 ? page(answer.data.next_cursor) : total;
        });
      }
      return page(null);
    }

    function replayAll() {
      return countMatching().then(function (total) {
        if (!total) { say("No dead letter matches the filter."); return; }
        return confirmAction("Replay " + total + " dead letter" + (total === 1 ? "" : "s") +
                             " matching the filter?", "Replay " + total).then(function (yes) {
          if (!yes) { return; }
          var done = 0;
          var bar = $("dl-progress-bar");
          $("dl-progress").hidden = false;
          bar.max = total;
          bar.value = 0;
          function chunk() {
            var body = Object.assign({limit: 25}, filter());
            if (!body.type && !body.since && !body.until) { body.all = true; }
            return api("POST", "/dead-letters/replay", body).then(function (answer) {
              if (!answer.ok) { say(problemText(answer), true); return; }
              done += answer.data.replayed;
              bar.value = Math.min(done, total);
              $("dl-progress-text").textContent = done + " of " + total + " replayed";
              if (answer.data.replayed === 25 && done < total) { return chunk(); }
            });
          }
          return chunk().then(function () {
            say("Replayed " + done + " dead letter" + (done === 1 ? "" : "s"));
            return load();
          });
        });
      });
    }

    form.addEventListener("submit", function (event) { event.preventDefault(); load(); });
    $("dl-replay-all").addEventListener("click", replayAll);
    if (!may("manage:dead_letters")) { forbiddenNote($("dead-letters"), "manage:dead_letters"); return; }
    loadTypes($("dl-type"));
    load();
  }

  // ---- held actions -----------------------------------------------------------------------
  function heldPage() {
    function load() {
      api("GET", "/messages?status=held&limit=200").then(function (answer) {
        if (!answer.ok) { say(problemText(answer), true); return; }
        fillRows("held", answer.data.items.map(function (item) {
          return row([when(item.updated_at), item.type, item.source || "", messageLink(item.id),
            el("div", {class: "actions"},
              button("Release", function () { return decide(item.id, "release").then(load); },
                     "manage:actions"),
              button("Drop", function () {
                return confirmAction("Drop held action " + item.id + "? It ends dead without " +
                                     "running.", "Drop").then(function (yes) {
                  return yes ? decide(item.id, "drop").then(load) : null;
                });
              }, "manage:actions", true))]);
        }), "held-empty");
      });
    }
    if (me.read === "none") { forbiddenNote($("held"), "read"); return; }
    load();
  }

  // ---- breakers ---------------------------------------------------------------------------
  function breakersPage() {
    function load() {
      api("GET", "/breakers").then(function (answer) {
        if (!answer.ok) { say(problemText(answer), true); return; }
        fillRows("breakers", answer.data.breakers.map(function (breaker) {
          return row([breaker.name, badge(breaker.state), String(breaker.failures),
            when(breaker.opened_at), when(breaker.closes_at),
            button("Reset", function () {
              return confirmAction("Close the breaker of " + breaker.name + " now?", "Reset")
                .then(function (yes) {
                  if (!yes) { return; }
                  return api("POST", "/breakers/" + encodeURIComponent(breaker.name) + "/reset")
                    .then(function (reply) {
                      say(reply.ok ? "Breaker " + breaker.name + " closed" : problemText(reply),
                          !reply.ok);
                      load();
                    });
                });
            }, "manage:breakers")]);
        }), "breakers-empty");
      });
    }
    if (!may("read:any") && !may("manage:breakers")) {
      forbiddenNote($("breakers"), "manage:breakers");
      return;
    }
    load();
  }

  // ---- schedules --------------------------------------------------------------------------
  function schedulesPage() {
    function act(schedule, verb) {
      return api("POST", "/schedules/" + encodeURIComponent(schedule.id) + "/" + verb)
        .then(function (answer) {
          say(answer.ok ? schedule.name + ": " + verb + (verb === "fire" ? "d, message " +
                answer.data.id : "d") : problemText(answer), !answer.ok);
          load();
        });
    }

    function load() {
      api("GET", "/schedules").then(function (answer) {
        if (!answer.ok) { say(problemText(answer), true); return; }
        fillRows("schedules", answer.data.items.map(function (schedule) {
          return row([schedule.name, schedule.type,
            schedule.crontab ? "cron " + schedule.crontab : "every " + schedule.every + " s",
            schedule.enabled ? "active" : "paused", when(schedule.next_run_at),
            String(schedule.fired_count),
            el("div", {class: "actions"},
              schedule.enabled
                ? button("Pause", function () { return act(schedule, "pause"); })
                : button("Resume", function () { return act(schedule, "resume"); }),
              button("Fire now", function () { return act(schedule, "fire"); }))]);
        }), "schedules-empty");
      });
    }
    if (!may("manage:schedules")) { forbiddenNote($("schedules"), "manage:schedules"); return; }
    load();
  }

  // ---- subscriptions ----------------------------------------------------------------------
  function subscriptionsPage() {
    var items = [];

    function render() {
      var troubled = $("subs-troubled").checked;
      fillRows("subscriptions", items.filter(function (hook) {
        return !troubled || !hook.enabled || hook.failures > 0 || hook.refused_at;
      }).map(function (hook) {
        return row([hook.url, hook.topics.join(", "), hook.enabled ? "enabled" : "disabled",
          String(hook.failures), hook.disabled_reason || hook.refused_reason || "",
          hook.enabled ? "" : button("Re-enable", function () {
            return api("POST", "/subscriptions/" + encodeURIComponent(hook.id) + "/enable")
              .then(function (answer) {
                say(answer.ok ? "Re-enabled " + hook.url : problemText(answer), !answer.ok);
                load();
              });
          })]);
      }), "subscriptions-empty");
    }

    function load() {
      api("GET", "/subscriptions").then(function (answer) {
        if (!answer.ok) { say(problemText(answer), true); return; }
        items = answer.data.items;
        render();
      });
    }
    $("subs-troubled").addEventListener("change", render);
    if (!may("manage:subscriptions")) {
      forbiddenNote($("subscriptions"), "manage:subscriptions");
      return;
    }
    load();
  }

  // ---- queues and workers -----------------------------------------------------------------
  function queuesPage() {
    function load() {
      api("GET", "/queues").then(function (answer) {
        if (!answer.ok) { say(problemText(answer), true); return; }
        fillRows("queues", answer.data.queues.map(function (queue) {
          return row([queue.name, String(queue.depth), String(queue.consumers)]);
        }));
        fillRows("workers", answer.data.workers.map(function (worker) {
          return row([worker.name, worker.queues.join(", "), String(worker.held),
                      when(worker.until)]);
        }), "workers-empty");
      });
    }
    if (!may("read:any")) { forbiddenNote($("queues"), "read:any"); return; }
    load();
    window.setInterval(load, 5000);
  }

  // ---- start ------------------------------------------------------------------------------
  var PAGES = {"stream": streamPage, "message": messagePage, "dead-letters": deadLettersPage,
               "held": heldPage, "breakers": breakersPage, "schedules": schedulesPage,
               "subscriptions": subscriptionsPage, "queues": queuesPage};

  function start() {
    if (!token()) { showSignIn($("sign-in-error").textContent); return; }
    api("GET", "/me").then(function (answer) {
      if (!answer.ok) {
        if (answer.status !== 401) { signOut(problemText(answer)); }
        return;
      }
      me = answer.data;
      $("sign-in").hidden = true;
      $("content").hidden = false;
      $("who").textContent = me.subject + " (" + (me.roles.join(", ") || "no role") + ")";
      $("sign-out").hidden = false;
      showRights();
      var page = PAGES[document.body.getAttribute("data-page")];
      if (page) { page(); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var signedIn = takeTokenFromFragment();
    $("sign-in-form").addEventListener("submit", function (event) {
      event.preventDefault();
      var value = $("token").value.trim().replace(/^Bearer\s+/i, "");
      if (!value) { return; }
      window.sessionStorage.setItem(TOKEN_KEY, value);
      $("token").value = "";
      start();
    });
    $("sign-out").addEventListener("click", function () { signOut(""); });
    signedIn.then(start);
  });
})();
