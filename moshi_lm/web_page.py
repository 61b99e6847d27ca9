"""The small web client `moshi-lm serve` returns for GET /: pick a recording, stream it to the
server in real time (f32le frames) and play the model's reply as it arrives, with its text."""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>moshi-lm dialogue</title>
<style>body{font-family:sans-serif;max-width:46em;margin:2em auto}pre{white-space:pre-wrap}</style></head>
<body>
<h1>moshi-lm dialogue</h1>
<p>Pick a recording of the user: it is streamed to the model in real time (80 ms frames) and the
model's reply plays as it arrives.</p>
<input type="file" id="file" accept="audio/*"> <button id="go" disabled>Talk</button>
<p id="status"></p>
<pre id="text"></pre>
<script>
"use strict";
const RATE = 24000;
const fileInput = document.getElementById("file"), go = document.getElementById("go");
const statusLine = document.getElementById("status"), textBox = document.getElementById("text");
let ctx = null;
fileInput.onchange = () => { go.disabled = !fileInput.files.length; };
go.onclick = async () => {
  go.disabled = true;
  textBox.textContent = "";
  ctx = ctx || new AudioContext({sampleRate: RATE});
  const decoded = await ctx.decodeAudioData(await fileInput.files[0].arrayBuffer());
  const n = decoded.length, mono = new Float32Array(n);
  for (let c = 0; c < decoded.numberOfChannels; c++) {
    const d = decoded.getChannelData(c);
    for (let i = 0; i < n; i++) mono[i] += d[i] / decoded.numberOfChannels;
  }
  const ws = new WebSocket(`ws://${location.host}/`);
  ws.binaryType = "arraybuffer";
  let frameSize = 1920, playAt = 0, received = 0;
  const send = () => {
    let i = 0;
    const t0 = performance.now();
    const tick = () => {
      while (i * frameSize < n && performance.now() - t0 >= i * 1000 * frameSize / RATE) {
        ws.send(mono.slice(i * frameSize, (i + 1) * frameSize));
        i++;
      }
      if (i * frameSize < n) setTimeout(tick, 10);
      else ws.send(JSON.stringify({type: "end"}));
    };
    tick();
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      const m = JSON.parse(ev.data);
      if (m.type === "ready") { frameSize = m.frame_size; send(); }
      else if (m.type === "text") textBox.textContent += (m.text ?? ` [${m.id}]`);
      else if (m.type === "done") { statusLine.textContent = `done: ${received} frames, ${m.dropped_in} in / ${m.dropped_out} out dropped`; go.disabled = false; }
      else if (m.type === "error") statusLine.textContent = "error: " + m.message;
      return;
    }
    const pcm = new Float32Array(ev.data);
    const buffer = ctx.createBuffer(1, pcm.length, RATE);
    buffer.copyToChannel(pcm, 0);
    const src = ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(ctx.destination);
    playAt = Math.max(playAt, ctx.currentTime + 0.05);
    src.start(playAt);
    playAt += pcm.length / RATE;
    received++;
    statusLine.textContent = `${received} frames back`;
  };
  ws.onclose = () => { go.disabled = !fileInput.files.length; };
};
</script>
</body></html>
"""
