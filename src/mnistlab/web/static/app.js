// mnistlab web page: draw, then ask the local API what the networks make of it.
"use strict";
const $ = (id) => document.getElementById(id);
const escapeHtml = (t) => String(t).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const pad = $("pad"), ctx = pad.getContext("2d");
let drawing = false, last = null, timer = null, dirty = false, runs = [];
// The one 28x28 digit every card shows, as the classifier saw it (for a written number: the
// digit picked); later requests send it as pixels, so the cards always agree.
let current = null, pick = 0, lastUpload = null, target = null, explained = null, convMap = null;

function clearPad() {
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, pad.width, pad.height);
  dirty = false; $("digit").textContent = "–"; $("bars").innerHTML = ""; $("layers").innerHTML = "";
  $("recon").removeAttribute("src"); $("recon-fig").hidden = true; $("seen").getContext("2d").clearRect(0, 0, 140, 140);
  current = null; pick = 0; lastUpload = null; target = null; explained = null; $("picks").hidden = true;
  $("heat").getContext("2d").clearRect(0, 0, 280, 280); $("curve").getContext("2d").clearRect(0, 0, 280, 150); $("curve-says").textContent = ""; $("softmax").textContent = "";
  $("erase").disabled = true; $("why").textContent = "draw a digit; click a class in the bars to explain it";
  $("why-note").textContent = ""; $("conv-maps").innerHTML = ""; $("conv-open").hidden = true; $("conv-sum").innerHTML = "";
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

