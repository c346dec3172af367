// The mask painter on the image page: paint over the image the area the model should change.
//
// A canvas the size of the image's own pixels lies over the shown image; strokes are drawn on it
// in one colour and shown half transparent. Brush and eraser, a brush size, undo, clear and
// invert. Pointer Events, so a mouse, a pen and a finger all paint (the canvas has
// touch-action: none, so a finger paints instead of scrolling).
//
// What it sends: after every change the painting becomes a PNG of the image's natural size whose
// painted pixels are transparent (alpha 0) and every other pixel opaque, which is what the
// images/edits API reads as "change here". The PNG goes into the form's `mask` file input (a
// DataTransfer), so the form posts it like an uploaded file. Nothing painted: no mask, and the
// edit may change the whole image.
//
// Without JavaScript the painter stays hidden and the form offers a plain file input for a mask.
// Loaded from a file with `defer` (the CSP allows no inline script).
(function () {
  "use strict";

  var UNDO_LIMIT = 12;
  // A saturated blue: it stands out on most photos and on the emulator's warm placeholders.
  var PAINT = "rgb(30, 110, 255)";

  function setUp(root) {
    var form = root.closest("form");
    var canvas = root.querySelector(".mask-canvas");
    var image = root.querySelector(".mask-stage img");
    var sizeInput = root.querySelector(".mask-size");
    var sizeOutput = root.querySelector(".mask-size-value");
    var undoButton = root.querySelector("[data-mask='undo']");
    var status = root.querySelector(".mask-status");
    var maskInput = form.querySelector("input[type=file][name=mask]");
    var upload = form.querySelector(".mask-upload");
    var width = parseInt(root.dataset.width, 10);
    var height = parseInt(root.dataset.height, 10);
    if (!canvas || !maskInput || !(width > 0) || !(height > 0)) return;

    canvas.width = width;
    canvas.height = height;
    var context = canvas.getContext("2d", { willReadFrequently: true });
    var history = [];
    var stroke = null; // { id, x, y } of the pointer that paints
    var painted = false;
    var exporting = null; // the promise of the PNG being made

    root.hidden = false;
    if (upload) upload.hidden = true;

    function tool() {
      var pressed = root.querySelector("[data-tool][aria-pressed=true]");
      return pressed ? pressed.getAttribute("data-tool") : "brush";
    }

    function choose(name) {
      root.querySelectorAll("[data-tool]").forEach(function (button) {
        button.setAttribute("aria-pressed", String(button.getAttribute("data-tool") === name));
      });
      root.classList.toggle("is-erasing", name === "eraser");
    }

    // The brush size is in screen pixels; the canvas has the image's own pixels.
    function lineWidth() {
      var shown = canvas.getBoundingClientRect().width || width;
      return Number(sizeInput.value) * (width / shown);
    }

    function showSize() {
      if (sizeOutput) sizeOutput.textContent = sizeInput.value + " px";
    }

    function point(event) {
      var box = canvas.getBoundingClientRect();
      return {
        x: ((event.clientX - box.left) / box.width) * width,
        y: ((event.clientY - box.top) / box.height) * height,
      };
    }

    function remember() {
      history.push(context.getImageData(0, 0, width, height));
      if (history.length > UNDO_LIMIT) history.shift();
      undoButton.disabled = false;
    }

    function say(text) {
      if (status) status.textContent = text;
    }

    function drawSegment(from, to) {
      context.save();
      context.globalCompositeOperation = tool() === "eraser" ? "destination-out" : "source-over";
      context.strokeStyle = PAINT;
      context.fillStyle = PAINT;
      context.lineCap = "round";
      context.lineJoin = "round";
      context.lineWidth = lineWidth();
      context.beginPath();
      if (from.x === to.x && from.y === to.y) {
        context.arc(to.x, to.y, context.lineWidth / 2, 0, Math.PI * 2);
        context.fill();
      } else {
        context.moveTo(from.x, from.y);
        context.lineTo(to.x, to.y);
        context.stroke();
      }
      context.restore();
    }

    canvas.addEventListener("pointerdown", function (event) {
      if (stroke || (event.pointerType === "mouse" && event.button !== 0)) return;
      event.preventDefault();
      try {
        canvas.setPointerCapture(event.pointerId); // keep the stroke when it leaves the canvas
      } catch (error) {
        // A pointer that is already gone (or a synthetic one): paint without capture.
      }
      remember();
      var at = point(event);
      stroke = { id: event.pointerId, x: at.x, y: at.y };
      drawSegment(at, at);
    });

    canvas.addEventListener("pointermove", function (event) {
      if (!stroke || event.pointerId !== stroke.id) return;
      // Coalesced events: a fast pen or finger gives a smooth line, not dots.
      var events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
      if (!events.length) events = [event];
      for (var i = 0; i < events.length; i++) {
        var at = point(events[i]);
        drawSegment(stroke, at);
        stroke.x = at.x;
        stroke.y = at.y;
      }
    });

    function endStroke(event) {
      if (!stroke || event.pointerId !== stroke.id) return;
      stroke = null;
      changed();
    }
    canvas.addEventListener("pointerup", endStroke);
    canvas.addEventListener("pointercancel", endStroke);

    function undo() {
      var last = history.pop();
      if (!last) return;
      context.putImageData(last, 0, 0);
      undoButton.disabled = history.length === 0;
      changed();
      say("Undone.");
    }

    function clear() {
      remember();
      context.clearRect(0, 0, width, height);
      changed();
      say("Mask cleared.");
    }

    function invert() {
      remember();
      // XOR with an opaque fill: painted pixels become empty and empty ones painted.
      context.save();
      context.globalCompositeOperation = "xor";
      context.fillStyle = PAINT;
      context.fillRect(0, 0, width, height);
      context.restore();
      changed();
      say("Mask inverted.");
    }

    root.addEventListener("click", function (event) {
      var chosen = event.target.closest("[data-tool]");
      if (chosen) choose(chosen.getAttribute("data-tool"));
      var button = event.target.closest("[data-mask]");
      if (!button) return;
      var action = button.getAttribute("data-mask");
      if (action === "undo") undo();
      else if (action === "clear") clear();
      else if (action === "invert") invert();
    });

    root.addEventListener("keydown", function (event) {
      if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z") {
        event.preventDefault();
        undo();
      }
    });

    sizeInput.addEventListener("input", showSize);
    showSize();

    // The PNG the form sends: opaque everywhere except where paint is (alpha 0 there).
    function maskBlob() {
      var paint = context.getImageData(0, 0, width, height).data;
      var mask = new ImageData(width, height);
      var pixels = mask.data;
      var any = false;
      for (var i = 0; i < pixels.length; i += 4) {
        var chosen = paint[i + 3] >= 128;
        any = any || chosen;
        pixels[i] = pixels[i + 1] = pixels[i + 2] = 0;
        pixels[i + 3] = chosen ? 0 : 255;
      }
      painted = any;
      if (!any) return Promise.resolve(null);
      var out = document.createElement("canvas");
      out.width = width;
      out.height = height;
      out.getContext("2d").putImageData(mask, 0, 0);
      return new Promise(function (resolve) {
        out.toBlob(resolve, "image/png");
      });
    }

    function changed() {
      root.classList.toggle("is-painted", true);
      var made = maskBlob().then(function (blob) {
        if (exporting !== made) return; // a later change wins
        var files = new DataTransfer();
        if (blob) files.items.add(new File([blob], "mask.png", { type: "image/png" }));
        maskInput.files = files.files;
        root.classList.toggle("is-painted", painted);
        exporting = null;
      });
      exporting = made;
    }

    // A submit right after the last stroke waits for its PNG, then goes ahead.
    form.addEventListener("submit", function (event) {
      if (!exporting) return;
      event.preventDefault();
      var submitter = event.submitter;
      exporting.then(function () {
        form.requestSubmit(submitter || undefined);
      });
    });

    // The shown image sets the stage's size; the canvas follows it (CSS), nothing to redo here.
    if (image && !image.complete) image.addEventListener("load", showSize);
  }

  document.querySelectorAll(".mask-painter").forEach(setUp);
})();
