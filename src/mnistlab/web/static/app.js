// mnistlab web page: draw, then ask the local API what the networks make of it.
"use strict";
const $ = (id) => document.getElementById(id);
const pad = $("pad"), ctx = pad.getContext("2d");
let drawing = false, last = null, timer = null, dirty = false, runs = [];

function clearPad() {
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height);
  dirty = false; $("digit").textContent = "–"; $("bars").innerHTML = ""; $("layers").innerHTML = "";
  $("recon").removeAttribute("src"); $("seen").getContext("2d").clearRect(0, 0, 140, 140);
  $("status").textContent = "draw with the mouse or a finger"; $("status").className = "muted";
}

function point(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
}

function stroke(a, b) {
  ctx.strokeStyle = "#fff"; ctx.lineWidth = +$("pen").value; ctx.lineCap = "round"; ctx.lineJoin = "round";
  ctx.beginPath(); ctx.moveTo(a[0], a[1]); ctx.lineTo(b[0], b[1]); ctx.stroke();
}

pad.addEventListener("pointerdown", (e) => { drawing = true; last = point(e); stroke(last, last); pad.setPointerCapture(e.pointerId); schedule(); });
pad.addEventListener("pointermove", (e) => { if (!drawing) return; const p = point(e); stroke(last, p); last = p; schedule(); });
["pointerup", "pointercancel", "pointerleave"].forEach((t) => pad.addEventListener(t, () => { if (drawing) { drawing = false; schedule(0); } }));
$("clear").addEventListener("click", clearPad);

// Each update is numbered; only the newest may write to the page, so a slow answer for
// an earlier, half-drawn digit never overwrites the answer for the finished one.
let seq = 0;
function schedule(ms = 150) {
  dirty = true; clearTimeout(timer); timer = setTimeout(update, ms);
  $("status").textContent = "drawing…"; $("status").className = "muted";
}

function padBlob() { return new Promise((res) => pad.toBlob(res, "image/png")); }

async function post(path, body, run) {
  const url = path + (run ? (path.includes("?") ? "&" : "?") + "run=" + encodeURIComponent(run) : "");
  const r = await fetch(url, { method: "POST", body, headers: { "Content-Type": body.type || "image/png" } });
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}

function showSeen(pixels) {
  const c = $("seen").getContext("2d"), img = c.createImageData(28, 28);
  pixels.flat().forEach((v, i) => { img.data.set([v, v, v, 255], i * 4); });
  const tmp = document.createElement("canvas"); tmp.width = tmp.height = 28; tmp.getContext("2d").putImageData(img, 0, 0);
  c.imageSmoothingEnabled = false; c.drawImage(tmp, 0, 0, 140, 140);
}

function showBars(probs) {
  const top = probs.indexOf(Math.max(...probs));
  $("bars").innerHTML = probs.map((p, d) =>
    `<span>${d}</span><div class="bar${d === top ? " top" : ""}" style="width:${(p * 100).toFixed(1)}%"></div><span>${(p * 100).toFixed(1)}%</span>`).join("");
}

async function update(blob, uploaded = false) {
  if (!blob && !dirty) return;
  const mine = ++seq;
  if (!uploaded) $("upload-card").hidden = true;
  blob = blob || await padBlob();
  const clf = $("clf-run").value, ae = $("ae-run").value;
  const stale = () => mine !== seq;
  $("status").textContent = "thinking…"; $("status").className = "muted";
  try {
    if (clf) {
      const p = await post(uploaded ? "/api/predict?steps=1" : "/api/predict", blob, clf);
      if (stale()) return;
      $("digit").textContent = p.digit; $("digit").dataset.digit = p.digit;
      $("digit").classList.toggle("unsure", p.low_confidence);
      $("digit").title = p.low_confidence ? "unsure: the top probability is below 90%" : "";
      showBars(p.probabilities); showSeen(p.input);
      if (uploaded) await showUpload(blob, clf, p, stale);
      const a = await post("/api/activations", blob, clf);
      if (stale()) return;
      $("layers").innerHTML = a.layers.map((l) =>
        `<figure><img src="${l.png}" alt="${l.name}"><figcaption>${l.name} ${l.shape.join("x")}</figcaption></figure>`).join("");
    }
    if (ae) {
      const r = await post("/api/reconstruct", blob, ae);
      if (stale()) return;
      $("recon").src = r.output_png;
      if (r.code_shape.length === 1 && r.code_shape[0] <= 3) drawScatter(ae, r.code);
    }
    if (!stale()) $("status").textContent = "ready";
  } catch (err) {
    if (stale()) return;
    $("status").textContent = err.message; $("status").className = "error";
  }
}