// Draw small ImageData over the whole canvas, pixels kept square (no smoothing).
function blit(canvas, img) {
  const tmp = document.createElement("canvas"); tmp.width = img.width; tmp.height = img.height;
  tmp.getContext("2d").putImageData(img, 0, 0);
  const g = canvas.getContext("2d");
  g.imageSmoothingEnabled = false; g.clearRect(0, 0, canvas.width, canvas.height);
  g.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

function showSeen(pixels) {
  const img = new ImageData(28, 28);
  pixels.flat().forEach((v, i) => { img.data.set([v, v, v, 255], i * 4); });
  blit($("seen"), img);
}

let shownProbs = null;
// The softmax step with its numbers, and "unsure" in words where the top probability is below 90%.
function showSoftmax(p) {
  if (!p.logits) { $("softmax").textContent = ""; return; }
  const T = p.temperature || 1, z = p.logits.map((v) => v / T), top = p.digit;
  // e^(z/T) shown as is while it fits a number; past that, every score less the largest (the same p)
  const m = Math.max(...z) > 50 ? Math.max(...z) : 0, e = z.map((v) => Math.exp(v - m)), sum = e.reduce((a, b) => a + b, 0);
  const num = (v) => (v >= 1e4 || v < 0.01 ? v.toExponential(2) : v.toFixed(2));
  const unsure = p.low_confidence ? `Unsure (below 90%): it may be no digit, or a hard one. ` : "";
  $("softmax").textContent = unsure + `Softmax turns the ten scores z into probabilities: p(k) = e^(z_k/T) / Σ_j e^(z_j/T)` +
    (T !== 1 ? ` (T = ${T.toFixed(2)}, this run's calibration)` : "") +
    `; here p(${className(top)}) = e^${(z[top] - m).toFixed(2)} / ${num(sum)} = ${num(e[top])} / ${num(sum)} = ${(100 * e[top] / sum).toFixed(1)}%` +
    (m ? " (every score less the largest, which leaves p as it is)." : ".");
}

// One layer's output: a picture of its maps, or for a few numbers (the ten class scores) labelled bars.
function layerFigure(l) {
  const note = /dropout/i.test(l.name) ? "<br><span class='muted'>the same as its input here: dropout drops units only while training</span>" : "";
  if (l.values && l.values.length <= 16) {
    const lim = Math.max(1e-9, ...l.values.map(Math.abs));
    // a diverging bar: negative scores grow left of the zero line, positive ones right of it
    const bar = (v) => `<div class="half neg">${v < 0 ? `<div style="width:${(-v / lim * 100).toFixed(0)}%"></div>` : ""}</div>` +
      `<div class="half pos">${v >= 0 ? `<div style="width:${(v / lim * 100).toFixed(0)}%"></div>` : ""}</div>`;
    const rows = l.values.map((v, i) => `<span>${escapeHtml(l.values.length === 10 ? className(i) : String(i))}</span>` +
      `${bar(v)}<span>${v.toFixed(2)}</span>`).join("");
    return `<figure><div class="dense">${rows}</div><figcaption>${escapeHtml(l.name)} ${l.shape.join("x")}: ${l.values.length === 10 ? "the class scores (logits)" : "units"}${note}</figcaption></figure>`;
  }
  return `<figure><img src="${l.png}" alt="${escapeHtml(l.name)}"><figcaption>${escapeHtml(l.name)} ${l.shape.join("x")}${note}</figcaption></figure>`;
}
// a class's name as the served classifier calls it (a digit, a garment, "loop")
function className(d) {
  const run = runs.find((r) => r.name === $("clf-run").value);
  return (run && run.classes && run.classes[d]) ?? String(d);
}

function showBars(probs) {
  shownProbs = probs;
  const top = probs.indexOf(Math.max(...probs));
  const chosen = target === null ? top : target;
  $("bars").innerHTML = probs.map((p, d) =>
    `<span data-class="${d}" class="${d === chosen ? "chosen" : ""}">${escapeHtml(className(d))}</span><div data-class="${d}" class="bar${d === top ? " top" : ""}" style="width:${(p * 100).toFixed(1)}%"></div><span data-class="${d}">${(p * 100).toFixed(1)}%</span>`).join("");
}
$("bars").addEventListener("click", (e) => {
  const d = e.target.dataset.class; if (d === undefined || !current) return;
  target = +d; showBars(shownProbs);
  explainNow();
});

function pixelsBody() { return new Blob([JSON.stringify({ pixels: current })], { type: "application/json" }); }

async function update(blob, uploaded = false, repick = false) {
  if (!blob && !dirty) return;
  const mine = ++seq;
  if (!uploaded) $("upload-card").hidden = true;
  blob = blob || await padBlob();
  const clf = $("clf-run").value, ae = $("ae-run").value;
  const stale = () => mine !== seq;
  $("status").textContent = "thinking…"; $("status").className = "muted";
  try {
    if (clf) {
      if (uploaded) lastUpload = blob; else { lastUpload = null; pick = 0; }
      const p = await post(uploaded ? `/api/predict?pick=${pick}` + (repick ? "" : "&steps=1") : "/api/predict", blob, clf);
      if (stale()) return;
      current = p.input; target = null;
      $("digit").textContent = className(p.digit); $("digit").dataset.digit = p.digit;
      $("digit").classList.toggle("unsure", p.low_confidence);
      $("digit").title = p.low_confidence ? "unsure: the top probability is below 90%" : "";
      showPicks(p); showBars(p.probabilities); showSeen(p.input); showSoftmax(p);
      if (uploaded && !repick) await showUpload(blob, clf, p, stale);  // a new digit picked: same photo, same reading
      const a = await post("/api/activations", pixelsBody(), clf);
      if (stale()) return;
      $("layers").innerHTML = a.layers.map(layerFigure).join("");
      await explainNow(stale);
      await convMaps(stale);
    }
    if (ae) {
      // the autoencoder gets the digit the classifier read (one digit of a written number)
      const r = await post("/api/reconstruct", clf && current ? pixelsBody() : blob, ae);
      if (stale()) return;
      $("recon").src = r.output_png; $("recon-fig").hidden = false;
      if (r.code_shape.length === 1 && r.code_shape[0] <= 3) drawScatter(ae, r.code);
    } else {
      $("recon-fig").hidden = true;
      $("ae-note").textContent = "no autoencoder run is served: train one (mnistlab train ae-dense, or Watch it learn below) and pick it";
    }
    if (!stale()) $("status").textContent = "ready";
  } catch (err) {
    if (stale()) return;
    $("status").textContent = err.message; $("status").className = "error";
  }
}

// A written number: one button per digit; the picked digit is the one every card shows.
function showPicks(p) {
  const el = $("picks");
  if (!p.digits) { el.hidden = true; el.innerHTML = ""; return; }
  el.hidden = false;
  el.innerHTML = `<span class="muted">${p.number}: digit</span>` + p.digits.map((d, i) =>
    `<button data-pick="${i}" class="${i === p.pick ? "on" : ""}" title="${(d.confidence * 100).toFixed(1)}%">${d.digit}</button>`).join("");
}
$("picks").addEventListener("click", (e) => {
  const i = e.target.dataset.pick; if (i === undefined || !lastUpload) return;
  pick = +i; dirty = true; update(lastUpload, true, true);
});

// ---- Why? an attribution map for the class clicked in the bars, "why not K", the deletion
// check played on the digit, and the randomisation check (scrambled weights).
const METHOD_NAMES = { ig: "integrated gradients", saliency: "saliency", smoothgrad: "SmoothGrad", occlusion: "occlusion", gradcam: "Grad-CAM", hirescam: "HiResCAM" };
const CAM_NOTES = {
  gradcam: " Grad-CAM weighs each channel by its gradient averaged over the whole map, so a cell can glow for what the model reads elsewhere; compare HiResCAM.",
  hirescam: " HiResCAM keeps each cell's own gradient: where a linear layer reads the last maps (cnn), a cell's value is what it adds to the class's score.",
};
for (let d = 0; d < 10; d++) $("contrast").insertAdjacentHTML("beforeend", `<option value="${d}">${d}</option>`);
["method", "contrast", "scramble"].forEach((id) => $(id).addEventListener("change", () => explainNow()));

async function explainNow(stale = () => false) {
  const clf = $("clf-run").value; if (!clf || !current) return;
  const method = $("method").value, contrast = $("contrast").value, scrambled = $("scramble").checked;
  let q = `/api/explain?method=${method}`;
  if (target !== null) q += `&target=${target}`;
  if (contrast !== "") q += `&contrast=${contrast}`;
  if (scrambled) q += "&scrambled=1";
  const mine = ++explainSeq;
  try {
    const e = await post(q, pixelsBody(), clf);
    if (stale() || mine !== explainSeq) return;
    explained = e;
    drawHeat(e.input, e.attribution);
    drawCurve(e.deletion, e.deletion.fractions.length);
    $("why").textContent = `${METHOD_NAMES[e.method]}: why ${e.target}` + (e.contrast !== null ? `, not ${e.contrast}` : "") +
      " (red: pushed toward it, blue: away)" + (scrambled ? " with scrambled weights" : "");
    $("heat").dataset.target = e.target; $("heat").dataset.method = e.method; $("heat").dataset.scrambled = scrambled;
    $("why-note").textContent = scrambled
      ? `scrambled: the map's rank correlation with the trained model's, over the ink, is ${e.spearman.toFixed(2)}` +
        (e.method === "ig" ? ". Integrated gradients multiply by the input, so the digit's shape survives scrambling the weights: a lesson about the method, not the model." : ": a map that explains the model should change when the model does.")
      : "erase the hottest pixels to test the map: the probability should fall faster than erasing the ink at random (grey)." +
        (CAM_NOTES[e.method] || "");
    $("erase").disabled = false;
  } catch (err) {
    if (mine !== explainSeq) return;
    $("why").textContent = err.message; $("why").className = "error";
  }
}
let explainSeq = 0;

function drawHeat(pixels, attribution, erased = new Set()) {
  const img = new ImageData(28, 28);
  const lim = Math.max(1e-12, ...attribution.flat().map(Math.abs));
  attribution.flat().forEach((a, i) => {
    const v = erased.has(i) ? 0 : pixels[Math.floor(i / 28)][i % 28], t = Math.min(1, Math.abs(a) / lim) * 0.75;
    const col = a >= 0 ? [230, 40, 30] : [40, 90, 230];
    img.data.set([v * (1 - t) + col[0] * t, v * (1 - t) + col[1] * t, v * (1 - t) + col[2] * t, 255], i * 4);
  });
  blit($("heat"), img);
}

function drawCurve(del, upto) {
  const c = $("curve"), g = c.getContext("2d"), w = c.width, h = c.height;
  const L = 40, R = 16, T = 8, B = 28, pw = w - L - R, ph = h - T - B;
  g.clearRect(0, 0, w, h); g.strokeStyle = "#bbb"; g.strokeRect(L + 0.5, T + 0.5, pw, ph);
  g.fillStyle = "#555"; g.font = "10px system-ui";
  [0, 0.5, 1].forEach((v) => g.fillText(v.toFixed(1), 20, T + ph - v * ph + 4));
  [0, 50, 100].forEach((v) => g.fillText(`${v}%`, L + pw * v / 100 - 8, T + ph + 12));
  g.fillText("share of the ink erased →", L + pw / 2 - 55, h - 3);
  g.save(); g.translate(11, T + ph / 2 + 26); g.rotate(-Math.PI / 2); g.fillText("probability", 0, 0); g.restore();
  const line = (ys, colour, n) => {
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    ys.slice(0, n).forEach((y, i) => { const px = L + del.fractions[i] * pw, py = T + ph - y * ph; i ? g.lineTo(px, py) : g.moveTo(px, py); });
    g.stroke();
  };
  line(del.random, "#999", del.random.length); line(del.probability, "#e07b24", upto);
  $("curve-says").textContent = curveSays(del);
}

// one sentence of what the deletion curve says: how much ink, erased in the map's order and at
// random, takes away half the probability the digit started with
function curveSays(del) {
  const half = (ys) => { const i = ys.findIndex((y) => y <= ys[0] / 2); return i < 0 ? null : Math.round(del.fractions[i] * 100); };
  const m = half(del.probability), r = half(del.random);
  const say = (v) => (v === null ? "all of the ink left more than half" : `${v}% of the ink`);
  return `orange: erased hottest first, grey: at random. Half the probability is gone after ${say(m)} in the map's order, vs ${say(r)} at random` +
    (m !== null && (r === null || m < r) ? ": the map found the pixels that matter." : ": the map did no better than chance here.");
}

$("erase").addEventListener("click", () => {
  if (!explained) return;
  const e = explained, del = e.deletion, n = del.order.length, btn = $("erase");
  btn.disabled = true; $("heat").dataset.erased = "playing";
  let i = 0;
  const frame = () => {
    const k = Math.round(del.fractions[i] * n);
    drawHeat(e.input, e.attribution, new Set(del.order.slice(0, k)));
    drawCurve(del, i + 1);
    $("why-note").textContent = `${k} of ${n} ink pixels erased, hottest first: p(${e.target}) = ${(del.probability[i] * 100).toFixed(1)}% ` +
      `(random order: ${(del.random[i] * 100).toFixed(1)}%)`;
    if (++i < del.fractions.length) setTimeout(frame, 120);
    else { btn.disabled = false; $("heat").dataset.erased = "done"; }
  };
  frame();
});

// ---- Open a convolution: the layer's maps; click one, then a pixel, to see its sum.
const convState = { run: null, layer: 0, channel: null, maps: null };
$("conv-layer").addEventListener("change", () => { convState.layer = +$("conv-layer").value; convState.channel = null; convMaps(); });

function signedColour(v, lim) {
  const t = Math.max(-1, Math.min(1, v / lim));
  return t >= 0 ? [255, 255 * (1 - t), 255 * (1 - t)] : [255 * (1 + t), 255 * (1 + t), 255];
}

function paintMap(canvas, map, lim, mark) {
  const h = map.length, w = map[0].length, g = canvas.getContext("2d"), img = new ImageData(w, h);
  map.flat().forEach((v, i) => img.data.set([...signedColour(v, lim), 255], i * 4));
  blit(canvas, img);
  if (mark) { g.strokeStyle = "#000"; g.lineWidth = 2; g.strokeRect(mark[1] * canvas.width / w, mark[0] * canvas.height / h, canvas.width / w, canvas.height / h); }
}

async function convMaps(stale = () => false) {
  const clf = $("clf-run").value; if (!clf || !current) return;
  if (convState.run !== clf) { convState.run = clf; convState.layer = 0; convState.channel = null; }
  let r;
  try { r = await post(`/api/conv?layer=${convState.layer}`, pixelsBody(), clf); } catch (err) {
    $("conv-maps").textContent = err.message; return;
  }
  if (stale()) return;
  $("conv-layer").innerHTML = r.layers.map((n, i) => `<option value="${i}"${i === convState.layer ? " selected" : ""}>${n}</option>`).join("");
  convState.maps = r.maps;
  const lim = Math.max(1e-12, ...r.maps.flat(2).map(Math.abs));
  convState.lim = lim;
  $("conv-maps").innerHTML = "";
  r.maps.forEach((m, ch) => {
    const cv = document.createElement("canvas"); cv.width = m[0].length * 4; cv.height = m.length * 4;
    cv.dataset.channel = ch; cv.title = `${r.layer} channel ${ch}`; paintMap(cv, m, lim);
    cv.addEventListener("click", () => openMap(ch));
    $("conv-maps").appendChild(cv);
  });
  if (convState.channel !== null && convState.channel < r.maps.length) openMap(convState.channel, convState.pixel);
  else { $("conv-open").hidden = true; }
}

function openMap(ch, pixel = null) {
  convState.channel = ch; convState.pixel = pixel;
  [...$("conv-maps").children].forEach((cv) => cv.classList.toggle("on", +cv.dataset.channel === ch));
  $("conv-open").hidden = false;
  paintMap($("conv-map"), convState.maps[ch], convState.lim, pixel);
  $("conv-map").dataset.channel = ch;
  if (pixel) openPixel(pixel[0], pixel[1]); else $("conv-sum").innerHTML = "<p class='muted'>click a pixel of the map</p>";
}

$("conv-map").addEventListener("click", (e) => {
  const m = convState.maps && convState.maps[convState.channel]; if (!m) return;
  const r = $("conv-map").getBoundingClientRect();
  const y = Math.min(m.length - 1, Math.floor((e.clientY - r.top) / r.height * m.length));
  const x = Math.min(m[0].length - 1, Math.floor((e.clientX - r.left) / r.width * m[0].length));
  convState.pixel = [y, x]; paintMap($("conv-map"), m, convState.lim, [y, x]); openPixel(y, x);
});

const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2));
function grid(rows, caption) {
  return `<table><caption>${caption}</caption>` + rows.map((r) => "<tr>" + r.map((v) => `<td>${fmt(v)}</td>`).join("") + "</tr>").join("") + "</table>";
}

