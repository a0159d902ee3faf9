// hmer.js: the hmer recogniser in the browser, on ONNX Runtime Web (WebAssembly).
//
// It reads what hmer_runtime reads, from the same model.json: strokes are rendered by the
// training convention (hmer_runtime/inputs/render.py), cut and padded as hmer_runtime/inputs/preprocess.py
// does for rendered ink, decoded greedily or by beam search over the one-step decoder graph
// (generic over the state names model.json declares, with the beam_index reorder), rescored right
// to left like OnnxModel, and constrained by the grammar tables model.json carries. Each function
// names the Python one it follows; tests/test_web.py checks that both read the same tokens.
"use strict";
(function (global) {

  // --- rendering: hmer_runtime/inputs/render.py render_ink -------------------------------------------

  function ptp(values) { return Math.max(...values) - Math.min(...values); }

  function median(values) {
    const v = [...values].sort((a, b) => a - b), m = v.length >> 1;
    return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  }

  /** The writer's symbol size: the median extent of strokes longer than 2 % of the expression. */
  function symbolSize(traces) {
    const extents = traces.map(t => Math.max(ptp(t.map(p => p[0])), ptp(t.map(p => p[1]))));
    const all = traces.flat();
    const overall = Math.max(ptp(all.map(p => p[0])), ptp(all.map(p => p[1])));
    const strokes = extents.filter(e => e > 0.02 * overall);
    return strokes.length ? median(strokes) : overall;
  }

  /** Python's round(): halves go to the even neighbour. */
  function roundHalfEven(x) {
    const f = Math.floor(x), d = x - f;
    return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
  }

  /** Strokes [[[x, y], ...], ...] to a gray image (ink 0 on 255) drawn at ``supersample`` times
   *  the size with the capsule pen and box-filtered down: render.py's ``pen: "capsule"``, op for op. */
  function renderInk(strokes, cfg) {
    const traces = strokes.filter(s => s.length).map(s => s.map(p => [Number(p[0]), Number(p[1])]));
    if (!traces.length) throw new Error("strokes: no points to read");
    const all = traces.flat();
    if (all.some(p => !Number.isFinite(p[0]) || !Number.isFinite(p[1]))) throw new Error("strokes: a point is not a finite number");
    const lo = [Math.min(...all.map(p => p[0])), Math.min(...all.map(p => p[1]))];
    const hi = [Math.max(...all.map(p => p[0])), Math.max(...all.map(p => p[1]))];
    if (hi[0] === lo[0] && hi[1] === lo[1]) throw new Error("strokes: all points are the same");
    const span = [Math.max(hi[0] - lo[0], 1e-12), Math.max(hi[1] - lo[1], 1e-12)];
    const slack = cfg.pen === "capsule" ? 2 : 0;  // "pil" models are approximated (docs/BENCHMARKS.md, "In the browser")
    const innerW = cfg.max_width - 2 * cfg.pad - cfg.line_width - slack;
    const innerH = cfg.max_height - 2 * cfg.pad - cfg.line_width - slack;
    const scale = Math.min(cfg.symbol_px / symbolSize(traces), innerW / span[0], innerH / span[1]);
    const margin = cfg.pad + cfg.line_width / 2;
    const width = Math.ceil(span[0] * scale + 2 * margin), height = Math.ceil(span[1] * scale + 2 * margin);
    const ss = cfg.supersample, W = width * ss, H = height * ss;
    const lw = Math.max(1, roundHalfEven(cfg.line_width * ss)), r = lw / 2, r2 = r * r;
    const ink = new Uint8Array(W * H);
    for (const t of traces) {
      const pts = t.map(p => [((p[0] - lo[0]) * scale + margin) * ss, ((p[1] - lo[1]) * scale + margin) * ss]);
      if (pts.length === 1) pts.push(pts[0]);
      for (let i = 0; i + 1 < pts.length; i++) {
        const [ax, ay] = pts[i], [bx, by] = pts[i + 1], dx = bx - ax, dy = by - ay;
        const len2 = dx * dx + dy * dy || 1;  // a dot: its numerator is 0, so u = 0
        const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - r)), x1 = Math.min(W - 1, Math.ceil(Math.max(ax, bx) + r));
        const y0 = Math.max(0, Math.floor(Math.min(ay, by) - r)), y1 = Math.min(H - 1, Math.ceil(Math.max(ay, by) + r));
        for (let y = y0; y <= y1; y++) {
          const ty = (y + 0.5) - ay;  // from the segment's start to the pixel centre
          for (let x = x0; x <= x1; x++) {
            const tx = (x + 0.5) - ax;
            let u = (tx * dx + ty * dy) / len2;
            u = u < 0 ? 0 : u > 1 ? 1 : u;
            const ex = tx - u * dx, ey = ty - u * dy;
            if (ex * ex + ey * ey <= r2) ink[y * W + x] = 1;
          }
        }
      }
    }
    const gray = new Uint8Array(width * height), n = ss * ss;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let sum = 0;
        for (let j = 0; j < ss; j++) for (let i = 0; i < ss; i++) sum += ink[(y * ss + j) * W + x * ss + i] ? 0 : 255;
        gray[y * width + x] = Math.floor(sum / n + 0.5);
      }
    }
    return { data: gray, width, height };
  }

  // --- model input: hmer_runtime/inputs/preprocess.py preprocess, on a render --------------------------

  /** A render to model input (ink 1.0 on 0.0, float32), as ``preprocess`` treats renders: paper
   *  is the median level, ink scaled to 1 at its darkest, faint pixels dropped, cropped to the
   *  ink and padded. (A render is drawn at the training pen and symbol size, so the size and
   *  stroke corrections of ``preprocess`` leave it as it is; docs/BENCHMARKS.md says how often.) */
  function modelInput(render, pre) {
    const { data, width, height } = render;
    const gray = Float32Array.from(data, v => v / 255);
    const bg = median(gray);
    const ink = new Float32Array(gray.length);
    let top = 1e-6;
    for (let i = 0; i < gray.length; i++) { ink[i] = bg - gray[i]; top = Math.max(top, ink[i]); }
    const t = pre.ink_threshold;
    let r0 = height, r1 = -1, c0 = width, c1 = -1;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const i = y * width + x;
        let v = Math.min(1, Math.max(0, ink[i] / top));
        if (v < t * 0.5) v = 0;
        ink[i] = v;
        if (v >= t) { r0 = Math.min(r0, y); r1 = Math.max(r1, y); c0 = Math.min(c0, x); c1 = Math.max(c1, x); }
      }
    }
    if (r1 < 0) throw new Error("strokes: no ink found");
    const p = pre.pad, h = r1 - r0 + 1 + 2 * p, w = c1 - c0 + 1 + 2 * p;
    const out = new Float32Array(h * w);
    for (let y = r0; y <= r1; y++) for (let x = c0; x <= c1; x++) out[(y - r0 + p) * w + (x - c0 + p)] = ink[y * width + x];
    return { data: out, height: h, width: w };
  }

  // --- grammar: hmer_runtime/text/grammar.py LatexGrammar, from model.json's "grammar" tables ---------

  class Grammar {
    constructor(vocab, special, tables) {
      this.tokens = vocab;
      this.index = new Map(vocab.map((t, i) => [t, i]));
      this.special = special;
      this.needs = tables.needs;
      this.needGrowth = vocab.map(t => (t === "{" ? -1 : t === "[" ? 1 : 0));
      this.freeGrowth = vocab.map(t => 2 * (this.needs[t] || []).length);
      this.maxGrowth = Math.max(1, ...this.freeGrowth);
      this.cache = new Map();
    }
    start() { return { stack: [], need: [] }; }
    advance(state, id) {
      const { stack, need } = state, tok = this.tokens[id];
      if (need.length) {
        if (tok === "[" && need[0] === "[{") return { stack: [...stack, ["]", ["{", ...need.slice(1)]]], need: [] };
        if (tok === "{") return { stack: [...stack, ["}", need.slice(1)]], need: [] };
        return state;
      }
      if (stack.length && tok === stack[stack.length - 1][0]) return { stack: stack.slice(0, -1), need: stack[stack.length - 1][1] };
      return { stack, need: this.needs[tok] || [] };
    }
    cost(state) { return 2 * state.need.length + state.stack.reduce((s, [, after]) => s + 1 + 2 * after.length, 0); }
    baseMask(state) {
      const key = JSON.stringify(state);
      let allowed = this.cache.get(key);
      if (allowed) return allowed;
      const { stack, need } = state, n = this.tokens.length;
      allowed = new Uint8Array(n);
      if (need.length) {
        for (const opener of need[0]) if (this.index.has(opener)) allowed[this.index.get(opener)] = 1;
      } else {
        allowed.fill(1);
        allowed[this.special.pad] = 0; allowed[this.special.sos] = 0;
        if (this.index.has("{")) allowed[this.index.get("{")] = 0;
        if (this.index.has("}") && !(stack.length && stack[stack.length - 1][0] === "}")) allowed[this.index.get("}")] = 0;
        if (stack.length) allowed[this.special.eos] = 0;
      }
      if (this.cache.size > 4096) this.cache.clear();
      this.cache.set(key, allowed);
      return allowed;
    }
    /** Allowed next ids (1/0); with ``stepsLeft``, only those after which the sequence can still close in time. */
    mask(state, stepsLeft) {
      const allowed = this.baseMask(state), cost = this.cost(state);
      if (stepsLeft == null || cost + this.maxGrowth + 2 <= stepsLeft) return allowed;
      const growth = (state.need.length ? this.needGrowth : this.freeGrowth).slice();
      if (state.stack.length && !state.need.length) growth[this.index.get(state.stack[state.stack.length - 1][0])] = -1;
      const out = new Uint8Array(allowed.length);
      for (let i = 0; i < out.length; i++) out[i] = allowed[i] && (cost + growth[i] + 1 <= stepsLeft - 1 || i === this.special.eos) ? 1 : 0;
      return out;
    }
  }

  // --- search: hmer_runtime/decoding/search.py -------------------------------------------------------------

  function logSoftmax(row) {
    let max = -Infinity;
    for (const v of row) max = Math.max(max, v);
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    const lse = Math.log(sum), out = new Float64Array(row.length);
    for (let i = 0; i < row.length; i++) out[i] = row[i] - max - lse;
    return out;
  }

  /** ``masked_logprobs`` for one row: forbidden tokens at -inf (all allowed if none is). */
  function constrain(logp, grammar, state, stepsLeft) {
    if (!grammar) return logp;
    const allowed = grammar.mask(state, stepsLeft);
    if (!allowed.some(a => a)) return logp;
    return logp.map((v, i) => (allowed[i] ? v : -Infinity));
  }

  function reversed(ids) { return [...ids].reverse(); }

  // --- confidence: hmer_runtime/decoding/confidence.py ------------------------------------------

  const FEATURES = ["score", "beam_share", "left_to_right_agrees", "right_to_left_agrees", "log_length",
    "uncertain_tokens", "scales_agree"];
  const UNCERTAIN = 0.9;  // a token chosen with less probability than this counts as uncertain

  function logAddExp(values) {
    const m = Math.max(...values);
    return m === -Infinity ? m : m + Math.log(values.reduce((a, v) => a + Math.exp(v - m), 0));
  }

  /** ``features`` of hyps[0], the best reading of one image, among its rivals hyps[1:] of its view. */
  function features(pooled) {
    const best = pooled[0];
    if (!Number.isFinite(best.score)) return [-50, -14, 0, 0, 0, 0, 0];
    const tops = new Map();  // each view's best reading: its first in the pooled order
    for (const h of pooled) if (!tops.has(h.view)) tops.set(h.view, String(h.ids));
    const agree = [...tops.values()].filter(ids => ids === String(best.ids)).length / tops.size;
    const hyps = pooled.filter(h => h.view === best.view);
    const n = best.ids.length + 1;
    const total = hyps.map(h => h.logprob).filter(Number.isFinite);
    let share = total.length ? Math.exp(best.logprob - logAddExp(total)) : 1;
    share = Math.min(Math.max(share, 1e-6), 1 - 1e-6);
    const ranksFirst = key => {
      const known = v => v !== undefined && v !== null;
      if (!known(key(best))) return 1;  // one reading direction, which ranked it first
      let top = 0;  // among the rivals read that way (rescoring may leave some unread)
      hyps.forEach((h, j) => {
        if (known(key(h)) && key(h) / (h.ids.length + 1) > key(hyps[top]) / (hyps[top].ids.length + 1)) top = j;
      });
      return top === 0 ? 1 : 0;
    };
    const uncertain = best.tokenLogprobs.filter(lp => lp < Math.log(UNCERTAIN)).length;
    return [best.score, Math.log(share / (1 - share)), ranksFirst(h => h.l2r), ranksFirst(h => h.r2l), Math.log(n),
      uncertain, agree];
  }

  // --- several sizes: render.py at_scale, decoding/pooling.py pool ---------------

  /** The render settings that draw ink ``factor`` times as large (the pen keeps its width). */
  function atScale(render, factor) {
    return factor === 1 ? render : { ...render, symbol_px: render.symbol_px * factor };
  }

  /** ``pooling.own_size``: the view read at the model's own size, the scale nearest 1 (the first on a tie). */
  function ownSize(scales) {
    let own = 0;
    scales.forEach((f, v) => { if (Math.abs(Math.log(f)) < Math.abs(Math.log(scales[own]))) own = v; });
    return own;
  }

  /** ``pooling.view_options``: the options each of an input's ``views`` views is decoded with (the
   *  model's own size at the full beam, the others at ``side_beam``, never wider). */
  function viewOptions(opts, views) {
    if (views === 1) return [opts];
    const scales = opts.scales || [1];
    if (views !== scales.length) throw new Error(`an input has ${views} views, but the options read ${scales.length} sizes`);
    const side = { ...opts, beam: Math.min(opts.beam, opts.side_beam || opts.beam) };
    const own = ownSize(scales);
    return scales.map((_, v) => (v === own ? opts : side));
  }

  /** One input's hypotheses from each of its views, best score first, each marked with its view. */
  function pool(views) {
    const pooled = views.flatMap((hyps, v) => hyps.map(h => ({ ...h, view: v })));
    return stableSort(pooled, h => (Number.isNaN(h.score) ? Infinity : -h.score));
  }

  /** ``search.contenders``: which hypotheses past the first ``keep`` (read right to left in ``r2l``)
   *  rescoring could still lift into the top ``keep``; their r2l is at most 0, so their rescored
   *  score is at most half their left-to-right one. */
  function contenders(hyps, r2l, keep, lp) {
    if (hyps.length <= keep) return [];
    const norm = h => (h.ids.length + 1) ** lp;
    let floor = Infinity;
    for (let j = 0; j < keep; j++) floor = Math.min(floor, (hyps[j].logprob + r2l[j]) / 2 / norm(hyps[j]));
    const out = [];
    for (let j = keep; j < hyps.length; j++) if (hyps[j].logprob / 2 / norm(hyps[j]) >= floor) out.push(j);
    return out;
  }

  /** ``Calibration.probability``: the logistic model model.json's ``confidence`` holds. */
  function probability(calibration, feats) {
    const z = calibration.bias + calibration.weights.reduce((a, w, i) => a + w * feats[i], 0);
    return 1 / (1 + Math.exp(-Math.max(-50, Math.min(50, z))));
  }

  /** Fill ``element`` with the tokens, each a span; those chosen with less than UNCERTAIN
   *  probability are marked (class "uncertain", with how sure the model was as the title). */
  function showTokens(element, tokens, tokenConfidence = []) {
    element.textContent = "";
    tokens.forEach((tok, i) => {
      const p = tokenConfidence[i], span = element.ownerDocument.createElement("span");
      span.textContent = tok;
      if (p !== undefined && p < UNCERTAIN) { span.className = "uncertain"; span.title = `${Math.round(100 * p)} % sure`; }
      element.append(span, i + 1 < tokens.length ? " " : "");
    });
  }

  // --- the recogniser: hmer_runtime/recognizer.py + onnx_model.py --------------------------------

  class Recognizer {
    /** Load model.json and the graphs from ``base`` (a URL folder); ``variant`` "int8" or "fp32". */
    static async load(base = ".", { variant = null } = {}) {
      const spec = await (await fetch(`${base}/model.json`)).json();
      const chosen = variant || spec.web?.variant || "fp32";
      const files = spec.variants[chosen];
      if (!files) throw new Error(`model.json has no ${chosen} variant`);
      // the decoder's tensors, stored once for its step and scorer graphs (export/shared_weights.py)
      const weights = files.weights
        ? [{ path: files.weights, data: new Uint8Array(await (await fetch(`${base}/${files.weights}`)).arrayBuffer()) }]
        : [];
      const session = name => ort.InferenceSession.create(`${base}/${name}`,
        { executionProviders: ["wasm"], ...(weights.length ? { externalData: weights } : {}) });
      const [encoder, decoder, scorer] = await Promise.all(
        [session(files.encoder), session(files.decoder), files.scorer ? session(files.scorer) : null]);
      return new Recognizer(spec, chosen, encoder, decoder, scorer);
    }

    constructor(spec, variant, encoder, decoder, scorer) {
      Object.assign(this, { spec, variant, encoder, decoder, scorer });
      this.vocab = spec.vocab;
      this.special = spec.special_ids;
      this.options = spec.decode;
      this.grammar = new Grammar(spec.vocab, spec.special_ids, spec.grammar || { needs: {} });
      this.memoryNames = spec.memory.map(t => t.name);
      this.stateNames = spec.state.map(t => t.name);
      this.layout = Object.fromEntries([...spec.memory, ...spec.state].map(t => [t.name, t.shape]));
    }

    /** Recognise strokes [[[x, y], ...], ...], drawn at each of the model's ``decode.scales``:
     *  {latex, tokens, score, confidence, token_confidence, ms, input}. */
    async recognize(strokes, { beam = null } = {}) {
      const t0 = performance.now();
      const inputs = (this.options.scales || [1]).map(
        f => modelInput(renderInk(strokes, atScale(this.spec.render, f)), this.spec.preprocess));
      return this.recognizeInputs(inputs, { beam, t0 });
    }

    /** Recognise a model input {data: Float32Array (ink 1 on 0), height, width}. */
    async recognizeInput(input, options = {}) {
      return this.recognizeInputs([input], options);
    }

    /** Recognise one input from its views (model inputs at several sizes); ``input`` is the view read. */
    async recognizeInputs(inputs, { beam = null, t0 = performance.now() } = {}) {
      const opts = { ...this.options, beam: beam || this.options.beam };
      const perView = viewOptions(opts, inputs.length);
      const views = [];
      for (const [v, input] of inputs.entries()) {
        const o = perView[v];
        const { memory, state } = await this.encode(input);
        let hyps = o.beam > 1 ? await this.beamSearch(memory, state, o) : [await this.greedy(memory, state, o)];
        if (o.beam > 1 && o.rescore_r2l && o.search === "hmer") hyps = await this.rescore(memory, state, hyps, o);
        views.push(hyps);
      }
      const hyps = pool(views), best = hyps[0];
      const drop = new Set([this.special.pad, this.special.sos, this.special.eos]);
      const keep = best.ids.map((id, j) => j).filter(j => !drop.has(best.ids[j]));
      const tokens = keep.map(j => this.vocab[best.ids[j]]);
      const tokenConfidence = best.tokenLogprobs.length === best.ids.length ? keep.map(j => Math.exp(best.tokenLogprobs[j])) : [];
      const calibration = this.spec.confidence;
      const confidence = calibration && String(calibration.features) === String(FEATURES)
        ? probability(calibration, features(hyps)) : null;
      return { latex: tokens.join(" "), tokens, score: best.score, confidence, token_confidence: tokenConfidence,
               ms: performance.now() - t0, input: inputs[best.view] };
    }

    /** Encoder outputs for one image padded to the model's stride: (memory, initial state). */
    async encode(input) {
      const s = this.spec.stride || 1, H = Math.ceil(input.height / s) * s, W = Math.ceil(input.width / s) * s;
      const images = new Float32Array(H * W), mask = new Uint8Array(H * W);
      for (let y = 0; y < input.height; y++) {
        images.set(input.data.subarray(y * input.width, (y + 1) * input.width), y * W);
        mask.fill(1, y * W, y * W + input.width);
      }
      const feeds = { images: new ort.Tensor("float32", images, [1, 1, H, W]), pixel_mask: new ort.Tensor("bool", mask, [1, H, W]) };
      const wanted = Object.fromEntries(Object.entries(feeds).filter(([k]) => this.encoder.inputNames.includes(k)));
      const out = await this.encoder.run(wanted);
      return {
        memory: Object.fromEntries(this.memoryNames.map(n => [n, out[`memory.${n}`]])),
        state: Object.fromEntries(this.stateNames.map(n => [n, out[`init.${n}`]])),
      };
    }

    /** The image's memory for ``rows`` hypotheses: as it is where the step graph shares it across
     *  them (model.json ``shared_memory``), else one copy per row. */
    rowsOf(memory, rows) {
      if (this.spec.shared_memory) return memory;
      return Object.fromEntries(Object.entries(memory).map(([n, t]) => [n, repeatRows(t, rows)]));
    }

    /** One decoder call: rows continue state rows ``index``; memory from ``rowsOf``. */
    async step(tokens, index, state, memory) {
      const feeds = {
        tokens: new ort.Tensor("int64", BigInt64Array.from(tokens, BigInt), [tokens.length]),
        beam_index: new ort.Tensor("int64", BigInt64Array.from(index, BigInt), [index.length]),
      };
      for (const n of this.memoryNames) if (this.decoder.inputNames.includes(`memory.${n}`)) feeds[`memory.${n}`] = memory[n];
      for (const n of this.stateNames) feeds[`state_in.${n}`] = state[n];
      const out = await this.decoder.run(feeds);
      const logits = out.logits, V = logits.dims[1];
      const rows = Array.from({ length: tokens.length }, (_, r) => logits.data.subarray(r * V, (r + 1) * V));
      return { rows, state: Object.fromEntries(this.stateNames.map(n => [n, out[`state_out.${n}`]])) };
    }

    /** ``greedy`` for one image. */
    async greedy(memory, state, opts) {
      const { sos, eos } = this.special, g = opts.grammar ? this.grammar : null;
      let gs = g && g.start(), token = sos, logprob = 0;
      const ids = [], tokenLogprobs = [];
      for (let t = 0; t < opts.max_len; t++) {
        const out = await this.step([token], [0], state, memory);
        state = out.state;
        const logp = constrain(logSoftmax(out.rows[0]), g, gs, opts.max_len - t);
        token = argmax(logp);
        logprob += logp[token];
        if (g) gs = g.advance(gs, token);
        if (token === eos) break;
        ids.push(token);
        tokenLogprobs.push(logp[token]);
      }
      return { ids, logprob, score: logprob, tokenLogprobs };
    }

    /** ``beam_search`` (rule "hmer") for one image: ``beam`` rows, reordered by the graph. */
    async beamSearch(memory, state, opts) {
      const k = opts.beam, { sos, eos } = this.special, lp = opts.length_penalty, g = opts.grammar ? this.grammar : null;
      const mem = this.rowsOf(memory, k);
      state = Object.fromEntries(Object.entries(state).map(([n, t]) => [n, repeatRows(t, k)]));
      let scores = Array.from({ length: k }, (_, b) => (b ? -Infinity : 0));
      let tokens = new Array(k).fill(sos), index = [...Array(k).keys()];
      let seqs = Array.from({ length: k }, () => []), gstates = g ? Array.from({ length: k }, () => g.start()) : [];
      let lps = Array.from({ length: k }, () => []);  // each id's log-probability
      const finished = [];
      for (let t = 0; t < opts.max_len; t++) {
        const out = await this.step(tokens, index, state, mem);
        state = out.state;
        const V = out.rows[0].length, total = new Float64Array(k * V), logps = [];
        for (let b = 0; b < k; b++) {
          const logp = logps[b] = constrain(logSoftmax(out.rows[b]), g, gstates[b], opts.max_len - t);
          for (let v = 0; v < V; v++) total[b * V + v] = scores[b] + logp[v];
        }
        const top = topIndices(total, 2 * k);
        const newScores = new Array(k).fill(-Infinity), rows = new Array(k).fill(0), newTokens = new Array(k).fill(eos);
        const newSeqs = Array.from({ length: k }, () => []), newLps = Array.from({ length: k }, () => []), newG = [...gstates];
        let slot = 0;
        for (const c of top) {
          const s = total[c];
          if (!Number.isFinite(s)) break;
          const b = Math.floor(c / V), tok = c % V, ended = tok === eos;
          if (ended || t === opts.max_len - 1) {
            const ids = ended ? seqs[b] : [...seqs[b], tok];
            const tokenLogprobs = ended ? lps[b] : [...lps[b], logps[b][tok]];
            finished.push({ ids: [...ids], logprob: s, score: s / (ids.length + 1) ** lp, tokenLogprobs: [...tokenLogprobs] });
            continue;
          }
          if (slot < k) {
            newScores[slot] = s; rows[slot] = b; newTokens[slot] = tok; newSeqs[slot] = [...seqs[b], tok];
            newLps[slot] = [...lps[b], logps[b][tok]];
            if (g) newG[slot] = g.advance(gstates[b], tok);
            slot++;
          }
          if (slot === k && finished.length >= k) break;
        }
        let going = slot > 0;
        if (finished.length >= k) {
          const bestLive = slot ? Math.max(...newScores) / (t + 2) ** lp : -Infinity;
          going = slot > 0 && bestLive > Math.max(...finished.map(h => h.score));
        }
        if (!going) break;
        scores = newScores; tokens = newTokens; seqs = newSeqs; lps = newLps; gstates = newG; index = rows;
      }
      const hyps = stableSort(finished, h => -h.score).slice(0, k);
      return hyps.length ? hyps : [{ ids: [], logprob: -Infinity, score: -Infinity, tokenLogprobs: [] }];
    }

    /** ``rescore_right_to_left``: the first ``n_best`` hypotheses read right to left, then only the
     *  rest that could still enter the top ``n_best`` (``contenders``), ranked by ``combine_r2l``. */
    async rescore(memory, state, hyps, opts) {
      const lp = opts.length_penalty, keep = opts.n_best || 1;
      const r2l = new Array(hyps.length).fill(null);
      const read = async which => {
        if (!which.length) return;
        const values = await this.sequenceLogprob(memory, state, which.map(j => reversed(hyps[j].ids)),
          this.special.eos, this.special.sos);
        which.forEach((j, k) => { r2l[j] = values[k]; });
      };
      await read([...Array(Math.min(keep, hyps.length)).keys()]);
      await read(contenders(hyps, r2l, keep, lp));
      const rescored = hyps.map((h, j) => {
        const logprob = r2l[j] === null ? h.logprob : (h.logprob + r2l[j]) / 2;
        return { ids: h.ids, logprob, score: logprob / (h.ids.length + 1) ** lp, tokenLogprobs: h.tokenLogprobs,
                 l2r: h.logprob, r2l: r2l[j] };
      });
      return stableSort(rescored, h => -h.score);
    }

    /** log P(sequence + end | image, start) by teacher forcing: the scorer graph in one call, or
     *  the step graph one position at a time. */
    async sequenceLogprob(memory, state, sequences, start, end) {
      const n = sequences.length, T = Math.max(0, ...sequences.map(s => s.length)) + 1;
      const inputs = new BigInt64Array(n * T).fill(BigInt(start)), targets = new BigInt64Array(n * T).fill(-1n);
      sequences.forEach((s, i) => {
        s.forEach((tok, j) => { inputs[i * T + j + 1] = BigInt(tok); targets[i * T + j] = BigInt(tok); });
        targets[i * T + s.length] = BigInt(end);
      });
      if (this.scorer) {
        const feeds = {
          tokens: new ort.Tensor("int64", inputs, [n, T]), targets: new ort.Tensor("int64", targets, [n, T]),
          image_index: new ort.Tensor("int64", new BigInt64Array(n), [n]),
        };
        for (const name of this.scorer.inputNames) if (name.startsWith("memory.")) feeds[name] = memory[name.slice(7)];
        return Array.from((await this.scorer.run(feeds)).logprob.data, Number);
      }
      const mem = this.rowsOf(memory, n);
      let st = Object.fromEntries(Object.entries(state).map(([k, t]) => [k, repeatRows(t, n)]));
      const total = new Array(n).fill(0), rows = [...Array(n).keys()];
      for (let j = 0; j < T; j++) {
        const out = await this.step(rows.map(i => Number(inputs[i * T + j])), rows, st, mem);
        st = out.state;
        rows.forEach(i => { const tg = Number(targets[i * T + j]); if (tg >= 0) total[i] += logSoftmax(out.rows[i])[tg]; });
      }
      return total;
    }
  }

  function argmax(values) {
    let best = 0;
    for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
    return best;
  }

  /** The ``n`` largest, by value then index (numpy's stable argsort of the negated values). */
  function topIndices(values, n) {
    const idx = [...values.keys()].filter(i => values[i] > -Infinity);
    idx.sort((a, b) => values[b] - values[a] || a - b);
    return idx.slice(0, n);
  }

  function stableSort(items, key) {
    return items.map((x, i) => [key(x), i, x]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map(e => e[2]);
  }

  /** A tensor with one batch row, repeated to ``n`` rows. */
  function repeatRows(tensor, n) {
    const per = tensor.data.length / tensor.dims[0];
    const data = new tensor.data.constructor(per * n);
    for (let i = 0; i < n; i++) data.set(tensor.data.subarray(0, per), i * per);
    return new ort.Tensor(tensor.type, data, [n, ...tensor.dims.slice(1)]);
  }

  // --- a drawing pad: pointer events (pen, touch, mouse) on a canvas -> strokes ----------------

  /** Collects strokes drawn on ``canvas`` in its CSS pixels, and draws them. */
  class Pad {
    constructor(canvas, { lineWidth = 3 } = {}) {
      this.canvas = canvas; this.ctx = canvas.getContext("2d"); this.lineWidth = lineWidth;
      this.strokes = []; this.current = null;
      const point = e => {
        const r = canvas.getBoundingClientRect();
        return [Math.round((e.clientX - r.left) * 10) / 10, Math.round((e.clientY - r.top) * 10) / 10];
      };
      canvas.addEventListener("pointerdown", e => {
        e.preventDefault();
        try { canvas.setPointerCapture(e.pointerId); } catch (_) { /* synthetic events have no active pointer */ }
        this.current = [point(e)]; this.strokes.push(this.current); this.draw();
      });
      canvas.addEventListener("pointermove", e => {
        if (!this.current) return;
        const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
        for (const ev of events.length ? events : [e]) this.current.push(point(ev));
        this.draw();
      });
      for (const t of ["pointerup", "pointercancel"]) canvas.addEventListener(t, () => { this.current = null; });
      this.resize();
      global.addEventListener("resize", () => this.resize());
    }
    resize() {
      const r = this.canvas.getBoundingClientRect();
      this.canvas.width = Math.round(r.width); this.canvas.height = Math.round(r.height); this.draw();
    }
    draw() {
      const ctx = this.ctx;
      ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
      Object.assign(ctx, { lineWidth: this.lineWidth, lineCap: "round", lineJoin: "round", strokeStyle: "#111" });
      for (const s of this.strokes) {
        ctx.beginPath();
        s.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
        if (s.length === 1) ctx.lineTo(s[0][0] + 0.1, s[0][1]);
        ctx.stroke();
      }
    }
    undo() { this.strokes.pop(); this.draw(); }
    clear() { this.strokes = []; this.draw(); }
  }

  /** LaTeX with no more spaces than it needs (x^{2}+2x+1): a space only where a command name would
   *  run into the letter after it, as hmer_runtime/text/latex.py ``compact`` writes it. */
  function compact(tokens) {
    let out = "", prev = "";
    for (const tok of tokens) {
      if (prev.startsWith("\\") && /[A-Za-z]$/.test(prev) && /^[A-Za-z]/.test(tok)) out += " ";
      out += tok;
      prev = tok;
    }
    return out;
  }

  global.hmer = { Recognizer, Pad, renderInk, modelInput, Grammar, symbolSize, compact, features, probability,
    showTokens };
})(typeof window !== "undefined" ? window : globalThis);
