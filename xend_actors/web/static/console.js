// The console's terminal on a domain's (and a console's) page, for admins: xterm.js on
// the console's WebSocket, /xend/console/<port>/attach, on this page's own origin.
// xterm.js is vendored beside this file: xterm.js and xterm.css are @xterm/xterm 5.5.0
// as published (https://registry.npmjs.org/@xterm/xterm/-/xterm-5.5.0.tgz), its MIT
// license in xterm-LICENSE.txt. Binary frames carry the console's bytes both ways.
//
// The terminal connects only when asked (Connect): a console has one client at a time,
// and looking at a page must not take it from `xm console`. A second client gets the
// console's refusal line, shown in the terminal, as telnet would show it.
"use strict";
(function () {
  const panel = document.getElementById("console-terminal");
  if (!panel || typeof Terminal !== "function") return;
  const button = panel.querySelector("button[data-connect]");
  const state = panel.querySelector("[data-state]");
  const screen = panel.querySelector(".terminal-screen");
  const encoder = new TextEncoder();
  let term = null;
  let socket = null;

  // xterm.js styles its rows with <style> elements it makes, which the page's
  // Content-Security-Policy (style-src 'self', no inline styles) refuses. The same rules
  // go to the document as a constructed style sheet instead, which the policy allows:
  // only what the vendored script itself writes, never anything from the console.
  function adoptStyles(root) {
    const sheet = new CSSStyleSheet();
    document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
    const copy = () => sheet.replaceSync(
      Array.from(root.querySelectorAll("style"), (style) => style.textContent).join("\n"));
    new MutationObserver(copy).observe(root, {childList: true, subtree: true,
                                              characterData: true});
    copy();
  }

  function show(text) {
    state.textContent = text;
  }

  function terminal() {
    if (term) return term;
    screen.hidden = false;
    term = new Terminal({cols: 80, rows: 24, scrollback: 2000, convertEol: false,
                         fontFamily: "ui-monospace, monospace"});
    adoptStyles(screen);
    term.open(screen);
    term.onData((data) => send(encoder.encode(data)));
    term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    return term;
  }

  function send(bytes) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(bytes);
  }

  function connect() {
    const shown = terminal();
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    socket = new WebSocket(`${scheme}//${location.host}${panel.dataset.attach}`);
    socket.binaryType = "arraybuffer";
    button.textContent = "Disconnect";
    show("Connecting…");
    socket.onopen = () => {
      show("Connected");
      shown.focus();
    };
    socket.onmessage = (event) => shown.write(new Uint8Array(event.data));
    socket.onclose = (event) => {
      socket = null;
      button.textContent = "Connect";
      // 1006: no close frame came; the attach was refused before the upgrade (a
      // closed console, a lost login) or the connection was lost.
      show(event.code === 1006 ? "Could not connect (reload the page to see why)"
                               : "Disconnected");
    };
  }

  button.addEventListener("click", () => {
    if (socket) {
      socket.close(1000);
    } else {
      connect();
    }
  });
  button.hidden = false;
  show("Not connected");
})();