async function openPixel(y, x) {
  const clf = $("clf-run").value, ch = convState.channel;
  const r = await post(`/api/conv?layer=${convState.layer}&channel=${ch}&y=${y}&x=${x}`, pixelsBody(), clf);
  const shown = r.inputs.slice(0, 4), rest = r.inputs.slice(4);
  const what = r.first ? "the standardised pixels" : "the previous layer's maps (after its activation and pooling)";
  $("conv-sum").innerHTML =
    `<p>${r.layer}, channel ${ch}, pixel (${y}, ${x}): each input channel's ${r.kernel.join("x")} kernel times the patch of ${what} under it, summed.</p>` +
    shown.map((d) => `<div class="kernels">${grid(d.kernel, `kernel, input ${d.channel}`)}${grid(d.patch, "input patch")}${grid(d.products, "kernel × patch")}<p>sum ${fmt(d.sum)}</p></div>`).join("") +
    (rest.length ? `<p class="muted">input channels ${rest[0].channel}–${rest[rest.length - 1].channel}: sums ${rest.map((d) => fmt(d.sum)).join(", ")}</p>` : "") +
    `<p class="total" id="conv-total" data-total="${r.total}" data-value="${r.value}">${r.inputs.length} channel sum${r.inputs.length > 1 ? "s" : ""} ${fmt(r.total - r.bias)} + bias ${fmt(r.bias)} = ${fmt(r.total)} (the map holds ${fmt(r.value)})</p>` +
    afterSteps(r);
}