// An uploaded photo: its preprocessing stages, and the number read from it with boxes.
async function showUpload(blob, clf, p, stale) {
  $("upload-card").hidden = false;
  $("steps").innerHTML = (p.steps || []).map((s) =>
    `<figure><img src="${s.png}" alt="${s.name}"><figcaption>${s.name}</figcaption></figure>`).join("");
  try {
    const r = await post("/api/read", blob, clf);
    if (stale()) return;
    $("boxes").src = r.boxes_png;
    $("number").textContent = `read as ${r.number}` + (r.low_confidence ? " (unsure: orange boxes are below 90%)" : "");
    $("number").dataset.number = r.number;
  } catch (err) {
    if (stale()) return;
    $("boxes").removeAttribute("src"); $("number").textContent = err.message;
  }
}

const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const codeCache = {};
async function drawScatter(run, code) {
  if (!codeCache[run]) codeCache[run] = await (await fetch("/api/codes?run=" + encodeURIComponent(run))).json();
  const data = codeCache[run], c = $("scatter"), g = c.getContext("2d");
  c.hidden = false; g.clearRect(0, 0, c.width, c.height);
  const xs = data.points.map((p) => p[0]).concat([code[0]]), ys = data.points.map((p) => p[1]).concat([code[1]]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => 10 + (x - x0) / (x1 - x0 || 1) * (c.width - 20), sy = (y) => c.height - 10 - (y - y0) / (y1 - y0 || 1) * (c.height - 20);
  data.points.forEach((p, i) => { g.fillStyle = palette[data.labels[i]]; g.fillRect(sx(p[0]), sy(p[1]), 2, 2); });
  g.fillStyle = "#000"; g.beginPath(); g.arc(sx(code[0]), sy(code[1]), 6, 0, 2 * Math.PI); g.fill();
  $("ae-note").textContent = `test codes coloured by digit${code.length > 2 ? " (first two of three dimensions)" : ""}; black dot: your drawing`;
}

$("upload").addEventListener("change", async (e) => {
  const f = e.target.files[0]; if (!f) return;
  const img = new Image(); img.onload = () => {
    ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height);
    const s = Math.min(pad.width / img.width, pad.height / img.height);
    ctx.drawImage(img, (pad.width - img.width * s) / 2, (pad.height - img.height * s) / 2, img.width * s, img.height * s);
  }; img.src = URL.createObjectURL(f);
  dirty = true; update(f, true);  // the file itself goes to the server, preprocessed like `mnistlab predict`
});

async function loadRuns() {
  runs = (await (await fetch("/api/runs")).json()).runs;
  for (const [sel, task] of [["clf-run", "classify"], ["ae-run", "reconstruct"]]) {
    $(sel).innerHTML = runs.filter((r) => r.task === task).map((r) => `<option value="${r.name}">${r.name}</option>`).join("") || "<option value=''>none</option>";
    $(sel).addEventListener("change", () => { dirty = true; update(); });
  }
  $("runs").innerHTML = "<table><tr><th>run</th><th>model</th><th>dataset</th><th>test</th><th>figures</th></tr>" + runs.map((r) => {
    const s = r.summary, metric = s.test_acc !== undefined ? `acc ${(s.test_acc * 100).toFixed(2)}%` : s.test_mse !== undefined ? `mse ${s.test_mse.toFixed(4)}` : "";
    const figs = r.figures.map((f) => `<a href="/api/figure?run=${encodeURIComponent(r.name)}&name=${encodeURIComponent(f)}" target="_blank"><img src="/api/figure?run=${encodeURIComponent(r.name)}&name=${encodeURIComponent(f)}" alt="${f}" title="${f}"></a>`).join("");
    return `<tr><td>${r.name}</td><td>${r.model}</td><td>${r.dataset}</td><td>${metric}</td><td class="thumbs">${figs}</td></tr>`;
  }).join("") + "</table>";
}

clearPad();
loadRuns();
