// The drawing page: strokes are kept as data (so undo/redo just redraw), the canvas is sent as
// a PNG to POST /predict, and the server answers with the probabilities and the 28x28 image
// it actually gave the model, which is shown next to the canvas.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const pad = $("pad"), ctx = pad.getContext("2d");
  const seen = $("seen").getContext("2d");
  const strokes = [];  // [{size, points: [[x, y], ...]}], in canvas pixels
  let undone = [], current = null, sequence = 0, shown = 0, liveTimer = null;

  function drawStroke(s) {
    ctx.strokeStyle = ctx.fillStyle = "#fff";
    ctx.lineWidth = s.size;
    ctx.lineCap = ctx.lineJoin = "round";
    const [x0, y0] = s.points[0];
    if (s.points.length === 1) {  // A tap: a dot.
      ctx.beginPath(); ctx.arc(x0, y0, s.size / 2, 0, 2 * Math.PI); ctx.fill(); return;
    }
    ctx.beginPath(); ctx.moveTo(x0, y0);
    for (const [x, y] of s.points.slice(1)) ctx.lineTo(x, y);
    ctx.stroke();
  }

  function redraw() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, pad.width, pad.height);
    strokes.forEach(drawStroke);
    $("undo").disabled = strokes.length === 0;
    $("redo").disabled = undone.length === 0;
    $("clear").disabled = strokes.length === 0;
  }

  function point(e) {
    const r = pad.getBoundingClientRect();
    return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
  }

  pad.addEventListener("pointerdown", (e) => {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    current = {size: Number($("pen").value), points: [point(e)], pointerId: e.pointerId};
    strokes.push(current);
    undone = [];
    redraw();
  });
  pad.addEventListener("pointermove", (e) => {
    if (!current || e.pointerId !== current.pointerId) return;
    const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
    for (const ev of (events.length ? events : [e])) current.points.push(point(ev));
    redraw();
    if ($("live").checked && !liveTimer) liveTimer = setTimeout(() => { liveTimer = null; predict(); }, 250);
  });
  const end = (e) => {
    if (!current || e.pointerId !== current.pointerId) return;
    current = null;
    if ($("live").checked) predict();
  };
  pad.addEventListener("pointerup", end);
  pad.addEventListener("pointercancel", end);

  function undo() { if (strokes.length) { undone.push(strokes.pop()); redraw(); afterEdit(); } }
  function redo() { if (undone.length) { strokes.push(undone.pop()); redraw(); afterEdit(); } }
  function clear() { undone = undone.concat(strokes.splice(0).reverse()); redraw(); afterEdit(); }
  function afterEdit() { if ($("live").checked && strokes.length) predict(); if (!strokes.length) reset(); }
  $("undo").onclick = undo;
  $("redo").onclick = redo;
  $("clear").onclick = clear;
  $("predict").onclick = predict;
  $("pen").oninput = () => { $("pen-value").textContent = $("pen").value; };
  document.addEventListener("keydown", (e) => {
    if (!(e.ctrlKey || e.metaKey)) return;
    const key = e.key.toLowerCase();
    if (key === "z" && !e.shiftKey) { e.preventDefault(); undo(); }
    else if (key === "y" || (key === "z" && e.shiftKey)) { e.preventDefault(); redo(); }
  });

  function reset() {
    $("label").textContent = "\u2013";
    seen.fillStyle = "#000"; seen.fillRect(0, 0, 28, 28);
    showBars(null);
  }

  function showBars(probabilities) {
    document.querySelectorAll(".bar").forEach((row, i) => {
      const p = probabilities ? probabilities[i] : 0;
      row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
      row.querySelector(".pct").textContent = probabilities ? `${(100 * p).toFixed(1)}%` : "";
      row.classList.toggle("top", !!probabilities && p === Math.max(...probabilities));
    });
  }

  function showImage(image) {  // 28 rows of 28 values in [0, 1]
    const data = seen.createImageData(28, 28);
    image.flat().forEach((v, i) => {
      const g = Math.round(255 * v);
      data.data.set([g, g, g, 255], 4 * i);
    });
    seen.putImageData(data, 0, 0);
  }

  async function predict() {
    if (!strokes.length) { $("status").textContent = "Draw a digit first."; return; }
    const mine = ++sequence;
    document.body.dataset.requested = String(mine);  // Lets a test wait for the latest answer.
    $("status").textContent = "";
    let reply, body;
    try {
      reply = await fetch("/predict", {method: "POST", headers: {"Content-Type": "application/json"},
                                       body: JSON.stringify({png: pad.toDataURL("image/png")})});
      body = await reply.json();
    } catch (err) {
      $("status").textContent = `The server did not answer (${err}).`;
      return;
    }
    if (mine < shown) return;  // An older request answered after a newer one.
    shown = mine;
    if (!reply.ok) { $("status").textContent = body.error || `HTTP ${reply.status}`; return; }
    $("label").textContent = body.class_name;
    $("label").dataset.sequence = String(mine);
    showImage(body.image);
    showBars(body.probabilities);
  }

  async function start() {
    const manifest = await (await fetch("/model")).json();
    for (const name of manifest.class_names) {  // One row per class: name, bar, percentage.
      const row = document.createElement("div");
      row.className = "bar";
      row.innerHTML = '<span class="name"></span><div class="track"><div class="fill"></div></div><span class="pct"></span>';
      row.querySelector(".name").textContent = name;
      $("bars").appendChild(row);
    }
    $("model-info").textContent = `${manifest.model} trained on ${manifest.dataset}, ` +
      `${(100 * manifest.accuracy.test).toFixed(2)}% on its ${manifest.accuracy.test_count} test images.`;
    redraw();
    reset();
    document.body.dataset.ready = "true";
  }
  start().catch((err) => { $("model-info").textContent = `Could not load the model (${err}).`; });
})();