// What the model does next with that value: its normalisation (if any), ReLU, then max-pooling.
function afterSteps(r) {
  const a = r.after; if (!a) return "<p class='muted'>(this model's next step is not a ReLU and max-pool: not shown)</p>";
  let v = r.value, out = "<div class='steps-after' id='conv-after'>";
  if (a.normed !== undefined) { out += `<p>${a.norm}: a fixed scale and shift at inference: ${fmt(v)} → ${fmt(a.normed)}</p>`; v = a.normed; }
  out += `<p>ReLU: max(0, ${fmt(v)}) = <b>${fmt(a.relu)}</b>${a.relu === 0 ? " (negative: switched off)" : ""}</p>`;
  if (a.pool) {
    const w = a.pool.window.flat();
    out += `<p>max-pool (${a.pool.layer}): the largest of its 2x2 square, max(${w.map(fmt).join(", ")}) = <b>${fmt(a.pool.value)}</b>, pixel (${a.pool.at.join(", ")}) of the next layer's input</p>`;
  }
  return out + "</div>";
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
  dirty = true; pick = 0; update(f, true);  // the file itself goes to the server, preprocessed like `mnistlab predict`
});

async function loadRuns() {
  runs = (await (await fetch("/api/runs")).json()).runs;
  for (const [sel, task] of [["clf-run", "classify"], ["ae-run", "reconstruct"]]) {
    const was = $(sel).value;
    $(sel).innerHTML = runs.filter((r) => r.task === task).map((r) => `<option value="${escapeHtml(r.name)}">${escapeHtml(r.name)}</option>`).join("") || "<option value=''>none</option>";
    if (runs.some((r) => r.name === was && r.task === task)) $(sel).value = was;
  }
  $("runs").innerHTML = "<table><tr><th>run</th><th>model</th><th>dataset</th><th>test</th><th>figures</th></tr>" + runs.map((r) => {
    const s = r.summary, metric = s.test_acc !== undefined ? `acc ${(s.test_acc * 100).toFixed(2)}%` : s.test_mse !== undefined ? `mse ${s.test_mse.toFixed(4)}` : "";
    const figs = r.figures.map((f) => `<a href="/api/figure?run=${encodeURIComponent(r.name)}&name=${encodeURIComponent(f)}" target="_blank"><img src="/api/figure?run=${encodeURIComponent(r.name)}&name=${encodeURIComponent(f)}" alt="${escapeHtml(f)}" title="${escapeHtml(f)}"></a>`).join("");
    return `<tr><td>${escapeHtml(r.name)}</td><td>${escapeHtml(r.model)}</td><td>${escapeHtml(r.dataset)}</td><td>${metric}</td><td class="thumbs">${figs}</td></tr>`;
  }).join("") + "</table>";
  showSummary();
}

