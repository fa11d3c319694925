// Keeps xend's pages current from the event stream (/xend/event/, Server-Sent Events):
// after an event, the parts of the page marked data-live are fetched again, and the
// events page gets a new row. The pages work without this script; it only saves a reload.
"use strict";
(function () {
  const regions = () => document.querySelectorAll("[data-live][id]");
  const eventRows = document.querySelector("#event-list tbody");
  if (!regions().length && !eventRows) return;
  let last = document.body.dataset.lastEvent || "";
  let pending = null;

  async function refresh() {
    pending = null;
    const reply = await fetch(location.pathname, {headers: {Accept: "text/html"}});
    if (!reply.ok) return;
    const fresh = new DOMParser().parseFromString(await reply.text(), "text/html");
    for (const region of regions()) {
      const update = fresh.getElementById(region.id);
      // Never pull a form from under someone using it.
      if (update && !region.contains(document.activeElement)) {
        region.replaceChildren(...update.childNodes);
      }
    }
  }

  function cell(label, text, code) {
    const td = document.createElement("td");
    td.dataset.label = label;
    const holder = code ? td.appendChild(document.createElement("code")) : td;
    holder.textContent = text;
    return td;
  }

  function now() {
    const d = new Date();
    const two = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
           `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }

  function show(event) {
    const row = document.createElement("tr");
    row.append(cell("#", event.id), cell("Time", now()), cell("Event", event.event || ""),
               cell("Value", event.data || "", true));
    eventRows.querySelector("tr.empty")?.remove();
    eventRows.prepend(row);
    while (eventRows.rows.length > 500) eventRows.deleteRow(-1);
  }

  function received(block) {
    const event = {};
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const at = line.indexOf(":");
      const key = at < 0 ? line : line.slice(0, at);
      event[key] = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    }
    if (!event.id) return;
    last = event.id;
    if (eventRows) show(event);
    if (regions().length && !pending) {
      pending = setTimeout(() => refresh().catch(() => {}), 250);  // many events, one fetch
    }
  }

  async function follow() {
    for (;;) {
      try {
        const headers = {Accept: "text/event-stream"};
        if (last) headers["Last-Event-ID"] = last;
        const reply = await fetch("/xend/event/", {headers, cache: "no-store"});
        if (reply.ok && reply.body) {
          const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const {value, done} = await reader.read();
            if (done) break;
            buffer += value.replace(/\r\n?/g, "\n");
            let end;
            while ((end = buffer.indexOf("\n\n")) >= 0) {
              received(buffer.slice(0, end));
              buffer = buffer.slice(end + 2);
            }
          }
        }
      } catch (error) {
        // xend is restarting or gone; try again below, from the last event seen.
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  follow();
})();
