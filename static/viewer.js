// The gallery's full-window viewer and Compare (issue #18, point 3). Loaded with `defer` by the
// gallery page; CSP-strict (no inline script or style: sizes go through the CSSOM, which the
// policy allows). Without JavaScript each thumbnail is a plain link to its image page.
//
// Viewer: a plain click on `#gallery-grid a.thumb` opens the image (`data-full`) fitted to the
// window in a modal <dialog>; ←/→ (and the buttons) move through the grid's cells in DOM order
// (the cells loaded so far: at the last one Next is disabled), `z` toggles actual pixels
// (pannable by dragging or scrolling), a horizontal swipe moves on touch screens, Esc closes
// and puts focus back on the cell of the image shown, the grid's scroll position unchanged.
// Compare: the selection bar's `[data-compare]` button shows the 2..4 ticked images side by
// side; for two, a slider mode with a draggable, keyboard-operable divider.
(function () {
  "use strict";

  const THUMBS = "#gallery-grid a.thumb";
  const SWIPE_MIN_PX = 50;
  const STEP = 5;  // the divider's arrow-key step, in percent
  let dialog = null;
  let ui = null;
  const state = { mode: "view", link: null, origin: null, scroll: [0, 0], actual: false, split: 50, items: [] };

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function button(className, text, glyph, glyphAfter) {
    const node = element("button", "viewer-button " + className);
    node.type = "button";
    const label = element("span", "", text);
    if (glyph) {
      const icon = element("span", "viewer-glyph", glyph);
      icon.setAttribute("aria-hidden", "true");
      node.append(...(glyphAfter ? [label, icon] : [icon, label]));
    } else {
      node.append(label);
    }
    return node;
  }

  function build() {
    dialog = element("dialog", "viewer");
    dialog.setAttribute("aria-modal", "true");
    dialog.setAttribute("aria-labelledby", "viewer-title");
    dialog.setAttribute("aria-describedby", "viewer-caption");
    const bar = element("div", "viewer-bar");
    const heading = element("div", "viewer-heading");
    const title = element("h2", "viewer-title");
    title.id = "viewer-title";
    const caption = element("p", "viewer-caption");
    caption.id = "viewer-caption";
    heading.append(title, caption);
    const tools = element("div", "viewer-tools");
    const prev = button("viewer-prev", "Previous", "←");
    prev.setAttribute("aria-keyshortcuts", "ArrowLeft");
    const next = button("viewer-next", "Next", "→", true);
    next.setAttribute("aria-keyshortcuts", "ArrowRight");
    const actual = button("viewer-actual", "100%");
    actual.setAttribute("aria-pressed", "false");
    actual.setAttribute("aria-keyshortcuts", "z");
    actual.title = "Actual pixels (z)";
    const side = button("viewer-side", "Side by side");
    const slider = button("viewer-slider-mode", "Slider");
    const open = element("a", "viewer-button viewer-open", "Open image page");
    const close = button("viewer-close", "Close", "×");
    close.setAttribute("aria-keyshortcuts", "Escape");
    tools.append(prev, next, actual, side, slider, open, close);
    bar.append(heading, tools);
    const stage = element("div", "viewer-stage");
    const image = element("img", "viewer-image");
    image.draggable = false;
    image.alt = "";
    stage.append(image);
    const compare = element("div", "viewer-compare");
    const live = element("p", "visually-hidden");
    live.setAttribute("aria-live", "polite");
    dialog.append(bar, stage, compare, live);
    document.body.append(dialog);
    ui = { title, caption, prev, next, actual, side, slider, open, close, stage, image, compare, live };

    prev.addEventListener("click", () => move(-1));
    next.addEventListener("click", () => move(1));
    actual.addEventListener("click", toggleActual);
    side.addEventListener("click", () => showCompare(false));
    slider.addEventListener("click", () => showCompare(true));
    close.addEventListener("click", () => dialog.close());
    dialog.addEventListener("keydown", onKey);
    dialog.addEventListener("close", onClose);
    // Nothing behind the dialog scrolls while it is open; at 100% the stage scrolls itself.
    dialog.addEventListener("wheel", (event) => {
      if (!(state.actual && ui.stage.contains(event.target))) event.preventDefault();
    }, { passive: false });
    wirePointer(stage);
    window.addEventListener("resize", () => {
      if (dialog.open && state.mode === "slider") layoutSlider();
    });
  }

  // --- the viewer --------------------------------------------------------------------------

  function links() {
    return Array.from(document.querySelectorAll(THUMBS));
  }

  function fullUrl(link) {
    if (link.dataset.full) return link.dataset.full;
    // Older markup without data-full: the image page /images/<id> has its file at
    // /files/images/<id>.
    const url = new URL(link.href, document.baseURI);
    return url.pathname.replace(/^\/images\//, "/files/images/");
  }

  function sizeOf(link) {
    const thumb = link.querySelector("img");
    return {
      width: Number(link.dataset.width || thumb?.getAttribute("width")) || 0,
      height: Number(link.dataset.height || thumb?.getAttribute("height")) || 0,
      alt: thumb?.alt || "",
    };
  }

  function openViewer(link) {
    if (!dialog) build();
    state.origin = link;
    state.scroll = [window.scrollX, window.scrollY];
    setMode("view");
    show(link);
    dialog.showModal();
    ui.close.focus();
  }

  function show(link) {
    state.link = link;
    const all = links();
    const index = all.indexOf(link);
    const { width, height, alt } = sizeOf(link);
    setActual(false);
    ui.image.removeAttribute("src");  // no stale picture while the next one loads
    if (width && height) {
      ui.image.width = width;
      ui.image.height = height;
    }
    ui.image.alt = alt;
    ui.image.src = fullUrl(link);
    ui.title.textContent = `Image ${index + 1} of ${all.length}`;
    ui.caption.textContent = alt;
    ui.open.setAttribute("href", link.getAttribute("href"));
    ui.prev.disabled = index <= 0;
    ui.next.disabled = index < 0 || index >= all.length - 1;
    ui.live.textContent = ui.title.textContent;
    for (const neighbour of [all[index - 1], all[index + 1]]) {
      if (neighbour) new Image().src = fullUrl(neighbour);  // ready when the arrow is pressed
    }
  }

  function move(step) {
    if (state.mode !== "view") return;
    const all = links();
    const target = all[all.indexOf(state.link) + step];
    if (target) show(target);
  }

  function setActual(on) {
    state.actual = on;
    ui.stage.classList.toggle("is-actual", on);
    ui.actual.setAttribute("aria-pressed", String(on));
  }

  function toggleActual() {
    if (state.mode !== "view") return;
    setActual(!state.actual);
    if (state.actual) {
      // Start in the middle of the picture.
      const stage = ui.stage;
      stage.scrollLeft = (stage.scrollWidth - stage.clientWidth) / 2;
      stage.scrollTop = (stage.scrollHeight - stage.clientHeight) / 2;
    }
  }

  function onClose() {
    const link = state.mode === "view" ? state.link : state.origin;
    const [x, y] = state.scroll;
    if (link && link.isConnected) {
      link.focus({ preventScroll: true });
      if (link === state.origin) {
        window.scrollTo(x, y);
      } else {
        link.scrollIntoView({ block: "nearest" });
      }
    } else {
      window.scrollTo(x, y);
    }
    ui.image.removeAttribute("src");
    ui.compare.replaceChildren();
  }

  // Drag to pan at 100%; a horizontal swipe moves on touch screens.
  function wirePointer(stage) {
    let start = null;
    stage.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      start = { x: event.clientX, y: event.clientY, left: stage.scrollLeft, top: stage.scrollTop, id: event.pointerId };
      if (state.actual && event.pointerType === "mouse") {
        stage.setPointerCapture(event.pointerId);
        stage.classList.add("is-dragging");
        event.preventDefault();
      }
    });
    stage.addEventListener("pointermove", (event) => {
      if (!start || start.id !== event.pointerId || !state.actual || event.pointerType !== "mouse") return;
      stage.scrollLeft = start.left - (event.clientX - start.x);
      stage.scrollTop = start.top - (event.clientY - start.y);
    });
    stage.addEventListener("pointerup", (event) => {
      if (!start || start.id !== event.pointerId) return;
      const dx = event.clientX - start.x;
      const dy = event.clientY - start.y;
      start = null;
      stage.classList.remove("is-dragging");
      if (event.pointerType !== "mouse" && !state.actual &&
          Math.abs(dx) >= SWIPE_MIN_PX && Math.abs(dx) > 1.5 * Math.abs(dy)) {
        move(dx < 0 ? 1 : -1);  // finger to the left: the next image comes in from the right
      }
    });
    stage.addEventListener("pointercancel", () => {
      start = null;
      stage.classList.remove("is-dragging");
    });
  }

  // --- keyboard ----------------------------------------------------------------------------

  function focusables() {
    return Array.from(dialog.querySelectorAll("button, a[href], [tabindex='0']"))
      .filter((node) => !node.disabled && node.getClientRects().length > 0);
  }

  function onKey(event) {
    if (event.key === "Tab") {
      // The page behind is inert already; this keeps Tab from leaving for the browser's UI.
      const nodes = focusables();
      const first = nodes[0];
      const last = nodes[nodes.length - 1];
      if (event.shiftKey && (document.activeElement === first || !dialog.contains(document.activeElement))) {
        last.focus();
        event.preventDefault();
      } else if (!event.shiftKey && (document.activeElement === last || !dialog.contains(document.activeElement))) {
        first.focus();
        event.preventDefault();
      }
      return;
    }
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    if (state.mode !== "view") return;
    switch (event.key) {
      case "ArrowLeft":
        move(-1);
        break;
      case "ArrowRight":
        move(1);
        break;
      case "z":
      case "Z":
        toggleActual();
        break;
      default:
        return;
    }
    event.preventDefault();
  }

  // --- compare -----------------------------------------------------------------------------

  function ticked() {
    const items = [];
    for (const box of document.querySelectorAll("input[name=ids]:checked")) {
      const link = box.closest("li, .cell")?.querySelector("a.thumb");
      if (link) items.push({ link, ...sizeOf(link), full: fullUrl(link), number: items.length + 1 });
    }
    return items;
  }

  function openCompare() {
    const items = ticked();
    if (items.length < 2 || items.length > 4) return;  // the button is disabled then too
    if (!dialog) build();
    state.items = items;
    state.origin = document.activeElement instanceof HTMLElement ? document.activeElement : null;
    state.scroll = [window.scrollX, window.scrollY];
    showCompare(false);
    dialog.showModal();
    ui.close.focus();
  }

  function setMode(mode) {
    state.mode = mode;
    dialog.dataset.mode = mode;
    const comparing = mode !== "view";
    ui.stage.hidden = comparing;
    ui.compare.hidden = !comparing;
    for (const node of [ui.prev, ui.next, ui.actual, ui.open]) node.hidden = comparing;
    // The two modes are offered for two images; three or four are only side by side.
    ui.side.hidden = ui.slider.hidden = !comparing || state.items.length !== 2;
    ui.side.setAttribute("aria-pressed", String(mode === "side"));
    ui.slider.setAttribute("aria-pressed", String(mode === "slider"));
    if (comparing) setActual(false);
  }

  function showCompare(slider) {
    const items = state.items;
    setMode(slider ? "slider" : "side");
    ui.title.textContent = `Comparing ${items.length} images`;
    ui.caption.textContent = slider
      ? "Drag the divider, or focus it and use the arrow keys."
      : items.map((item) => `${item.number}: ${item.alt}`).join(" · ");
    ui.compare.replaceChildren();
    ui.compare.dataset.count = String(items.length);
    if (slider) {
      buildSlider(items);
    } else {
      for (const item of items) {
        const figure = element("figure", "compare-item");
        const picture = comparePicture(item);
        const text = element("figcaption", "compare-caption");
        const name = element("span", "compare-number", `Image ${item.number}`);
        const link = element("a", "", "Open image page");
        link.setAttribute("href", item.link.getAttribute("href"));
        link.setAttribute("aria-label", `Open image page of image ${item.number}`);
        text.append(name, " ", link);
        figure.append(picture, text);
        ui.compare.append(figure);
      }
    }
    ui.live.textContent = ui.title.textContent + (slider ? ", slider" : ", side by side");
  }

  function comparePicture(item) {
    const picture = element("img", "compare-image");
    if (item.width && item.height) {
      picture.width = item.width;
      picture.height = item.height;
    }
    picture.alt = `Image ${item.number}: ${item.alt}`;
    picture.draggable = false;
    picture.src = item.full;
    return picture;
  }

  function buildSlider([before, after]) {
    const frame = element("div", "compare-slider");
    const left = comparePicture(before);
    const right = comparePicture(after);
    right.classList.add("compare-after");
    const handle = element("div", "compare-handle");
    handle.tabIndex = 0;
    handle.setAttribute("role", "slider");
    handle.setAttribute("aria-label", "Divider between image 1 (left) and image 2 (right)");
    handle.setAttribute("aria-valuemin", "0");
    handle.setAttribute("aria-valuemax", "100");
    handle.setAttribute("aria-orientation", "horizontal");
    const labels = element("div", "compare-labels");
    labels.setAttribute("aria-hidden", "true");
    labels.append(element("span", "", "1"), element("span", "", "2"));
    frame.append(left, right, handle, labels);
    ui.compare.append(frame);
    state.split = 50;
    setSplit(50);
    layoutSlider();

    handle.addEventListener("keydown", (event) => {
      const keys = { ArrowLeft: -STEP, ArrowDown: -STEP, ArrowRight: STEP, ArrowUp: STEP, PageDown: -25, PageUp: 25 };
      if (event.key in keys) {
        setSplit(state.split + keys[event.key]);
      } else if (event.key === "Home") {
        setSplit(0);
      } else if (event.key === "End") {
        setSplit(100);
      } else {
        return;
      }
      event.preventDefault();
      event.stopPropagation();
    });
    let dragging = null;
    const follow = (event) => {
      const box = frame.getBoundingClientRect();
      setSplit(((event.clientX - box.left) / box.width) * 100);
    };
    frame.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      dragging = event.pointerId;
      frame.setPointerCapture(event.pointerId);
      follow(event);
      handle.focus({ preventScroll: true });
      event.preventDefault();
    });
    frame.addEventListener("pointermove", (event) => {
      if (dragging === event.pointerId) follow(event);
    });
    const stop = () => { dragging = null; };
    frame.addEventListener("pointerup", stop);
    frame.addEventListener("pointercancel", stop);
  }

  function setSplit(value) {
    const split = Math.round(Math.min(100, Math.max(0, value)));
    state.split = split;
    const frame = ui.compare.querySelector(".compare-slider");
    const handle = ui.compare.querySelector(".compare-handle");
    if (!frame || !handle) return;
    frame.style.setProperty("--split", `${split}%`);
    handle.setAttribute("aria-valuenow", String(split));
    handle.setAttribute("aria-valuetext", `${split}% of image 1 shown`);
  }

  // The two pictures share one box: the first image's shape, as large as fits the window.
  function layoutSlider() {
    const frame = ui.compare.querySelector(".compare-slider");
    const [first] = state.items;
    if (!frame || !first) return;
    const room = ui.compare.getBoundingClientRect();
    const ratio = first.width && first.height ? first.width / first.height : 1;
    const width = Math.min(room.width, room.height * ratio);
    frame.style.width = `${Math.floor(width)}px`;
    frame.style.height = `${Math.floor(width / ratio)}px`;
  }

  // --- wiring ------------------------------------------------------------------------------

  document.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0) return;
    if (!(event.target instanceof Element)) return;
    const compare = event.target.closest("[data-compare]");
    if (compare) {
      event.preventDefault();
      openCompare();
      return;
    }
    // Ctrl/⌘/Shift/Alt-clicks keep the link's own meaning (new tab, new window, download).
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    const link = event.target.closest(THUMBS);
    if (!link) return;
    event.preventDefault();
    openViewer(link);
  });
})();