async function showSummary() {
  const clf = $("clf-run").value; if (!clf) { $("summary").textContent = ""; return; }
  try {
    const s = await (await fetch(`/api/summary?run=${encodeURIComponent(clf)}`)).json();
    const rows = s.layers.map((l) => `${(l.name + " (" + l.kind + ")").padEnd(28)} ${l.output.join("x").padEnd(12)} ${l.params.toLocaleString("en").padStart(9)}  ${l.note}`);
    $("summary").textContent = `${s.model} (${clf})\n${"layer (type)".padEnd(28)} ${"output".padEnd(12)} ${"params".padStart(9)}\n` +
      rows.join("\n") + `\nparameters: ${s.params.toLocaleString("en")}, multiply-adds for one digit: ${s.mult_adds.toLocaleString("en")}`;
  } catch (err) { $("summary").textContent = ""; }
}

for (const sel of ["clf-run", "ae-run"]) $(sel).addEventListener("change", () => { dirty = true; update(); showSummary(); });
clearPad();
loadRuns();

// ---- Watch it learn: the Train panel. One training at a time on the server; its live view
// (curve points, filters, the watched digits' readings) streamed as server-sent events.
const TRAIN_DEFAULTS = { "cnn-fast": ["0.015", "16"], cnn: ["0.001", "32"], mlp: ["0.001", "32"], "ae-dense": ["0.001", "32"] };
let trainSource = null, trainPoints = [], trainStart = null;
function trainDefaults() {
  const [lr, width] = TRAIN_DEFAULTS[$("t-model").value];
  $("t-lr").value = lr; $("t-width").value = width;
}
$("t-model").addEventListener("change", trainDefaults);
$("t-batch").value = "128"; trainDefaults();

function trainStatus(text, error = false) { $("t-status").textContent = text; $("t-status").className = error ? "error" : "muted"; }

$("t-go").addEventListener("click", async () => {
  const settings = { model: $("t-model").value, lr: $("t-lr").value, epochs: $("t-epochs").value,
    width: $("t-width").value, augment: $("t-augment").value, batch_size: $("t-batch").value };
  trainPoints = []; drawTrainCurve(); $("t-filters").innerHTML = ""; $("t-grid").innerHTML = "";
  try {
    const r = await fetch("/api/train", { method: "POST", body: JSON.stringify(settings), headers: { "Content-Type": "application/json" } });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error || r.statusText);
  } catch (err) { trainStatus(err.message, true); return; }
  $("t-go").disabled = true; $("t-stop").disabled = false; trainStatus("starting…");
  listenTraining();
});

$("t-stop").addEventListener("click", async () => {
  $("t-stop").disabled = true;
  await fetch("/api/train/stop", { method: "POST", body: "{}", headers: { "Content-Type": "application/json" } });
  trainStatus("stopping after this batch…");
});

function listenTraining() {
  if (trainSource) trainSource.close();
  const src = trainSource = new EventSource("/api/train/events");
  const on = (type, fn) => src.addEventListener(type, (e) => fn(JSON.parse(e.data)));
  on("start", (e) => {
    trainStart = e;
    $("t-grid").innerHTML = e.digits.map((png, i) =>
      `<figure><img src="${png}" alt="held-out digit"><figcaption>${e.labels ? "is " + escapeHtml(e.labels[i]) : ""}</figcaption></figure>`).join("");
    $("t-grid-note").textContent = e.task === "classify"
      ? "held-out digits, read by the model as it is now: green right, red wrong"
      : "held-out digits: the autoencoder's reconstructions as it is now";
    trainStatus(`training ${e.model}: ${e.epochs} epoch${e.epochs > 1 ? "s" : ""}, learning rate ${e.settings.lr}`);
  });
  on("step", (e) => {
    trainPoints.push(e); drawTrainCurve();
    const m = e.acc !== undefined ? `, accuracy ${(e.acc * 100).toFixed(1)}%` : e.mse !== undefined ? `, error ${e.mse.toFixed(4)} per pixel` : "";
    trainStatus(`epoch ${e.epoch}/${e.epochs}, batch ${e.step}/${e.steps}: loss ${e.loss.toFixed(4)}${m} (running means)`);
  });
  on("view", (e) => {
    if (e.filters) $("t-filters").innerHTML = e.filters.map((png) => `<img src="${png}" alt="filter">`).join("");
    const figs = $("t-grid").querySelectorAll("figure");
    figs.forEach((f, i) => {
      if (e.predictions) {
        const right = e.correct ? e.correct[i] : null, name = trainStart.classes[e.predictions[i]] ?? e.predictions[i];
        f.className = right === null ? "" : right ? "right" : "wrong";
        f.querySelector("figcaption").textContent = `reads ${name}` + (right === false ? ` (is ${trainStart.labels[i]})` : "");
      } else if (e.outputs) {
        f.querySelector("img").src = e.outputs[i]; f.querySelector("figcaption").textContent = "rebuilt";
      }
    });
  });
  on("epoch", (e) => {
    const held = e.test_acc !== undefined ? `held-out accuracy ${(e.test_acc * 100).toFixed(1)}%` : e.test_mse !== undefined ? `held-out error ${e.test_mse.toFixed(4)} per pixel` : "";
    trainStatus(`epoch ${e.epoch} done: ${held}`);
  });
  const finish = (text, error = false) => {
    src.close(); trainSource = null; $("t-go").disabled = false; $("t-stop").disabled = true; trainStatus(text, error);
  };
  on("done", async (e) => { finish(`finished: ${describeSummary(e.summary)}; saved as run ${e.run}, now in the pickers`); await loadRuns(); pickRun(e.run); });
  on("stopped", async (e) => { finish(`stopped (${e.why}): ${describeSummary(e.summary)}; saved as run ${e.run}`); await loadRuns(); pickRun(e.run); });
  on("error", (e) => finish(e.error, true));
  src.addEventListener("end", () => { if (trainSource === src) finish($("t-status").textContent); });
}

function describeSummary(s) {
  return s.test_acc !== undefined ? `held-out accuracy ${(s.test_acc * 100).toFixed(2)}%`
    : s.test_mse !== undefined ? `held-out error ${s.test_mse.toFixed(4)} per pixel` : "";
}

function pickRun(name) {
  const run = runs.find((r) => r.name === name); if (!run) return;
  const sel = run.task === "classify" ? "clf-run" : "ae-run";
  $(sel).value = name; dirty = true; update();
}

function drawTrainCurve() {
  const c = $("t-curve"), g = c.getContext("2d"), w = c.width, h = c.height;
  const L = 44, R = 40, T = 10, B = 30, pw = w - L - R, ph = h - T - B;
  g.clearRect(0, 0, w, h); g.strokeStyle = "#999"; g.strokeRect(L + 0.5, T + 0.5, pw, ph);
  g.fillStyle = "#555"; g.font = "11px system-ui";
  const epochs = trainPoints.length ? trainPoints[0].epochs : 1;
  const maxLoss = Math.max(0.1, ...trainPoints.map((p) => p.loss));
  for (let k = 0; k <= epochs; k++) g.fillText(String(k), L + pw * k / epochs - 3, h - B + 14);
  g.fillText("epochs", L + pw / 2 - 16, h - 4);
  for (let k = 0; k <= 4; k++) {
    g.fillText((maxLoss * k / 4).toFixed(2), 4, T + ph - ph * k / 4 + 4);
    g.fillText(`${k * 25}%`, w - R + 4, T + ph - ph * k / 4 + 4);
  }
  const line = (key, scale, colour) => {
    const pts = trainPoints.filter((p) => p[key] !== undefined); if (!pts.length) return;
    g.strokeStyle = colour; g.lineWidth = 2; g.beginPath();
    pts.forEach((p, i) => { const x = L + pw * p.at / epochs, y = T + ph - ph * Math.min(1, p[key] / scale); i ? g.lineTo(x, y) : g.moveTo(x, y); });
    g.stroke();
  };
  line("loss", maxLoss, "#e07b24"); line("acc", 1, "#2a9d4b");
}
drawTrainCurve();
